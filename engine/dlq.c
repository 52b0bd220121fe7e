/* dlq.c - dead letters: the builder shared by every writer, and the advisory-driven DLQ worker (see dlq.h). */
#include "dlq.h"

#include "broker.h"
#include "idset.h"
#include "log.h"
#include "streamread.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct dlq_worker {
    config cfg;
    jsCtx *js;
    natsSubscription *sub;
    pthread_t thread;
    atomic_bool stopping;
    atomic_llong *total, *by_reason;
    atomic_llong decided_late;
    /* the sweep (only this thread touches these) */
    dlq_sweep_stats *sweep;
    int64_t next_sweep_ns; /* mono_ns */
    uint64_t cursor;       /* the next TXN sequence to examine; 0 before the first pass (then by time) */
    int64_t cursor_ns;     /* store time (the stream's clock) of the last message examined */
    uint64_t prev_floor;   /* the consumer's ack floor at the previous pass: this pass examines up to it */
    arena arena;
};

/* --- building a dead letter ------------------------------------------------------------------------------ */

void dlq_sanitize(char *dst, size_t cap, const char *src)
{
    if (cap == 0)
        return;
    size_t i = 0;
    for (; src && src[i] && i + 1 < cap; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = (char)(ch < 0x20 || ch == 0x7f ? ' ' : ch);
    }
    dst[i] = 0;
}

bool dlq_lineage_next(const char **p, uint64_t *seq)
{
    const char *s = *p;
    if (*s == ',')
        s++;
    if (*s < '0' || *s > '9')
        return false;
    uint64_t v = 0;
    int digits = 0;
    for (; *s >= '0' && *s <= '9'; s++, digits++)
        v = v * 10 + (uint64_t)(*s - '0');
    if (digits > 19 || (*s && *s != ','))
        return false;
    *p = s;
    *seq = v;
    return true;
}

void dlq_lineage_push(char *out, size_t cap, uint64_t seq, const char *prev)
{
    int n = snprintf(out, cap, "%llu", (unsigned long long)seq);
    if (n < 0 || (size_t)n >= cap)
        return;
    size_t o = (size_t)n;
    const char *p = prev ? prev : "";
    uint64_t v;
    while (dlq_lineage_next(&p, &v)) {
        char item[24];
        int k = snprintf(item, sizeof item, ",%llu", (unsigned long long)v);
        if (k < 0 || o + (size_t)k > DLQ_LINEAGE_MAX || o + (size_t)k >= cap)
            break; /* the oldest entries go first */
        memcpy(out + o, item, (size_t)k + 1);
        o += (size_t)k;
    }
}

static const char *msg_hdr(natsMsg *m, const char *key)
{
    const char *v = NULL;
    if (natsMsgHeader_Get(m, key, &v) != NATS_OK || !v)
        return "";
    return v;
}

natsStatus dlq_letter_new(natsMsg **out, const config *c, poison_reason why, const char *err, natsMsg *orig,
                          uint64_t orig_seq, uint64_t deliveries, const char *txn_id)
{
    *out = NULL;
    const char *reason = poison_reason_str(why);
    char subj[NAME_MAX_LEN + 40], msgid[NAME_MAX_LEN + 40], seqs[32], dels[32], errs[256], osubj[512],
        lineage[DLQ_LINEAGE_MAX + 1];
    snprintf(subj, sizeof subj, "%s.%s", c->dlq_prefix, reason);
    snprintf(msgid, sizeof msgid, "dlq-%s-%llu", c->txn_stream, (unsigned long long)orig_seq);
    snprintf(seqs, sizeof seqs, "%llu", (unsigned long long)orig_seq);
    snprintf(dels, sizeof dels, "%llu", (unsigned long long)deliveries);
    dlq_sanitize(errs, sizeof errs, err && err[0] ? err : "(no detail)");
    dlq_sanitize(osubj, sizeof osubj, natsMsg_GetSubject(orig));
    if (!txn_id || !txn_id_valid(txn_id)) {
        txn_id = msg_hdr(orig, "Nats-Msg-Id");
        if (!txn_id_valid(txn_id))
            txn_id = NULL; /* unknown: the header is left out rather than filled with something else */
    }
    /* lineage carried on unchanged, minus anything malformed (the header is a publisher's data) */
    const char *prev = msg_hdr(orig, DLQ_LINEAGE_HDR);
    lineage[0] = 0;
    uint64_t first;
    const char *p = prev;
    if (dlq_lineage_next(&p, &first))
        dlq_lineage_push(lineage, sizeof lineage, first, p);

    natsMsg *dl = NULL;
    natsStatus s = natsMsg_Create(&dl, subj, NULL, natsMsg_GetData(orig), natsMsg_GetDataLength(orig));
    if (s == NATS_OK)
        s = natsMsgHeader_Set(dl, "Nats-Msg-Id", msgid);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(dl, "Verdict-Dlq-Reason", reason);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(dl, "Verdict-Error", errs);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(dl, "Verdict-Original-Subject", osubj);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(dl, "Verdict-Original-Seq", seqs);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(dl, "Verdict-Deliveries", dels);
    if (s == NATS_OK && txn_id)
        s = natsMsgHeader_Set(dl, "Verdict-Txn-Id", txn_id);
    if (s == NATS_OK && lineage[0])
        s = natsMsgHeader_Set(dl, DLQ_LINEAGE_HDR, lineage);
    if (s != NATS_OK) {
        natsMsg_Destroy(dl);
        return s;
    }
    *out = dl;
    return NATS_OK;
}

/* --- the DLQ worker -------------------------------------------------------------------------------------- */

/* Whether txn_id has a stored decision under any outcome: NATS_OK with *found, or the failure. A direct get (the
 * engine's permissions allow direct gets on DECISIONS, as for answering duplicates): a replica may serve it a
 * few milliseconds stale, but a decision that matters here was stored at least a publish timeout before the
 * worker gave up on it and the server sent the advisory. */
static natsStatus decision_stored(const config *c, jsCtx *js, const char *txn_id, bool *found)
{
    static const char *outcomes[] = {"approve", "review", "decline"};
    *found = false;
    for (size_t i = 0; i < ARRAY_LEN(outcomes); i++) {
        char subj[NAME_MAX_LEN + 96];
        snprintf(subj, sizeof subj, "%s.%s.%s", c->decision_prefix, outcomes[i], txn_id);
        jsDirectGetMsgOptions o;
        jsDirectGetMsgOptions_Init(&o);
        o.LastBySubject = subj;
        natsMsg *m = NULL;
        natsStatus s = js_DirectGetMsg(&m, js, c->decisions_stream, NULL, &o);
        natsMsg_Destroy(m);
        if (s == NATS_OK) {
            *found = true;
            return NATS_OK;
        }
        if (s != NATS_NOT_FOUND)
            return s;
    }
    return NATS_OK;
}

/* The txn_id of a TXN message: from its decoded payload (what the decision's subject uses), else its
 * Nats-Msg-Id when that is a valid txn id; NULL when neither. Points into a or into m. */
static const char *original_txn_id(const config *c, natsMsg *m, arena *a)
{
    Transaction *t = NULL;
    poison_reason why;
    if (a->buf && txn_decode(a, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), (size_t)c->max_msg_size, &t,
                             &why, NULL) == V_OK)
        return t->txn_id;
    const char *id = msg_hdr(m, "Nats-Msg-Id");
    return txn_id_valid(id) ? id : NULL;
}

/* c->consumer, or one of its partition consumers (<consumer>-p<digits>) */
static bool consumer_is_ours(const config *c, const char *name)
{
    size_t n = strlen(c->consumer);
    if (strncmp(name, c->consumer, n) != 0)
        return false;
    if (name[n] == 0)
        return true;
    if (name[n] != '-' || name[n + 1] != 'p' || !name[n + 2])
        return false;
    for (const char *d = name + n + 2; *d; d++)
        if (*d < '0' || *d > '9')
            return false;
    return true;
}

vstatus dlq_handle_advisory(const config *c, jsCtx *js, const char *json, int len, dlq_action *act,
                            poison_reason *why, verror *e)
{
    *act = DLQ_SKIPPED;
    *why = POISON_NONE;
    json_error_t jerr;
    json_t *root = json_loadb(json, (size_t)len, 0, &jerr);
    if (!root) {
        /* nothing anyone can act on: acked, or (MaxDeliver -1) it would be redelivered forever */
        log_warn("advisory is not JSON; ignored", "\"error\":\"%s\"", log_esc(jerr.text));
        return V_OK;
    }
    const char *type = json_string_value(json_object_get(root, "type"));
    const char *stream = json_string_value(json_object_get(root, "stream"));
    json_int_t seq = json_integer_value(json_object_get(root, "stream_seq"));
    json_int_t deliveries = json_integer_value(json_object_get(root, "deliveries"));
    poison_reason r = POISON_NONE;
    if (type && strstr(type, "max_deliver"))
        r = DEAD_MAX_DELIVERIES;
    else if (type && strstr(type, "terminated"))
        r = DEAD_TERMINATED;
    /* partitioned, the advisory stream captures every consumer of TXN: act only on Verdict's own */
    const char *consumer = json_string_value(json_object_get(root, "consumer"));
    if (c->partitions > 0 && consumer && !consumer_is_ours(c, consumer)) {
        json_decref(root);
        return V_OK;
    }
    if (r == POISON_NONE || !stream || seq <= 0 || strcmp(stream, c->txn_stream) != 0) {
        json_decref(root);
        return V_OK; /* not ours to act on: ack it */
    }
    json_decref(root);
    const char *reason = poison_reason_str(r);

    natsMsg *orig = NULL;
    jsErrCode jerrc = 0;
    natsStatus s = js_GetMsg(&orig, js, c->txn_stream, (uint64_t)seq, NULL, &jerrc);
    if (s == NATS_NOT_FOUND || jerrc == JSNoMessageFoundErr)
        return V_OK; /* handled before (deleted after its dead letter was stored) */
    if (s != NATS_OK)
        return broker_err(e, s, jerrc, "cannot read the original message");

    /* Sized from this message, generously (a rare path): a decode that runs out of arena only loses the
     * payload's txn_id, and Nats-Msg-Id is the fallback */
    arena a = {0};
    if (arena_init(&a, (size_t)natsMsg_GetDataLength(orig) * 16 + 65536) != V_OK)
        a.buf = NULL;
    const char *txn_id = original_txn_id(c, orig, &a);

    /* A decision whose PubAck was lost (timeout, failover) on the last delivery is stored all the same. A
     * dead letter on top would end the transaction both decided and dead-lettered: the decision stands, and
     * the original stays in TXN like every decided transaction (the state rebuild counts it from there). */
    if (r == DEAD_MAX_DELIVERIES && txn_id) {
        bool found = false;
        s = decision_stored(c, js, txn_id, &found);
        if (s != NATS_OK) {
            arena_free(&a);
            natsMsg_Destroy(orig);
            return broker_err(e, s, 0, "cannot look the transaction up in the decisions stream");
        }
        if (found) {
            log_warn("decided after all: no dead letter",
                     "\"stream\":\"%s\",\"seq\":%lld,\"txn_id\":\"%s\",\"deliveries\":%lld", c->txn_stream,
                     (long long)seq, txn_id, (long long)deliveries);
            arena_free(&a);
            natsMsg_Destroy(orig);
            *act = DLQ_DECIDED_LATE;
            return V_OK;
        }
    }

    natsMsg *dl = NULL;
    s = dlq_letter_new(&dl, c, r, r == DEAD_MAX_DELIVERIES ? "not decided after the consumer's MaxDeliver attempts"
                                                           : "terminated without a dead letter",
                       orig, (uint64_t)seq, (uint64_t)deliveries, txn_id);
    arena_free(&a);
    natsMsg_Destroy(orig);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = c->publish_timeout_ms;
    jsPubAck *pa = NULL;
    if (s == NATS_OK)
        s = js_PublishMsg(&pa, js, dl, &po, &jerrc);
    natsMsg_Destroy(dl);
    if (s != NATS_OK) {
        jsPubAck_Destroy(pa);
        return broker_err(e, s, jerrc, "cannot store the dead letter");
    }
    /* Duplicate: a letter with this id is stored. For max_deliveries it is ours, from an attempt that did not
     * get as far as the delete (a crash, a failed delete) and therefore never counted it: count it now. For
     * terminated it is a pipeline worker's poison letter, which the worker counted before terming the message
     * (only the engine terms; an operator's term whose letter attempt crashed before the delete goes uncounted,
     * the price of not reading DLQ, which the engine's permissions do not allow). */
    bool ours = !pa->Duplicate || r == DEAD_MAX_DELIVERIES;
    jsPubAck_Destroy(pa);
    /* Only after the dead letter is stored: remove the original so it cannot be decided or dead-lettered again.
     * The delete is the one step that happens once: whoever deletes counts. */
    jerrc = 0;
    s = js_DeleteMsg(js, c->txn_stream, (uint64_t)seq, NULL, &jerrc);
    if (s == NATS_NOT_FOUND || jerrc == JSNoMessageFoundErr || jerrc == JSSequenceNotFoundErr)
        return V_OK; /* another DLQ worker finished it meanwhile */
    if (s != NATS_OK)
        return broker_err(e, s, jerrc, "dead letter stored but the original could not be deleted");
    *why = r;
    *act = ours ? DLQ_DEAD_LETTERED : DLQ_WORKER_LETTER;
    if (ours)
        log_warn("dead-lettered", "\"stream\":\"%s\",\"seq\":%lld,\"reason\":\"%s\",\"deliveries\":%lld",
                 c->txn_stream, (long long)seq, reason, (long long)deliveries);
    return V_OK;
}

/* --- the sweep (see dlq.h) --------------------------------------------------------------------------------- */

/* Bounds of one pass: it examines at most SWEEP_MAX_EXAMINED TXN messages and acts on at most SWEEP_MAX_ACTIONS;
 * a pass cut short by a bound is followed by the next after SWEEP_CATCHUP_MS (not a whole interval), so the
 * sweep keeps up with any traffic while no pass holds the advisories up for long. */
#define SWEEP_MAX_EXAMINED 50000
#define SWEEP_MAX_ACTIONS 256
#define SWEEP_CATCHUP_MS 1000
/* The first pass after a start begins this far back in TXN (older gaps: `verdict audit --repair`). */
#define SWEEP_LOOKBACK_MS (3600LL * 1000)
/* Decisions are read from this long before the oldest transaction examined: the streams' leaders may be
 * different nodes, with different clocks. */
#define SWEEP_CLOCK_SLACK_MS (60LL * 1000)
/* A read of a stream that delivers nothing for this long ends the pass (tried again at the next). */
#define SWEEP_READ_MS 5000

typedef struct sweep_counts {
    long long examined, dead_lettered, deleted, decided, errors;
} sweep_counts;

static bool ack_floor(dlq_worker *w, uint64_t *floor, verror *e)
{
    consumer_positions cp; /* partitioned: the lowest ack floor of all */
    if (broker_consumer_positions(&w->cfg, w->js, &cp, NULL, e) != V_OK)
        return false;
    *floor = cp.ack_floor;
    return true;
}

/* The txn ids (hashed) of every decision stored since since_ns, from the decision subjects
 * (decision.<outcome>.<txn_id>, which a decision restored under a derived msg-id keeps), headers only. */
static bool decided_since(dlq_worker *w, int64_t since_ns, idset *out, verror *e)
{
    stream_reader *r = NULL;
    if (stream_reader_open_headers(w->js, w->cfg.decisions_stream, 0, since_ns, &r, e) != V_OK)
        return false;
    for (;;) {
        natsMsg *m = NULL;
        uint64_t seq;
        int64_t ts;
        vstatus st = stream_reader_next(r, &m, &seq, &ts, SWEEP_READ_MS, e);
        if (st == V_ENOTFOUND)
            break;
        if (st != V_OK || atomic_load(&w->stopping)) {
            natsMsg_Destroy(m);
            stream_reader_close(r);
            return false;
        }
        const char *dot = strrchr(natsMsg_GetSubject(m), '.');
        bool ok = !dot || idset_add(out, hash64_str(dot + 1));
        natsMsg_Destroy(m);
        if (!ok) {
            stream_reader_close(r);
            verror_set(e, V_ENOMEM, "out of memory for the decided set");
            return false;
        }
    }
    stream_reader_close(r);
    return true;
}

/* One TXN message the consumer has finished with and that has no decision: its dead letter is stored (a
 * Duplicate PubAck means a letter with its id, dlq-<stream>-<seq>, is there already: the original was left
 * behind by a lost advisory) and the original deleted. Looked up again first, as the advisory path does: another
 * DLQ worker may have finished it, and a decision stored late counts. */
static void sweep_one(dlq_worker *w, uint64_t seq, sweep_counts *n)
{
    const config *c = &w->cfg;
    natsMsg *orig = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetMsg(&orig, w->js, c->txn_stream, seq, NULL, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr)
        return;
    if (s != NATS_OK) {
        n->errors++;
        return;
    }
    arena_reset(&w->arena);
    Transaction *t = NULL;
    poison_reason why = POISON_NONE;
    verror derr = {0};
    bool valid = w->arena.buf && txn_decode(&w->arena, natsMsg_GetData(orig), (size_t)natsMsg_GetDataLength(orig),
                                            (size_t)c->max_msg_size, &t, &why, &derr) == V_OK;
    const char *txn_id = valid ? t->txn_id : NULL;
    if (valid) {
        bool found = false;
        if (decision_stored(c, w->js, txn_id, &found) != NATS_OK) {
            n->errors++;
            natsMsg_Destroy(orig);
            return;
        }
        if (found) {
            n->decided++;
            natsMsg_Destroy(orig);
            return;
        }
    }
    /* A valid transaction the consumer finished with undecided reached MaxDeliver (or, on a server before 2.11,
     * was skipped): a max_deliveries letter, which `verdict dlq replay` re-drives. Poison keeps its reason. */
    poison_reason r = valid ? DEAD_MAX_DELIVERIES : why != POISON_NONE ? why : POISON_DECODE;
    natsMsg *dl = NULL;
    s = dlq_letter_new(&dl, c, r,
                       valid ? "swept: finished by the consumer without a decision or a dead letter (a lost "
                               "max-deliver advisory)"
                             : derr.msg,
                       orig, seq, 0, txn_id);
    natsMsg_Destroy(orig);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = c->publish_timeout_ms;
    jsPubAck *pa = NULL;
    if (s == NATS_OK)
        s = js_PublishMsg(&pa, w->js, dl, &po, &jerr);
    natsMsg_Destroy(dl);
    if (s != NATS_OK) {
        jsPubAck_Destroy(pa);
        n->errors++;
        log_warn("sweep: cannot store a dead letter; tried again at the next pass",
                 "\"stream\":\"%s\",\"seq\":%llu,\"error\":\"%s\"", c->txn_stream, (unsigned long long)seq,
                 natsStatus_GetText(s));
        return;
    }
    bool existed = pa->Duplicate;
    jsPubAck_Destroy(pa);
    jerr = 0;
    s = js_DeleteMsg(w->js, c->txn_stream, seq, NULL, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr || jerr == JSSequenceNotFoundErr)
        return; /* another DLQ worker finished it meanwhile, and counted it */
    if (s != NATS_OK) {
        n->errors++;
        return;
    }
    if (existed) {
        n->deleted++;
        log_warn("sweep: original deleted, its dead letter was stored (its advisory was lost)",
                 "\"stream\":\"%s\",\"seq\":%llu", c->txn_stream, (unsigned long long)seq);
        return;
    }
    n->dead_lettered++;
    if (w->total)
        atomic_fetch_add(w->total, 1);
    if (w->by_reason)
        atomic_fetch_add(&w->by_reason[r], 1);
    log_warn("dead-lettered by the sweep", "\"stream\":\"%s\",\"seq\":%llu,\"reason\":\"%s\"", c->txn_stream,
             (unsigned long long)seq, poison_reason_str(r));
}

/* One pass; true when a bound cut it short (more to examine). */
static bool sweep_pass(dlq_worker *w)
{
    const config *c = &w->cfg;
    int64_t t0 = mono_ns();
    sweep_counts n = {0};
    verror e = {0};
    uint64_t floor = 0;
    if (!ack_floor(w, &floor, &e)) {
        if (w->sweep)
            atomic_fetch_add(&w->sweep->errors, 1);
        log_warn("sweep skipped", "\"error\":\"%s\"", log_esc(e.msg));
        return false;
    }
    /* Only what was finished a whole interval ago: its advisory has had that long to be handled */
    uint64_t hi = w->prev_floor;
    w->prev_floor = floor;
    uint64_t from = w->cursor;
    bool more = false, failed = false;
    uint64_t cands[SWEEP_MAX_ACTIONS];
    int ncand = 0;
    if (hi > 0 && (w->cursor == 0 || w->cursor <= hi)) {
        int64_t since_ns = w->cursor_ns ? w->cursor_ns : (now_ms() - SWEEP_LOOKBACK_MS) * 1000000LL;
        idset decided;
        stream_reader *r = NULL;
        if (!idset_init(&decided, 4096)) {
            verror_set(&e, V_ENOMEM, "out of memory for the decided set");
            failed = true;
        } else if (!decided_since(w, since_ns - SWEEP_CLOCK_SLACK_MS * 1000000LL, &decided, &e) ||
                   stream_reader_open(w->js, c->txn_stream, NULL, w->cursor, w->cursor ? 0 : since_ns, &r, &e) !=
                       V_OK) {
            failed = true;
        }
        while (!failed && r) {
            natsMsg *m = NULL;
            uint64_t seq;
            int64_t ts;
            vstatus st = stream_reader_next(r, &m, &seq, &ts, SWEEP_READ_MS, &e);
            if (st == V_ENOTFOUND || (st == V_OK && seq > hi)) {
                natsMsg_Destroy(m);
                w->cursor = hi + 1; /* everything up to hi examined */
                break;
            }
            if (st != V_OK || atomic_load(&w->stopping)) {
                natsMsg_Destroy(m);
                failed = st != V_OK;
                break;
            }
            if (n.examined == SWEEP_MAX_EXAMINED || ncand == SWEEP_MAX_ACTIONS) {
                natsMsg_Destroy(m);
                w->cursor = seq; /* the next pass starts here */
                more = true;
                break;
            }
            n.examined++;
            arena_reset(&w->arena);
            Transaction *t = NULL;
            poison_reason why;
            bool valid = w->arena.buf && txn_decode(&w->arena, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m),
                                                    (size_t)c->max_msg_size, &t, &why, NULL) == V_OK;
            if (!valid || !idset_has(&decided, hash64_str(t->txn_id)))
                cands[ncand++] = seq;
            w->cursor = seq + 1;
            w->cursor_ns = ts;
            natsMsg_Destroy(m);
        }
        stream_reader_close(r);
        idset_free(&decided);
    }
    for (int i = 0; i < ncand && !atomic_load(&w->stopping); i++)
        sweep_one(w, cands[i], &n);
    if (failed)
        n.errors++;
    if (w->sweep) {
        atomic_fetch_add(&w->sweep->passes, 1);
        atomic_fetch_add(&w->sweep->examined, n.examined);
        atomic_fetch_add(&w->sweep->dead_lettered, n.dead_lettered);
        atomic_fetch_add(&w->sweep->originals_deleted, n.deleted);
        atomic_fetch_add(&w->sweep->errors, n.errors);
    }
    log_info("sweep",
             "\"from_seq\":%llu,\"to_seq\":%llu,\"examined\":%lld,\"dead_lettered\":%lld,\"originals_deleted\":%lld,"
             "\"decided_meanwhile\":%lld,\"errors\":%lld,\"more\":%s,\"took_ms\":%lld%s%s%s",
             (unsigned long long)from, (unsigned long long)hi, n.examined, n.dead_lettered, n.deleted, n.decided,
             n.errors, more ? "true" : "false", (long long)((mono_ns() - t0) / 1000000), failed ? ",\"error\":\"" : "",
             failed ? log_esc(e.msg) : "", failed ? "\"" : "");
    return more;
}

static void *dlq_main(void *arg)
{
    dlq_worker *w = arg;
    if (w->cfg.sweep_interval_ms > 0) {
        verror e = {0};
        if (!ack_floor(w, &w->prev_floor, &e))
            w->prev_floor = 0; /* the first pass only notes the floor */
        w->next_sweep_ns = mono_ns() + w->cfg.sweep_interval_ms * 1000000LL;
    }
    while (!atomic_load(&w->stopping)) {
        if (w->cfg.sweep_interval_ms > 0 && mono_ns() >= w->next_sweep_ns) {
            bool more = sweep_pass(w);
            w->next_sweep_ns = mono_ns() + (more ? SWEEP_CATCHUP_MS : w->cfg.sweep_interval_ms) * 1000000LL;
        }
        natsMsgList list = {0};
        natsStatus s = broker_fetch(w->sub, &list, 16, 500, NULL);
        if (s == NATS_TIMEOUT)
            continue;
        if (s != NATS_OK) {
            natsMsgList_Destroy(&list);
            struct timespec ts = {0, 200000000};
            nanosleep(&ts, NULL);
            continue;
        }
        for (int i = 0; i < list.Count; i++) {
            natsMsg *m = list.Msgs[i];
            dlq_action act = DLQ_SKIPPED;
            poison_reason why = POISON_NONE;
            verror e = {0};
            if (dlq_handle_advisory(&w->cfg, w->js, natsMsg_GetData(m), natsMsg_GetDataLength(m), &act, &why, &e) ==
                V_OK) {
                /* a lost ack redelivers the advisory, which then finds the original gone: counted once */
                if (natsMsg_AckSync(m, NULL, NULL) != NATS_OK)
                    log_warn("advisory ack failed; its redelivery will find the work done", NULL);
                if (act == DLQ_DEAD_LETTERED && w->total)
                    atomic_fetch_add(w->total, 1);
                if (act == DLQ_DEAD_LETTERED && w->by_reason)
                    atomic_fetch_add(&w->by_reason[why], 1);
                if (act == DLQ_DECIDED_LATE)
                    atomic_fetch_add(&w->decided_late, 1);
            } else {
                log_error("advisory not handled; will retry", "\"error\":\"%s\"", log_esc(e.msg));
                natsMsg_NakWithDelay(m, 2000, NULL);
            }
        }
        natsMsgList_Destroy(&list);
    }
    return NULL;
}

vstatus dlq_worker_start(const config *c, natsConnection *nc, atomic_llong *total, atomic_llong *by_reason,
                         dlq_sweep_stats *sweep, dlq_worker **out, verror *e)
{
    dlq_worker *w = calloc(1, sizeof *w);
    if (!w)
        return verror_set(e, V_ENOMEM, "out of memory");
    w->cfg = *c;
    w->total = total;
    w->by_reason = by_reason;
    w->sweep = sweep;
    if (c->sweep_interval_ms > 0 && c->sweep_interval_ms * 2 > c->dup_window_ms)
        log_warn("--sweep-interval is longer than half of --dup-window: a poison original whose advisory was lost "
                 "may get a second dead letter (docs/operations.md, \"The sweep\")",
                 "\"sweep_interval_ms\":%lld,\"dup_window_ms\":%lld", (long long)c->sweep_interval_ms,
                 (long long)c->dup_window_ms);
    if (c->sweep_interval_ms > 0 && arena_init(&w->arena, txn_arena_size((size_t)c->max_msg_size)) != V_OK) {
        free(w);
        return verror_set(e, V_ENOMEM, "out of memory for the sweep's decode arena");
    }
    natsStatus s = natsConnection_JetStream(&w->js, nc, NULL);
    if (s != NATS_OK) {
        arena_free(&w->arena);
        free(w);
        return broker_err(e, s, 0, "cannot get a JetStream context");
    }
    char durable[NAME_MAX_LEN + 8];
    snprintf(durable, sizeof durable, "%s_dlq", c->consumer);
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    s = js_GetConsumerInfo(&ci, w->js, c->adv_stream, durable, NULL, &jerr);
    if (s != NATS_OK) {
        jsConsumerConfig cc;
        jsConsumerConfig_Init(&cc);
        cc.Durable = durable;
        cc.Description = "Verdict DLQ worker: turns advisories into dead letters";
        cc.AckPolicy = js_AckExplicit;
        cc.AckWait = 30LL * 1000000000LL;
        cc.MaxDeliver = -1; /* an advisory must never be dropped; failures are naked and retried */
        s = js_AddConsumer(&ci, w->js, c->adv_stream, &cc, NULL, &jerr);
    }
    jsConsumerInfo_Destroy(ci);
    if (s != NATS_OK) {
        jsCtx_Destroy(w->js);
        arena_free(&w->arena);
        free(w);
        return broker_err(e, s, jerr, "cannot create the DLQ worker's consumer");
    }
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = c->adv_stream;
    so.Consumer = durable;
    so.ManualAck = true;
    s = js_PullSubscribe(&w->sub, w->js, "", durable, NULL, &so, &jerr);
    if (s != NATS_OK) {
        jsCtx_Destroy(w->js);
        arena_free(&w->arena);
        free(w);
        return broker_err(e, s, jerr, "cannot bind the DLQ worker");
    }
    if (pthread_create(&w->thread, NULL, dlq_main, w) != 0) {
        natsSubscription_Destroy(w->sub);
        jsCtx_Destroy(w->js);
        arena_free(&w->arena);
        free(w);
        return verror_set(e, V_ENOMEM, "cannot start the DLQ worker thread");
    }
    *out = w;
    return V_OK;
}

long long dlq_worker_decided_late(dlq_worker *w)
{
    return w ? atomic_load(&w->decided_late) : 0;
}

void dlq_worker_stop(dlq_worker *w)
{
    if (!w)
        return;
    atomic_store(&w->stopping, true);
    pthread_join(w->thread, NULL);
    natsSubscription_Destroy(w->sub);
    jsCtx_Destroy(w->js);
    arena_free(&w->arena);
    free(w);
}

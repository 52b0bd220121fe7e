/* pipeline.c - ingress, workers and the commit protocol (see pipeline.h).
 *
 * Threads: nats.c's own threads deliver ingress requests and PubAcks; N workers each block in Fetch on their
 * own pull subscription (one Fetch at a time per subscription, DESIGN section 8). The worker connection is
 * send-asap: acks, replies and pull requests leave at once instead of waiting up to 1 ms in nats.c's flusher. */
#include "pipeline.h"

#include "broker.h"
#include "codec.h"
#include "decide.h"
#include "dlq.h"
#include "log.h"
#include "observe.h"
#include "rebuild.h"
#include "reloader.h"
#include "replica.h"
#include "velocity.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DECISION_BUF 8192
/* how long a batch retries decisions the stream could not take (no leader), before naking them */
#define DECISION_RETRY_MS 30000

struct slot;
struct engine;
struct velref;
static vstatus make_velocity(struct engine *en, const struct policy *p, uint64_t upto_seq, bool empty,
                             struct velref **out, verror *e);

/* Velocity state shared by the workers, reference-counted like policies: a reload that needs new velocity
 * features swaps in a rebuilt state, and the old one is freed when its last batch is done. */
typedef struct velref {
    atomic_int refs;
    velocity *v;
} velref;

static velref *velref_new(velocity *v)
{
    velref *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    atomic_init(&r->refs, 1);
    r->v = v;
    return r;
}

static void velref_release(velref *r)
{
    if (r && atomic_fetch_sub(&r->refs, 1) == 1) {
        velocity_free(r->v);
        free(r);
    }
}

typedef struct worker {
    struct engine *en;
    int id;
    pthread_t thread;
    natsSubscription *sub;
    jsCtx *js;           /* async decision publishes; its PubAck handler fills slots */
    struct slot *slots;  /* one per message of the batch in hand */
    int nslots;
    arena arena;       /* decode arena, reset per message */
    arena dup_arena;   /* decoding stored decisions on the duplicate path */
    unsigned char *enc; /* encoded decision */
    fval vals[FEAT_MAX];
    policy *policy; /* held for the batch in hand */
    velref *vel;    /* held with it */
    Reason reasons[DECIDE_MAX_REASONS];
    Reason *reason_ptrs[DECIDE_MAX_REASONS];
} worker;

struct engine {
    config cfg;
    natsConnection *nc;  /* workers: send-asap */
    natsConnection *inc; /* ingress: buffered, with async publish */
    jsCtx *js;
    jsCtx *ijs;
    natsSubscription *ingress;
    arena ingress_arena; /* ingress callbacks are serialised per subscription */
    worker *workers;
    int nworkers;
    policy *policy;          /* the policy in force; swapped under policy_mu, held by workers per batch */
    pthread_mutex_t policy_mu;
    velref *vel; /* the velocity state matching policy's registry; swapped with it */
    replica *lists, *profiles; /* local replicas of verdict_lists and verdict_profiles */
    reloader *reloader;
    observe *observe;
    dlq_worker *dlq;
    atomic_bool stopping;
    atomic_int phase; /* engine_phase */
    engine_stats stats;
    pthread_mutex_t last_error_mu; /* the last request error, for $SRV.STATS (rare: not on the decide path) */
    char last_error[160];
};

const int64_t latency_bounds_us[LATENCY_BUCKETS] = {250,   500,   1000,   2000,   5000,   10000,
                                                    20000, 50000, 100000, 250000, 500000, 1000000};

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* --- fault switch (tests only; docs/testing.md) ------------------------------------------------------ */

static void fault_point(const engine *en, const char *point)
{
    if (en->cfg.fault[0] && strcmp(en->cfg.fault, point) == 0) {
        log_warn("test fault: killing the process", "\"point\":\"%s\"", point);
        raise(SIGKILL);
    }
}

/* --- replies ------------------------------------------------------------------------------------------ */

static void reply_error(natsConnection *nc, const char *reply_to, int code, const char *text)
{
    if (!reply_to || !reply_to[0])
        return;
    natsMsg *m = NULL;
    char codes[16];
    snprintf(codes, sizeof codes, "%d", code);
    if (natsMsg_Create(&m, reply_to, NULL, text, (int)strlen(text)) != NATS_OK)
        return;
    if (natsMsgHeader_Set(m, "Nats-Service-Error", text) != NATS_OK ||
        natsMsgHeader_Set(m, "Nats-Service-Error-Code", codes) != NATS_OK ||
        natsConnection_PublishMsg(nc, m) != NATS_OK)
        log_warn("could not send an error reply", "\"error\":\"%s\"", log_esc(nats_GetLastError(NULL)));
    natsMsg_Destroy(m);
}

/* A decide request refused: counted, remembered for $SRV.STATS' last_error, answered with a service error. */
static void request_failed(engine *en, natsConnection *nc, const char *reply_to, int code, const char *text)
{
    atomic_fetch_add(&en->stats.request_errors, 1);
    pthread_mutex_lock(&en->last_error_mu);
    int n = snprintf(en->last_error, sizeof en->last_error, "%d: ", code);
    if (n > 0 && (size_t)n < sizeof en->last_error)
        str_copy(en->last_error + n, sizeof en->last_error - (size_t)n, text); /* truncated if long */
    pthread_mutex_unlock(&en->last_error_mu);
    reply_error(nc, reply_to, code, text);
}

void engine_last_error(engine *en, char *out, size_t cap)
{
    pthread_mutex_lock(&en->last_error_mu);
    str_copy(out, cap, en->last_error);
    pthread_mutex_unlock(&en->last_error_mu);
}

static const char *decision_header_keys[] = {"Nats-Msg-Id",           "Verdict-Outcome",        "Verdict-Score",
                                             "Verdict-Reasons",       "Verdict-Rules-Version",  "Verdict-Model-Version",
                                             "Verdict-Latency-Us",    "Verdict-Budget-Exceeded", "Verdict-Degraded"};

static natsStatus set_decision_headers(natsMsg *m, const Decision *d)
{
    char score[32], lat[32], reasons[1024];
    size_t o = 0;
    reasons[0] = 0;
    for (size_t i = 0; i < d->n_reasons && o < sizeof reasons - 2; i++)
        o += (size_t)snprintf(reasons + o, sizeof reasons - o, "%s%s", i ? "," : "", d->reasons[i]->rule_id);
    if (d->score >= 0)
        snprintf(score, sizeof score, "%.6f", d->score);
    else
        snprintf(score, sizeof score, "none");
    snprintf(lat, sizeof lat, "%lld", (long long)d->latency_us);
    /* Nats-Msg-Id is added by nats.c from jsPubOptions.MsgId; every header costs nats.c allocations and
     * hashing, measurably (docs/benchmarks.md), so nothing is set twice */
    natsStatus s = natsMsgHeader_Set(m, "Verdict-Outcome", outcome_str(d->outcome));
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Verdict-Score", score);
    /* an empty header value confuses header parsing in some clients: omit the header when no rule matched */
    if (s == NATS_OK && reasons[0])
        s = natsMsgHeader_Set(m, "Verdict-Reasons", reasons);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Verdict-Rules-Version", d->rules_version);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Verdict-Model-Version", d->model_version);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Verdict-Latency-Us", lat);
    if (s == NATS_OK && d->budget_exceeded)
        s = natsMsgHeader_Set(m, "Verdict-Budget-Exceeded", "true");
    if (s == NATS_OK && d->degraded)
        s = natsMsgHeader_Set(m, "Verdict-Degraded", "true");
    return s;
}

/* Replies with a stored decision message (data and Verdict headers copied). */
static void reply_stored(natsConnection *nc, const char *reply_to, natsMsg *stored)
{
    natsMsg *r = NULL;
    if (natsMsg_Create(&r, reply_to, NULL, natsMsg_GetData(stored), natsMsg_GetDataLength(stored)) != NATS_OK)
        return;
    for (size_t i = 0; i < ARRAY_LEN(decision_header_keys); i++) {
        const char *v = NULL;
        if (natsMsgHeader_Get(stored, decision_header_keys[i], &v) == NATS_OK && v)
            natsMsgHeader_Set(r, decision_header_keys[i], v);
    }
    natsMsgHeader_Set(r, "Verdict-Duplicate", "true");
    if (natsConnection_PublishMsg(nc, r) != NATS_OK)
        log_warn("could not send a reply", "\"error\":\"%s\"", log_esc(nats_GetLastError(NULL)));
    natsMsg_Destroy(r);
}

/* --- dead letters ------------------------------------------------------------------------------------- */

/* Publishes the original bytes to dlq.<reason> and terms the message; naks it if the DLQ is unreachable. */
static void dead_letter(worker *w, natsMsg *msg, const js_meta *m, poison_reason why, const char *err,
                        const char *reply_to)
{
    engine *en = w->en;
    char subj[NAME_MAX_LEN + 40], seq[32], deliveries[32], msgid[NAME_MAX_LEN + 40];
    snprintf(subj, sizeof subj, "%s.%s", en->cfg.dlq_prefix, poison_reason_str(why));
    snprintf(seq, sizeof seq, "%llu", (unsigned long long)m->stream_seq);
    snprintf(deliveries, sizeof deliveries, "%llu", (unsigned long long)m->delivered);
    snprintf(msgid, sizeof msgid, "dlq-%s-%llu", en->cfg.txn_stream, (unsigned long long)m->stream_seq);
    natsMsg *dl = NULL;
    natsStatus s = natsMsg_Create(&dl, subj, NULL, natsMsg_GetData(msg), natsMsg_GetDataLength(msg));
    if (s == NATS_OK)
        s = natsMsgHeader_Set(dl, "Nats-Msg-Id", msgid);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(dl, "Verdict-Dlq-Reason", poison_reason_str(why));
    if (s == NATS_OK)
        s = natsMsgHeader_Set(dl, "Verdict-Error", err);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(dl, "Verdict-Original-Subject", natsMsg_GetSubject(msg));
    if (s == NATS_OK)
        s = natsMsgHeader_Set(dl, "Verdict-Original-Seq", seq);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(dl, "Verdict-Deliveries", deliveries);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msgid;
    po.MaxWait = en->cfg.publish_timeout_ms;
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    if (s == NATS_OK)
        s = js_PublishMsg(&pa, en->js, dl, &po, &jerr);
    natsMsg_Destroy(dl);
    jsPubAck_Destroy(pa);
    if (s != NATS_OK) {
        log_error("dead letter not stored; will retry", "\"stream\":\"%s\",\"seq\":%llu,\"error\":\"%s\"",
                  en->cfg.txn_stream, (unsigned long long)m->stream_seq, log_esc(natsStatus_GetText(s)));
        natsMsg_NakWithDelay(msg, 1000, NULL);
        atomic_fetch_add(&en->stats.naks, 1);
        return;
    }
    atomic_fetch_add(&en->stats.dead_letters, 1);
    atomic_fetch_add(&en->stats.dead_letters_by[why], 1);
    log_warn("dead-lettered", "\"stream\":\"%s\",\"seq\":%llu,\"reason\":\"%s\",\"error\":\"%s\"",
             en->cfg.txn_stream, (unsigned long long)m->stream_seq, poison_reason_str(why), log_esc(err));
    reply_error(en->nc, reply_to, 400, err);
    if (natsMsg_Term(msg, NULL) != NATS_OK)
        log_warn("term failed; the message will be redelivered and dead-lettered idempotently",
                 "\"seq\":%llu", (unsigned long long)m->stream_seq);
}

/* --- the commit protocol ------------------------------------------------------------------------------ */

static int64_t backoff_delay_ms(const config *c, uint64_t delivered)
{
    if (c->backoff_len == 0)
        return 1000;
    uint64_t i = delivered > 0 ? delivered - 1 : 0;
    if (i >= (uint64_t)c->backoff_len)
        i = (uint64_t)c->backoff_len - 1;
    return c->backoff_ms[i];
}

/* One message of a batch between its decision and its ack. */
enum slot_state { SLOT_DONE = 0, SLOT_PENDING, SLOT_STORED, SLOT_DUPLICATE, SLOT_FAILED };

typedef struct slot {
    natsMsg *in;  /* the TXN message (owned by the fetched list) */
    natsMsg *dm;  /* the decision message; ours until published, then handed back by the PubAck handler */
    natsMsg *to_send;
    js_meta meta;
    const char *reply_to; /* points into in's headers */
    char txn_id[72];
    int64_t store_us;
    int outcome;
    bool budget_exceeded, degraded;
    _Atomic int state;
    bool retryable; /* failed because the stream had no leader for a moment (see publish_decisions) */
    uint64_t dup_seq;
    char err[96];
} slot;

/* Step 1, per message: decode, validate, decide, encode. Poison is finished here (dead letter + term). */
static void prepare(worker *w, natsMsg *msg, slot *sl)
{
    engine *en = w->en;
    const config *cfg = &en->cfg;
    memset(sl, 0, sizeof *sl);
    sl->in = msg;
    if (!broker_parse_ack_subject(natsMsg_GetReply(msg), &sl->meta)) {
        log_warn("message without JetStream metadata ignored", NULL);
        return;
    }
    js_meta *m = &sl->meta;
    if (m->delivered > 1)
        atomic_fetch_add(&en->stats.redeliveries, 1);
    if (natsMsgHeader_Get(msg, "Verdict-Reply-To", &sl->reply_to) != NATS_OK)
        sl->reply_to = NULL;
    if (cfg->passthrough) {
        /* the benchmark baseline: the same pull, async republish with a msg-id, reply and ack, and nothing
         * else: no decode, no features, no rules, no model */
        char subj[NAME_MAX_LEN + 48];
        snprintf(subj, sizeof subj, "%s.passthrough.%llu", cfg->decision_prefix, (unsigned long long)m->stream_seq);
        snprintf(sl->txn_id, sizeof sl->txn_id, "pt-%llu", (unsigned long long)m->stream_seq);
        sl->outcome = 1;
        if (natsMsg_Create(&sl->dm, subj, NULL, natsMsg_GetData(msg), natsMsg_GetDataLength(msg)) != NATS_OK) {
            atomic_store(&sl->state, SLOT_FAILED);
            return;
        }
        atomic_store(&sl->state, SLOT_PENDING);
        return;
    }

    Transaction *t = NULL;
    poison_reason why;
    verror err = {0};
    if (txn_decode(&w->arena, natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg), (size_t)cfg->max_msg_size,
                   &t, &why, &err) != V_OK) {
        dead_letter(w, msg, m, why, err.msg, sl->reply_to);
        return;
    }

    sl->store_us = m->timestamp_ns / 1000;
    int64_t start_us = now_us();
    int64_t elapsed_us = start_us - sl->store_us;
    bool budget_exceeded = elapsed_us >= cfg->budget_ms * 1000;
    /* "about to be spent": with less than a fifth of the budget left, the model is skipped and the rules
     * decide alone (degraded), so the answer still arrives in time */
    bool skip_model = elapsed_us * 5 >= cfg->budget_ms * 4000;
    decide_out out;
    const policy *p = w->policy;
    decide_env env = {.vel = w->vel ? w->vel->v : NULL, .lists = en->lists, .profiles = en->profiles};
    decide_run(p, &env, t, txn_event_ms(t, sl->store_us / 1000), skip_model, w->vals, &out);
    atomic_fetch_add_explicit(&en->stats.stage_ns[0], out.features_ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&en->stats.stage_ns[1], out.model_ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&en->stats.stage_ns[2], out.rules_ns, memory_order_relaxed);
    if (budget_exceeded) {
        out.budget_exceeded = true;
        if (strcmp(cfg->fallback, "none") != 0) {
            out.outcome = strcmp(cfg->fallback, "approve") == 0  ? VERDICT__V1__OUTCOME__OUTCOME_APPROVE
                          : strcmp(cfg->fallback, "review") == 0 ? VERDICT__V1__OUTCOME__OUTCOME_REVIEW
                                                                 : VERDICT__V1__OUTCOME__OUTCOME_DECLINE;
            if (out.n_reasons < DECIDE_MAX_REASONS) {
                out.reason_id[out.n_reasons] = "budget_fallback";
                out.reason_text[out.n_reasons++] = "Latency budget spent; configured fallback outcome applied";
            }
        } else {
            out.degraded = true;
        }
    }

    Decision d = VERDICT__V1__DECISION__INIT;
    d.txn_id = t->txn_id;
    d.outcome = out.outcome;
    d.score = out.score;
    d.n_reasons = (size_t)out.n_reasons;
    for (int i = 0; i < out.n_reasons; i++) {
        verdict__v1__reason__init(&w->reasons[i]);
        w->reasons[i].rule_id = (char *)out.reason_id[i];
        w->reasons[i].text = (char *)out.reason_text[i];
        w->reason_ptrs[i] = &w->reasons[i];
    }
    d.reasons = w->reason_ptrs;
    d.rules_version = (char *)policy_rules_version(p);
    d.model_version = (char *)policy_model_version(p);
    d.decided_at_ms = now_ms();
    d.latency_us = now_us() - sl->store_us;
    if (d.latency_us < 0)
        d.latency_us = 0;
    d.budget_exceeded = out.budget_exceeded;
    d.degraded = out.degraded;
    d.engine_id = (char *)cfg->engine_id;
    size_t n = decision_encode(&d, w->enc, DECISION_BUF);

    char subj[NAME_MAX_LEN + 96];
    snprintf(subj, sizeof subj, "%s.%s.%s", cfg->decision_prefix, outcome_str(d.outcome), t->txn_id);
    natsStatus s = n ? natsMsg_Create(&sl->dm, subj, NULL, (const char *)w->enc, (int)n) : NATS_INSUFFICIENT_BUFFER;
    if (s == NATS_OK)
        s = set_decision_headers(sl->dm, &d);
    str_copy(sl->txn_id, sizeof sl->txn_id, t->txn_id);
    sl->outcome = d.outcome & 3;
    sl->budget_exceeded = d.budget_exceeded;
    sl->degraded = d.degraded;
    if (s != NATS_OK) {
        str_copy(sl->err, sizeof sl->err, natsStatus_GetText(s));
        atomic_store(&sl->state, SLOT_FAILED);
        return;
    }
    atomic_store(&sl->state, SLOT_PENDING);
}

/* PubAck of a decision (nats.c's thread): record the outcome in the matching slot. */
static void on_decision_puback(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    worker *w = closure;
    const char *id = NULL;
    natsMsgHeader_Get(msg, "Nats-Msg-Id", &id);
    for (int i = 0; id && i < w->nslots; i++) {
        slot *sl = &w->slots[i];
        if (sl->dm == NULL && atomic_load(&sl->state) == SLOT_PENDING && strcmp(sl->txn_id, id) == 0) {
            sl->dm = msg;
            if (pae) {
                str_copy(sl->err, sizeof sl->err, natsStatus_GetText(pae->Err));
                sl->retryable = pae->Err == NATS_NO_RESPONDERS || pae->Err == NATS_TIMEOUT ||
                                pae->ErrCode == JSClusterNotAvailErr;
                atomic_store(&sl->state, SLOT_FAILED);
            } else if (pa && pa->Duplicate) {
                sl->dup_seq = pa->Sequence;
                atomic_store(&sl->state, SLOT_DUPLICATE);
            } else {
                atomic_store(&sl->state, SLOT_STORED);
            }
            return;
        }
    }
    natsMsg_Destroy(msg);
}

/* Step 3, per message after every PubAck of the batch is in: reply, then ack (or nak on failure). */
static void finish(worker *w, slot *sl)
{
    engine *en = w->en;
    const config *cfg = &en->cfg;
    int st = atomic_load(&sl->state);
    if (st == SLOT_DONE)
        return;
    if (st == SLOT_PENDING) {
        st = SLOT_FAILED;
        str_copy(sl->err, sizeof sl->err, "no PubAck within the publish timeout");
    }
    if (st == SLOT_FAILED) {
        int64_t delay = backoff_delay_ms(cfg, sl->meta.delivered);
        log_warn("decision not stored; nak for retry",
                 "\"stream\":\"%s\",\"seq\":%llu,\"txn_id\":\"%s\",\"delivered\":%llu,\"delay_ms\":%lld,"
                 "\"error\":\"%s\"",
                 cfg->txn_stream, (unsigned long long)sl->meta.stream_seq, sl->txn_id,
                 (unsigned long long)sl->meta.delivered, (long long)delay, log_esc(sl->err));
        /* A caller waiting on this decision gets a timely error instead of silence; the transaction stays in
         * the stream and will be decided (or dead-lettered) and stored. */
        if (sl->reply_to && sl->reply_to[0] && now_us() - sl->store_us >= cfg->budget_ms * 1000)
            reply_error(en->nc, sl->reply_to, 504,
                        "decision delayed: not stored within the latency budget; it will be decided and stored, "
                        "retry the request to read it");
        if (natsMsg_NakWithDelay(sl->in, delay, NULL) != NATS_OK)
            log_warn("nak failed; AckWait will redeliver", NULL);
        atomic_fetch_add(&en->stats.naks, 1);
        return;
    }
    fault_point(en, "crash_after_publish");
    if (st == SLOT_DUPLICATE) {
        /* Decided before (a redelivery or a client retry): answer with the stored decision, never a new one. */
        atomic_fetch_add(&en->stats.duplicates, 1);
        if (sl->reply_to && sl->reply_to[0]) {
            natsMsg *stored = NULL;
            jsDirectGetMsgOptions dgo;
            jsDirectGetMsgOptions_Init(&dgo);
            dgo.Sequence = sl->dup_seq;
            if (js_DirectGetMsg(&stored, en->js, cfg->decisions_stream, NULL, &dgo) != NATS_OK) {
                log_warn("stored decision not readable; nak for retry", "\"seq\":%llu",
                         (unsigned long long)sl->dup_seq);
                natsMsg_NakWithDelay(sl->in, backoff_delay_ms(cfg, sl->meta.delivered), NULL);
                atomic_fetch_add(&en->stats.naks, 1);
                return;
            }
            reply_stored(en->nc, sl->reply_to, stored);
            natsMsg_Destroy(stored);
        }
    } else {
        atomic_fetch_add(&en->stats.decided[sl->outcome], 1);
        int64_t lat = now_us() - sl->store_us;
        int b = 0;
        while (b < LATENCY_BUCKETS && lat > latency_bounds_us[b])
            b++;
        atomic_fetch_add(&en->stats.latency_bucket[b], 1);
        atomic_fetch_add(&en->stats.latency_sum_us, lat > 0 ? lat : 0);
        if (sl->budget_exceeded)
            atomic_fetch_add(&en->stats.budget_exceeded, 1);
        if (sl->degraded)
            atomic_fetch_add(&en->stats.degraded, 1);
        if (sl->reply_to && sl->reply_to[0] && sl->dm) {
            natsMsg *r = NULL;
            if (natsMsg_Create(&r, sl->reply_to, NULL, natsMsg_GetData(sl->dm), natsMsg_GetDataLength(sl->dm)) ==
                NATS_OK) {
                for (size_t i = 0; i < ARRAY_LEN(decision_header_keys); i++) {
                    const char *v = NULL;
                    if (natsMsgHeader_Get(sl->dm, decision_header_keys[i], &v) == NATS_OK && v)
                        natsMsgHeader_Set(r, decision_header_keys[i], v);
                }
                natsConnection_PublishMsg(en->nc, r);
            }
            natsMsg_Destroy(r);
        }
    }
    if (sl->meta.delivered == 1 && strcmp(cfg->fault, "skip_first_ack") == 0)
        return; /* test fault: behave as if the ack was lost, so AckWait redelivers */
    if (natsMsg_Ack(sl->in, NULL) != NATS_OK)
        log_warn("ack failed; the redelivery will be answered from the stored decision", "\"seq\":%llu",
                 (unsigned long long)sl->meta.stream_seq);
    fault_point(en, "crash_after_ack");
}

/* Publishes every slot's to_send asynchronously and waits (bounded) for their PubAcks. */
static void publish_decisions(worker *w, int count)
{
    const config *cfg = &w->en->cfg;
    bool any = false;
    for (int i = 0; i < count; i++) {
        slot *sl = &w->slots[i];
        if (!sl->to_send)
            continue;
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = sl->txn_id;
        po.MaxWait = cfg->publish_timeout_ms;
        natsMsg *dm = sl->to_send;
        sl->to_send = NULL;
        natsStatus s = strcmp(cfg->fault, "publish_fail") == 0 ? NATS_TIMEOUT : js_PublishMsgAsync(w->js, &dm, &po);
        if (s != NATS_OK) {
            /* not handed over (on failure nats.c leaves the message with us) */
            natsMsg_Destroy(dm);
            str_copy(sl->err, sizeof sl->err, natsStatus_GetText(s));
            atomic_store(&sl->state, SLOT_FAILED);
        } else {
            any = true;
        }
    }
    if (any) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = cfg->publish_timeout_ms + 1000;
        if (js_PublishAsyncComplete(w->js, &po) != NATS_OK)
            log_warn("some decision PubAcks did not arrive in time", "\"worker\":%d", w->id);
    }
}

/* A batch: decide every message, publish every decision asynchronously (at most one batch in flight per
 * worker), wait for all PubAcks, then reply and ack in order. One round trip per batch instead of per message. */
static void process_batch(worker *w, natsMsgList *list)
{
    engine *en = w->en;
    w->nslots = list->Count;
    /* one policy for the whole batch: a reload takes effect between batches, never inside a decision */
    pthread_mutex_lock(&en->policy_mu);
    w->policy = en->policy;
    policy_retain(w->policy);
    w->vel = en->vel;
    if (w->vel)
        atomic_fetch_add(&w->vel->refs, 1);
    pthread_mutex_unlock(&en->policy_mu);
    for (int i = 0; i < list->Count; i++)
        prepare(w, list->Msgs[i], &w->slots[i]);
    policy_release(w->policy);
    w->policy = NULL;
    velref_release(w->vel);
    w->vel = NULL;
    fault_point(en, "crash_before_publish");
    /* Hand every decision over before the first publish: the PubAck handler runs on nats.c's thread as soon as
     * the first PubAck arrives and matches slots by (state PENDING, dm NULL, txn_id). */
    for (int i = 0; i < list->Count; i++) {
        slot *sl = &w->slots[i];
        sl->to_send = NULL;
        if (atomic_load(&sl->state) == SLOT_PENDING) {
            sl->to_send = sl->dm;
            sl->dm = NULL;
        }
    }
    publish_decisions(w, list->Count);
    /* A stream that lost its leader answers "no responders" at once (or not at all) until a new leader is elected,
     * which takes seconds on a cluster. Naking would spend one of the transaction's MaxDeliver attempts per
     * retry and dead-letter it during an ordinary failover, so the decisions are published again from here,
     * with the input kept in progress, for up to DECISION_RETRY_MS; only then is the batch naked. */
    int64_t give_up = now_ms() + DECISION_RETRY_MS;
    for (int delay = 100; !atomic_load(&en->stopping) && now_ms() < give_up; delay = delay < 800 ? delay * 2 : 1000) {
        int n = 0;
        const char *why = "";
        for (int i = 0; i < list->Count; i++) {
            slot *sl = &w->slots[i];
            if (atomic_load(&sl->state) == SLOT_FAILED && sl->retryable && sl->dm) {
                if (natsMsg_InProgress(sl->in, NULL) != NATS_OK)
                    log_warn("in-progress not sent; AckWait may redeliver, which the dedup absorbs", NULL);
                why = sl->err;
                n++;
            }
        }
        if (n == 0)
            break;
        if (delay == 100)
            log_warn("decision stream unavailable; retrying the batch's publishes",
                     "\"worker\":%d,\"messages\":%d,\"error\":\"%s\"", w->id, n, log_esc(why));
        sleep_ms(delay);
        for (int i = 0; i < list->Count; i++) {
            slot *sl = &w->slots[i];
            sl->to_send = NULL;
            if (atomic_load(&sl->state) == SLOT_FAILED && sl->retryable && sl->dm) {
                sl->to_send = sl->dm; /* handed back by the PubAck handler: ours to publish again */
                sl->dm = NULL;
                sl->retryable = false;
                sl->err[0] = 0;
                atomic_store(&sl->state, SLOT_PENDING);
            }
        }
        publish_decisions(w, list->Count);
    }
    for (int i = 0; i < list->Count; i++)
        finish(w, &w->slots[i]);
    for (int i = 0; i < list->Count; i++) {
        natsMsg_Destroy(w->slots[i].dm);
        w->slots[i].dm = NULL;
    }
    w->nslots = 0;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    engine *en = w->en;
    while (!atomic_load(&en->stopping)) {
        natsMsgList list = {0};
        int pending = 0;
        jsErrCode jerr = 0;
        /* nats.c 3.4.1 overflows the heap in a batched Fetch when messages are already queued on the
         * subscription (late deliveries after a timed-out Fetch): take those one at a time first. */
        if (natsSubscription_GetPending(w->sub, &pending, NULL) != NATS_OK)
            pending = 0;
        natsStatus s = natsSubscription_Fetch(&list, w->sub, pending > 0 ? 1 : en->cfg.batch, 500, &jerr);
        if (s == NATS_TIMEOUT || (s == NATS_OK && list.Count == 0))
            continue;
        if (s != NATS_OK) {
            if (!atomic_load(&en->stopping))
                log_warn("fetch failed; retrying", "\"worker\":%d,\"error\":\"%s\"", w->id,
                         log_esc(natsStatus_GetText(s)));
            natsMsgList_Destroy(&list);
            sleep_ms(200);
            continue;
        }
        process_batch(w, &list);
        natsMsgList_Destroy(&list);
    }
    return NULL;
}

/* --- ingress: verdict.v1.decide ----------------------------------------------------------------------- */

static void ingress_on_request(natsConnection *nc, natsSubscription *sub, natsMsg *req, void *closure)
{
    (void)sub;
    engine *en = closure;
    const char *reply = natsMsg_GetReply(req);
    atomic_fetch_add(&en->stats.requests, 1);
    if (!reply || !reply[0]) {
        natsMsg_Destroy(req);
        return;
    }
    Transaction *t = NULL;
    poison_reason why;
    verror err = {0};
    if (txn_decode(&en->ingress_arena, natsMsg_GetData(req), (size_t)natsMsg_GetDataLength(req),
                   (size_t)en->cfg.max_msg_size, &t, &why, &err) != V_OK) {
        request_failed(en, nc, reply, 400, err.msg);
        natsMsg_Destroy(req);
        return;
    }
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, en->cfg.ingress_subject, NULL, natsMsg_GetData(req),
                                  natsMsg_GetDataLength(req));
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Nats-Msg-Id", t->txn_id);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Verdict-Reply-To", reply);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = t->txn_id;
    po.MaxWait = en->cfg.publish_timeout_ms;
    if (s == NATS_OK)
        s = js_PublishMsgAsync(en->ijs, &m, &po); /* on success nats.c owns m */
    if (s != NATS_OK) {
        request_failed(en, nc, reply, 503, "transaction not accepted: the stream is unavailable, retry");
        natsMsg_Destroy(m);
    }
    natsMsg_Destroy(req);
}

/* Looks up the stored decision of txn_id under any outcome. */
static natsStatus find_decision(engine *en, const char *txn_id, natsMsg **out)
{
    static const char *outcomes[] = {"approve", "review", "decline"};
    for (size_t i = 0; i < ARRAY_LEN(outcomes); i++) {
        char subj[NAME_MAX_LEN + 96];
        snprintf(subj, sizeof subj, "%s.%s.%s", en->cfg.decision_prefix, outcomes[i], txn_id);
        jsDirectGetMsgOptions dgo;
        jsDirectGetMsgOptions_Init(&dgo);
        dgo.LastBySubject = subj;
        natsStatus s = js_DirectGetMsg(out, en->ijs, en->cfg.decisions_stream, NULL, &dgo);
        if (s == NATS_OK)
            return s;
        if (s != NATS_NOT_FOUND)
            return s;
    }
    return NATS_NOT_FOUND;
}

/* PubAck of an ingress publish. A Duplicate means this txn_id was accepted before: its requester gets the
 * stored decision (polling briefly if the first copy is still being decided). */
static void ingress_on_puback(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    engine *en = closure;
    const char *reply = NULL, *txn_id = NULL;
    natsMsgHeader_Get(msg, "Verdict-Reply-To", &reply);
    natsMsgHeader_Get(msg, "Nats-Msg-Id", &txn_id);
    if (pae) {
        request_failed(en, en->inc, reply, 503, "transaction not accepted: the stream did not confirm it, retry");
    } else if (pa && pa->Duplicate && txn_id) {
        atomic_fetch_add(&en->stats.duplicates, 1);
        natsMsg *stored = NULL;
        natsStatus s = NATS_NOT_FOUND;
        int64_t deadline = now_ms() + en->cfg.budget_ms * 4;
        while ((s = find_decision(en, txn_id, &stored)) == NATS_NOT_FOUND && now_ms() < deadline)
            sleep_ms(5);
        if (s == NATS_OK) {
            reply_stored(en->inc, reply, stored);
            natsMsg_Destroy(stored);
        } else {
            reply_error(en->inc, reply, 409, "transaction already accepted and still being decided; retry");
        }
    }
    natsMsg_Destroy(msg);
}

/* --- lifecycle ---------------------------------------------------------------------------------------- */

static void free_engine(engine *en)
{
    observe_stop(en->observe);
    en->observe = NULL;
    reloader_stop(en->reloader);
    en->reloader = NULL;
    dlq_worker_stop(en->dlq);
    replica_stop(en->lists); /* workers are joined by now; the watchers use en->nc */
    replica_stop(en->profiles);
    en->lists = en->profiles = NULL;
    if (en->workers) {
        for (int i = 0; i < en->nworkers; i++) {
            worker *w = &en->workers[i];
            natsSubscription_Destroy(w->sub);
            jsCtx_Destroy(w->js);
            free(w->slots);
            arena_free(&w->arena);
            arena_free(&w->dup_arena);
            free(w->enc);
        }
        free(en->workers);
    }
    natsSubscription_Destroy(en->ingress);
    jsCtx_Destroy(en->js);
    jsCtx_Destroy(en->ijs);
    natsConnection_Destroy(en->nc);
    natsConnection_Destroy(en->inc);
    arena_free(&en->ingress_arena);
    policy_release(en->policy);
    velref_release(en->vel);
    pthread_mutex_destroy(&en->policy_mu);
    pthread_mutex_destroy(&en->last_error_mu);
    free(en);
}

vstatus engine_start(const config *c, engine **out, verror *e)
{
    engine *en = calloc(1, sizeof *en);
    if (!en)
        return verror_set(e, V_ENOMEM, "out of memory");
    en->cfg = *c;
    vstatus rc = arena_init(&en->ingress_arena, (size_t)c->max_msg_size * 4 + 4096);
    if (rc) {
        free_engine(en);
        return verror_set(e, rc, "out of memory");
    }
    pthread_mutex_init(&en->policy_mu, NULL);
    pthread_mutex_init(&en->last_error_mu, NULL);
    rules_diag diag = {0};
    rc = policy_load(c->rules_file, c->model_file, &en->policy, &diag);
    if (rc != V_OK) {
        verror_set(e, rc, "the rules or model do not load, so the engine does not start:\n%s",
                   diag.text ? diag.text : "");
        rules_diag_free(&diag);
        free_engine(en);
        return rc;
    }
    rules_diag_free(&diag);
    /* health and metrics first, so that /healthz answers and /readyz tells where a long start has got to */
    atomic_store(&en->phase, PHASE_CONNECTING);
    if ((rc = observe_start(en, c, &en->observe, e)) != V_OK) {
        free_engine(en);
        return rc;
    }
    char name[128];
    snprintf(name, sizeof name, "verdict-%s", c->engine_id);
    if ((rc = broker_connect(c, name, true, &en->nc, e)) != V_OK ||
        (rc = broker_connect(c, name, true, &en->inc, e)) != V_OK) {
        free_engine(en);
        return rc;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 5000;
    natsStatus s = natsConnection_JetStream(&en->js, en->nc, &jo);
    if (s != NATS_OK) {
        free_engine(en);
        return broker_err(e, s, 0, "cannot get a JetStream context");
    }
    atomic_store(&en->phase, PHASE_VERIFYING);
    if ((rc = broker_setup(c, en->js, e)) != V_OK) {
        free_engine(en);
        return rc;
    }
    /* lists and profiles: local replicas kept current by KV watchers; a slow first load does not block the
     * start (decisions are marked degraded until it completes) */
    if ((rc = replica_start(&en->lists, en->nc, c->lists_bucket, REPLICA_LISTS, c->replicas, e)) != V_OK ||
        (rc = replica_start(&en->profiles, en->nc, c->profiles_bucket, REPLICA_PROFILES, c->replicas, e)) != V_OK) {
        free_engine(en);
        return rc;
    }
    if (!replica_wait_ready(en->lists, 3000) || !replica_wait_ready(en->profiles, 3000))
        log_warn("lists/profiles replicas not loaded yet; decisions are marked degraded until they are", NULL);
    /* velocity state before any work: rebuilt from TXN up to what the consumer has delivered, so a restart
     * neither resets nor double-counts (rebuild.h) */
    atomic_store(&en->phase, PHASE_REBUILDING);
    if (en->cfg.fault[0] && strcmp(en->cfg.fault, "slow_rebuild") == 0)
        sleep_ms(3000); /* tests: hold the start in this phase so /readyz can be seen saying so */
    uint64_t delivered = 0;
    velref *vel = NULL;
    if ((rc = rebuild_delivered_seq(en->js, c, &delivered, e)) != V_OK ||
        (rc = make_velocity(en, en->policy, 0, delivered == 0, &vel, e)) != V_OK) {
        free_engine(en);
        return rc;
    }
    pthread_mutex_lock(&en->policy_mu); /* /metrics may be reading it already */
    en->vel = vel;
    pthread_mutex_unlock(&en->policy_mu);
    atomic_store(&en->phase, PHASE_STARTING);
    jsOptions ijo;
    jsOptions_Init(&ijo);
    ijo.Wait = 5000;
    /* nats.c 3.4.1 has no cap on async publishes in flight unless MaxPending is set (DESIGN section 8) */
    ijo.PublishAsync.MaxPending = 4096;
    ijo.PublishAsync.AckHandler = ingress_on_puback;
    ijo.PublishAsync.AckHandlerClosure = en;
    s = natsConnection_JetStream(&en->ijs, en->inc, &ijo);
    if (s != NATS_OK) {
        free_engine(en);
        return broker_err(e, s, 0, "cannot get a JetStream context");
    }

    en->nworkers = c->workers;
    en->workers = calloc((size_t)c->workers, sizeof *en->workers);
    if (!en->workers) {
        free_engine(en);
        return verror_set(e, V_ENOMEM, "out of memory");
    }
    for (int i = 0; i < en->nworkers; i++) {
        worker *w = &en->workers[i];
        w->en = en;
        w->id = i;
        w->enc = malloc(DECISION_BUF);
        if (!w->enc || arena_init(&w->arena, (size_t)c->max_msg_size * 4 + 4096) ||
            arena_init(&w->dup_arena, DECISION_BUF * 4)) {
            free_engine(en);
            return verror_set(e, V_ENOMEM, "out of memory");
        }
        w->slots = calloc((size_t)c->batch, sizeof *w->slots);
        jsOptions wjo;
        jsOptions_Init(&wjo);
        wjo.Wait = 5000;
        wjo.PublishAsync.MaxPending = c->batch; /* bounded in-flight window: one batch */
        wjo.PublishAsync.AckHandler = on_decision_puback;
        wjo.PublishAsync.AckHandlerClosure = w;
        if (!w->slots || natsConnection_JetStream(&w->js, en->nc, &wjo) != NATS_OK) {
            free_engine(en);
            return verror_set(e, V_ENOMEM, "cannot set up worker %d", i);
        }
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = c->txn_stream;
        so.Consumer = c->consumer; /* bind: never create, so unsubscribing never deletes the durable */
        so.ManualAck = true;
        jsErrCode jerr = 0;
        s = js_PullSubscribe(&w->sub, en->js, c->txn_subjects, c->consumer, NULL, &so, &jerr);
        if (s != NATS_OK) {
            free_engine(en);
            return broker_err(e, s, jerr, "cannot bind a pull subscription to the durable consumer");
        }
    }
    if ((rc = reloader_start(en, c, en->js, &en->reloader, e)) != V_OK) {
        free_engine(en);
        return rc;
    }
    if ((rc = dlq_worker_start(c, en->nc, &en->stats.dead_letters, en->stats.dead_letters_by, &en->dlq, e)) != V_OK) {
        free_engine(en);
        return rc;
    }
    s = natsConnection_QueueSubscribe(&en->ingress, en->inc, c->decide_subject, c->queue_group, ingress_on_request,
                                      en);
    if (s != NATS_OK) {
        free_engine(en);
        return broker_err(e, s, 0, "cannot subscribe to the decide subject");
    }
    for (int i = 0; i < en->nworkers; i++) {
        if (pthread_create(&en->workers[i].thread, NULL, worker_main, &en->workers[i]) != 0) {
            atomic_store(&en->stopping, true);
            for (int j = 0; j < i; j++)
                pthread_join(en->workers[j].thread, NULL);
            free_engine(en);
            return verror_set(e, V_ENOMEM, "cannot start worker threads");
        }
    }
    if ((rc = observe_attach(en->observe, en->inc, e)) != V_OK) {
        atomic_store(&en->stopping, true);
        for (int i = 0; i < en->nworkers; i++)
            pthread_join(en->workers[i].thread, NULL);
        free_engine(en);
        return rc;
    }
    atomic_store(&en->phase, PHASE_READY);
    /* the reloader runs already and may swap (and free) the policy: read it under the lock */
    char rules_version[64], model_version[64];
    engine_current_versions(en, rules_version, model_version, sizeof rules_version);
    log_info("engine started",
             "\"workers\":%d,\"batch\":%d,\"decide_subject\":\"%s\",\"stream\":\"%s\",\"consumer\":\"%s\","
             "\"rules_version\":\"%s\",\"model_version\":\"%s\"",
             c->workers, c->batch, c->decide_subject, c->txn_stream, c->consumer, rules_version, model_version);
    *out = en;
    return V_OK;
}

/* The longest velocity window p reads (0 if none). */
static int64_t longest_window(const policy *p)
{
    const featreg *r = policy_featreg(p);
    int64_t w = 0;
    for (int i = 0; i < r->n; i++)
        if (r->defs[i].kind == FK_VELOCITY && r->defs[i].window_ms > w)
            w = r->defs[i].window_ms;
    return w;
}

/* A velocity state for p's registry, filled from TXN up to upto_seq (0 = the stream's end), or left empty. */
static vstatus make_velocity(engine *en, const policy *p, uint64_t upto_seq, bool empty, velref **out, verror *e)
{
    velocity_cfg vc = {.max_keys = (size_t)en->cfg.max_keys};
    velocity *v = NULL;
    vstatus rc = velocity_new(policy_featreg(p), &vc, &v, e);
    if (rc != V_OK)
        return rc;
    int64_t window = longest_window(p);
    if (window > 0 && !empty) {
        rebuild_stats st;
        rc = rebuild_velocity(en->js, &en->cfg, policy_featreg(p), v, upto_seq, window, &st, e);
        if (rc != V_OK) {
            velocity_free(v);
            return rc;
        }
        velocity_stats_t vs;
        velocity_stats(v, &vs);
        log_info("velocity state rebuilt from the stream",
                 "\"stream\":\"%s\",\"upto_seq\":%llu,\"read\":%llu,\"counted\":%llu,\"undecided\":%llu,\"skipped\":%llu,"
                 "\"keys\":%llu,\"seconds\":%.3f,\"per_s\":%.0f",
                 en->cfg.txn_stream, (unsigned long long)st.upto_seq, (unsigned long long)st.read,
                 (unsigned long long)st.counted, (unsigned long long)st.undecided, (unsigned long long)st.skipped, (unsigned long long)vs.keys,
                 st.seconds, st.seconds > 0 ? (double)st.read / st.seconds : 0.0);
    }
    *out = velref_new(v);
    if (!*out) {
        velocity_free(v);
        return verror_set(e, V_ENOMEM, "out of memory");
    }
    return V_OK;
}

/* Swaps in p (taking over its reference); workers pick it up at their next batch. When p reads velocity
 * features the running state does not keep, a new state is built and filled from TXN first. */
static vstatus swap_policy(engine *en, policy *p, const char *why, verror *e)
{
    velref *nv = NULL;
    if (!en->vel || !velocity_covers(en->vel->v, policy_featreg(p))) {
        vstatus rc = make_velocity(en, p, 0, false, &nv, e);
        if (rc != V_OK) {
            atomic_fetch_add(&en->stats.reload_failures, 1);
            log_error("reload refused: velocity state could not be built", "\"error\":\"%s\"", log_esc(e->msg));
            policy_release(p);
            return rc;
        }
    }
    pthread_mutex_lock(&en->policy_mu);
    policy *old = en->policy;
    en->policy = p;
    velref *oldv = NULL;
    if (nv) {
        oldv = en->vel;
        en->vel = nv;
    }
    pthread_mutex_unlock(&en->policy_mu);
    velref_release(oldv);
    log_info("policy swapped", "\"why\":\"%s\",\"rules_version\":\"%s\",\"rules_source\":\"%s\",\"model_version\":\"%s\","
             "\"old_rules_version\":\"%s\"",
             log_esc(why), policy_rules_version(p), log_esc(policy_rules_source(p)), policy_model_version(p),
             policy_rules_version(old));
    atomic_fetch_add(&en->stats.reloads, 1);
    policy_release(old);
    return V_OK;
}

vstatus engine_reload_now(engine *en, const char *why, verror *e)
{
    if (en->reloader)
        return reloader_reload(en->reloader, why, e);
    return engine_reload(en, why, e);
}

vstatus engine_reload(engine *en, const char *why, verror *e)
{
    policy *p = NULL;
    rules_diag diag = {0};
    vstatus rc = policy_load(en->cfg.rules_file, en->cfg.model_file, &p, &diag);
    if (rc != V_OK) {
        atomic_fetch_add(&en->stats.reload_failures, 1);
        log_error("reload refused; the running rules and model stay in force",
                  "\"why\":\"%s\",\"errors\":\"%s\"", log_esc(why), log_esc(diag.text ? diag.text : ""));
        verror_set(e, rc, "%s", diag.text ? diag.text : "reload failed");
        rules_diag_free(&diag);
        return rc;
    }
    rules_diag_free(&diag);
    return swap_policy(en, p, why, e);
}

vstatus engine_reload_rules_text(engine *en, const char *src, size_t len, const char *name, verror *e)
{
    policy *p = NULL;
    rules_diag diag = {0};
    vstatus rc = policy_build(src, len, name, en->cfg.model_file, &p, &diag);
    if (rc != V_OK) {
        atomic_fetch_add(&en->stats.reload_failures, 1);
        log_error("rules refused; the running rules stay in force", "\"source\":\"%s\",\"errors\":\"%s\"",
                  log_esc(name), log_esc(diag.text ? diag.text : ""));
        verror_set(e, rc, "%s", diag.text ? diag.text : "rules refused");
        rules_diag_free(&diag);
        return rc;
    }
    rules_diag_free(&diag);
    return swap_policy(en, p, name, e);
}

void engine_current_versions(engine *en, char *rules, char *model, size_t cap)
{
    pthread_mutex_lock(&en->policy_mu);
    str_copy(rules, cap, policy_rules_version(en->policy));
    str_copy(model, cap, policy_model_version(en->policy));
    pthread_mutex_unlock(&en->policy_mu);
}

void engine_request_stop(engine *en) { atomic_store(&en->stopping, true); }

void engine_stop(engine *en)
{
    if (!en)
        return;
    /* 1. stop taking requests and wait until every accepted request is stored in the stream */
    if (en->ingress && natsSubscription_Drain(en->ingress) == NATS_OK)
        natsSubscription_WaitForDrainCompletion(en->ingress, 5000);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 5000;
    if (en->ijs && js_PublishAsyncComplete(en->ijs, &po) != NATS_OK)
        log_warn("some ingress publishes were not confirmed before shutdown", NULL);
    /* 2. stop fetching; each worker finishes the batch it holds (decide, publish, ack) */
    atomic_store(&en->stopping, true);
    atomic_store(&en->phase, PHASE_STOPPING);
    observe_stop(en->observe);
    en->observe = NULL;
    for (int i = 0; i < en->nworkers; i++)
        pthread_join(en->workers[i].thread, NULL);
    dlq_worker_stop(en->dlq);
    en->dlq = NULL;
    reloader_stop(en->reloader);
    en->reloader = NULL;
    /* 3. flush acks and replies, then close */
    natsConnection_FlushTimeout(en->nc, 2000);
    natsConnection_FlushTimeout(en->inc, 2000);
    const engine_stats *st = &en->stats;
    log_info("engine stopped",
             "\"approve\":%lld,\"review\":%lld,\"decline\":%lld,\"duplicates\":%lld,\"dead_letters\":%lld,"
             "\"naks\":%lld",
             (long long)st->decided[1], (long long)st->decided[2], (long long)st->decided[3],
             (long long)st->duplicates, (long long)st->dead_letters, (long long)st->naks);
    free_engine(en);
}

const engine_stats *engine_get_stats(const engine *en) { return &en->stats; }

const char *engine_phase_str(engine_phase p)
{
    switch (p) {
    case PHASE_CONNECTING: return "connecting";
    case PHASE_VERIFYING: return "verifying_streams";
    case PHASE_REBUILDING: return "rebuilding_state";
    case PHASE_STARTING: return "starting_workers";
    case PHASE_READY: return "ready";
    case PHASE_STOPPING: return "stopping";
    }
    return "unknown";
}

engine_phase engine_get_phase(const engine *en) { return (engine_phase)atomic_load(&en->phase); }

bool engine_connected(const engine *en)
{
    return en->nc && en->inc && natsConnection_Status(en->nc) == NATS_CONN_STATUS_CONNECTED &&
           natsConnection_Status(en->inc) == NATS_CONN_STATUS_CONNECTED;
}

bool engine_ready(const engine *en)
{
    return !atomic_load(&en->stopping) && engine_get_phase(en) == PHASE_READY && engine_connected(en);
}

bool engine_state_stats(engine *en, velocity_stats_t *out)
{
    pthread_mutex_lock(&en->policy_mu);
    velref *r = en->vel;
    if (r)
        atomic_fetch_add(&r->refs, 1);
    pthread_mutex_unlock(&en->policy_mu);
    if (!r)
        return false;
    velocity_stats(r->v, out);
    velref_release(r);
    return true;
}

const config *engine_config(const engine *en) { return &en->cfg; }

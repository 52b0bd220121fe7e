/* decisions.c - stored decisions: their headers, replies to requesters, reading one back by txn id or sequence,
 * and the dead letters of poison (shared by the workers and the ingress). */
#include "engine_int.h"

#include "broker.h"
#include "codec.h"
#include "decide.h"
#include "dlq.h"
#include "history.h"
#include "ident.h"
#include "log.h"
#include "observe.h"
#include "rebuild.h"
#include "sequencer.h"
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

void reply_error(natsConnection *nc, const char *reply_to, int code, const char *text)
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
void request_failed(engine *en, natsConnection *nc, const char *reply_to, int code, const char *text)
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

/* A reply subject taken from a message header or a request: a literal subject under one of the requesters'
 * inbox prefixes (--reply-prefix). Anything else could make the server close our connection (a bare LF), split
 * into subject and reply (a space), or write into one of our own streams (decision.>, dlq.>, txn.>). */
bool reply_subject_ok(const config *c, const char *s)
{
    return ident_subject_valid(s) && ident_subject_under(s, c->reply_prefix);
}

static const char *decision_header_keys[] = {"Nats-Msg-Id",           "Verdict-Outcome",        "Verdict-Score",
                                             "Verdict-Reasons",       "Verdict-Rules-Version",  "Verdict-Model-Version",
                                             "Verdict-Latency-Us",    "Verdict-Budget-Exceeded", "Verdict-Degraded"};

/* --- decision messages on the wire ---------------------------------------------------------------------
 *
 * nats.c keeps a message's headers in a hash of separately allocated keys and values (natsMsgHeader_Set) and
 * re-encodes them at publish: for the contract's seven headers, 2-3 us of the ~8 us of CPU a decision adds to a
 * bare republish (docs/benchmarks.md, "Decision headers"). So the worker writes the header block in the wire
 * format itself (the "NATS/1.0" line, "Key: value" lines, an empty line), right before the encoded decision in
 * its own buffer, and hands both to natsMsg_create: the constructor nats.c uses for every message it receives,
 * one allocation, and a header block it sends as it is until someone reads or changes a header. natsMsg_create
 * is exported by libnats but declared only in nats.c's private msg.h; its signature is the same from nats.c's
 * first release to today's. wire_check() makes sure, once per process, that a message built this way reads back
 * through the public API; where it does not, the public path (natsMsgHeader_Set, jsPubOptions.MsgId) is used. */
natsStatus natsMsg_create(natsMsg **newMsg, const char *subject, int subjLen, const char *reply, int replyLen,
                          const char *buf, int bufLen, int hdrLen);

static bool wire_usable;
static pthread_once_t wire_once = PTHREAD_ONCE_INIT;

static void wire_check(void)
{
    static const char blk[] = "NATS/1.0\r\nVerdict-Check: a b\r\nNats-Msg-Id: x-1\r\n\r\nbody";
    const int total = (int)sizeof blk - 1, hl = total - 4;
    natsMsg *m = NULL;
    const char *v = NULL, *id = NULL;
    wire_usable = natsMsg_create(&m, "verdict.check", 13, NULL, 0, blk, total, hl) == NATS_OK &&
                  strcmp(natsMsg_GetSubject(m), "verdict.check") == 0 && natsMsg_GetDataLength(m) == 4 &&
                  memcmp(natsMsg_GetData(m), "body", 4) == 0 && natsMsgHeader_Get(m, "Verdict-Check", &v) == NATS_OK &&
                  v && strcmp(v, "a b") == 0 && natsMsgHeader_Get(m, "Nats-Msg-Id", &id) == NATS_OK && id &&
                  strcmp(id, "x-1") == 0;
    natsMsg_Destroy(m);
    if (!wire_usable)
        log_warn("this libnats does not build messages from wire bytes as expected; decision headers go through "
                 "natsMsgHeader_Set (slower)",
                 NULL);
}

bool wire_messages_usable(void)
{
    pthread_once(&wire_once, wire_check);
    return wire_usable;
}

typedef struct wirebuf {
    char *p;
    size_t cap, len;
    bool full;
} wirebuf;

static void wire_put(wirebuf *w, const char *s, size_t n)
{
    if (w->full || n > w->cap - w->len) {
        w->full = true;
        return;
    }
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

/* One header line. A CR or LF in a value would end the line early: it becomes a space, as nats.c's own encoder
 * does. */
static void wire_header(wirebuf *w, const char *key, const char *val)
{
    wire_put(w, key, strlen(key));
    wire_put(w, ": ", 2);
    size_t at = w->len, n = strlen(val);
    wire_put(w, val, n);
    for (size_t i = at; !w->full && i < at + n; i++)
        if (w->p[i] == '\r' || w->p[i] == '\n')
            w->p[i] = ' ';
    wire_put(w, "\r\n", 2);
}

/* The contract's decision headers (DESIGN.md), to one writer or the other. */
typedef struct hdr_sink {
    wirebuf *wire; /* the wire path */
    natsMsg *msg;  /* or the public one */
    natsStatus s;
} hdr_sink;

static void sink_set(hdr_sink *k, const char *key, const char *val)
{
    if (k->wire)
        wire_header(k->wire, key, val);
    else if (k->s == NATS_OK)
        k->s = natsMsgHeader_Set(k->msg, key, val);
}

static void decision_headers(hdr_sink *k, const Decision *d)
{
    /* no printf here: it was 0.4 us of a decision's CPU (docs/benchmarks.md) */
    char score[32], lat[32], reasons[DECIDE_MAX_REASONS * (IDENT_NAME_MAX + 1) + 1];
    size_t o = 0;
    for (size_t i = 0; i < d->n_reasons; i++) {
        size_t n = strlen(d->reasons[i]->rule_id);
        if (n + 2 > sizeof reasons - o)
            break; /* cannot happen with ids the compiler accepts (ident.h); never overrun */
        if (i)
            reasons[o++] = ',';
        memcpy(reasons + o, d->reasons[i]->rule_id, n);
        o += n;
    }
    reasons[o] = 0;
    if (d->score >= 0)
        fmt_fixed6(d->score, score);
    else
        str_copy(score, sizeof score, "none");
    fmt_i64(d->latency_us, lat);
    sink_set(k, "Verdict-Outcome", outcome_str(d->outcome));
    sink_set(k, "Verdict-Score", score);
    /* an empty header value confuses header parsing in some clients: omit the header when no rule matched */
    if (reasons[0])
        sink_set(k, "Verdict-Reasons", reasons);
    sink_set(k, "Verdict-Rules-Version", d->rules_version);
    sink_set(k, "Verdict-Model-Version", d->model_version);
    sink_set(k, "Verdict-Latency-Us", lat);
    if (d->budget_exceeded)
        sink_set(k, "Verdict-Budget-Exceeded", "true");
    if (d->degraded)
        sink_set(k, "Verdict-Degraded", "true");
}

static natsStatus set_decision_headers(natsMsg *m, const Decision *d)
{
    hdr_sink k = {.msg = m, .s = NATS_OK};
    decision_headers(&k, d);
    return k.s;
}

/* Writes the header block (Nats-Msg-Id, then the decision's headers when d is not NULL) at the start of buf;
 * returns its length, or 0 when it does not fit. */
static size_t wire_block(char *buf, size_t cap, const char *msg_id, const Decision *d)
{
    wirebuf w = {.p = buf, .cap = cap};
    wire_put(&w, "NATS/1.0\r\n", 10);
    wire_header(&w, "Nats-Msg-Id", msg_id);
    if (d) {
        hdr_sink k = {.wire = &w};
        decision_headers(&k, d);
    }
    wire_put(&w, "\r\n", 2);
    return w.full ? 0 : w.len;
}

natsStatus decision_msg_new(natsMsg **out, const char *subj, const char *msg_id, const Decision *d, unsigned char *buf,
                            size_t cap, bool *id_in_msg, const char *reply_to, natsMsg **reply)
{
    *out = NULL;
    *id_in_msg = false;
    if (reply)
        *reply = NULL;
    size_t hl = wire_messages_usable() ? wire_block((char *)buf, cap, msg_id, d) : 0;
    if (hl) {
        size_t n = decision_encode(d, buf + hl, cap - hl);
        if (!n)
            return NATS_INSUFFICIENT_BUFFER;
        natsStatus s = natsMsg_create(out, subj, (int)strlen(subj), NULL, 0, (const char *)buf, (int)(hl + n), (int)hl);
        *id_in_msg = s == NATS_OK;
        /* the requester's answer is the same bytes to its inbox (what reply_decision would copy header by
         * header); without it the reply is made from the stored decision as before */
        if (s == NATS_OK && reply && reply_to &&
            natsMsg_create(reply, reply_to, (int)strlen(reply_to), NULL, 0, (const char *)buf, (int)(hl + n),
                           (int)hl) != NATS_OK)
            *reply = NULL;
        return s;
    }
    /* the public path: the id goes in by jsPubOptions.MsgId */
    size_t n = decision_encode(d, buf, cap);
    if (!n)
        return NATS_INSUFFICIENT_BUFFER;
    natsStatus s = natsMsg_Create(out, subj, NULL, (const char *)buf, (int)n);
    if (s == NATS_OK)
        s = set_decision_headers(*out, d);
    if (s != NATS_OK) {
        natsMsg_Destroy(*out);
        *out = NULL;
    }
    return s;
}

natsStatus republish_msg_new(natsMsg **out, const char *subj, const char *msg_id, const void *data, size_t len,
                             unsigned char *buf, size_t cap, bool *id_in_msg)
{
    *out = NULL;
    *id_in_msg = false;
    size_t hl = wire_messages_usable() ? wire_block((char *)buf, cap, msg_id, NULL) : 0;
    if (hl && len <= cap - hl) {
        memcpy(buf + hl, data, len);
        natsStatus s =
            natsMsg_create(out, subj, (int)strlen(subj), NULL, 0, (const char *)buf, (int)(hl + len), (int)hl);
        *id_in_msg = s == NATS_OK;
        return s;
    }
    return natsMsg_Create(out, subj, NULL, data, (int)len);
}

/* The one way a decision reaches a requester: the decision message's bytes and Verdict headers (copied from
 * the message just stored, or from the stored copy read back for a duplicate). */
void reply_decision(natsConnection *nc, const char *reply_to, natsMsg *decision, bool duplicate, natsMsg *in)
{
    natsMsg *r = NULL;
    natsStatus s = json_reply_create(&r, reply_to, decision, in); /* JSON when the request asked for it */
    for (size_t i = 0; s == NATS_OK && i < ARRAY_LEN(decision_header_keys); i++) {
        const char *v = NULL;
        if (natsMsgHeader_Get(decision, decision_header_keys[i], &v) == NATS_OK && v)
            s = natsMsgHeader_Set(r, decision_header_keys[i], v);
    }
    if (s == NATS_OK && duplicate)
        s = natsMsgHeader_Set(r, "Verdict-Duplicate", "true");
    if (s == NATS_OK)
        s = natsConnection_PublishMsg(nc, r);
    if (s != NATS_OK)
        log_warn("could not send a reply; the decision is stored and a retry reads it",
                 "\"error\":\"%s\"", log_esc(natsStatus_GetText(s)));
    natsMsg_Destroy(r);
}

/* --- dead letters ------------------------------------------------------------------------------------- */

/* The dead letter of a poison message (dlq_letter_new: the one builder, shared with the DLQ worker), published
 * asynchronously with the batch's decisions (publish_slots); the input is termed once it is stored. */
natsStatus build_dead_letter(const engine *en, natsMsg *msg, const js_meta *m, poison_reason why,
                                    const char *err, natsMsg **out)
{
    *out = NULL;
    return dlq_letter_new(out, &en->cfg, why, err, msg, m->stream_seq, m->delivered, NULL);
}

/* Looks up the stored decision of txn_id under any outcome. */
natsStatus find_decision(engine *en, jsCtx *js, const char *txn_id, natsMsg **out)
{
    static const char *outcomes[] = {"approve", "review", "decline"};
    for (size_t i = 0; i < ARRAY_LEN(outcomes); i++) {
        char subj[NAME_MAX_LEN + 96];
        snprintf(subj, sizeof subj, "%s.%s.%s", en->cfg.decision_prefix, outcomes[i], txn_id);
        jsDirectGetMsgOptions dgo;
        jsDirectGetMsgOptions_Init(&dgo);
        dgo.LastBySubject = subj;
        natsStatus s = js_DirectGetMsg(out, js, en->cfg.decisions_stream, NULL, &dgo);
        if (s == NATS_OK)
            return s;
        if (s != NATS_NOT_FOUND)
            return s;
    }
    return NATS_NOT_FOUND;
}

static bool decision_of(natsMsg *m, const char *txn_id)
{
    const char *subj = natsMsg_GetSubject(m);
    size_t sl = strlen(subj), tl = strlen(txn_id);
    return sl > tl && subj[sl - tl - 1] == '.' && strcmp(subj + sl - tl, txn_id) == 0;
}

/* The stored decision behind a Duplicate PubAck. The fast path is a Direct Get (by the sequence the PubAck
 * names, then by subject), which any replica may answer; a replica still catching up after a heal answers "not
 * found" for a decision the stream holds, so absence is only ever concluded from the stream leader (Get, not
 * Direct Get). NATS_NOT_FOUND then means the stream answered Duplicate for a write it does not hold (sequence
 * 0, or a write that never committed: nats-server before 2.11 could keep its dedup id through a leader change),
 * so the decision is NOT stored. Lookups use gjs (1 s per request), so a replica on a cut node costs a worker a
 * second, not five. */
natsStatus stored_decision(engine *en, const char *txn_id, uint64_t seq, natsMsg **out)
{
    *out = NULL;
    if (seq > 0) {
        jsDirectGetMsgOptions dgo;
        jsDirectGetMsgOptions_Init(&dgo);
        dgo.Sequence = seq;
        if (js_DirectGetMsg(out, en->gjs, en->cfg.decisions_stream, NULL, &dgo) == NATS_OK) {
            if (decision_of(*out, txn_id))
                return NATS_OK;
            natsMsg_Destroy(*out);
            *out = NULL;
        }
    }
    if (find_decision(en, en->gjs, txn_id, out) == NATS_OK)
        return NATS_OK;
    /* not seen through Direct Get: ask the leader before believing it */
    jsErrCode jerr = 0;
    natsStatus s;
    if (seq > 0) {
        s = js_GetMsg(out, en->gjs, en->cfg.decisions_stream, seq, NULL, &jerr);
        if (s == NATS_OK && decision_of(*out, txn_id))
            return NATS_OK;
        natsMsg_Destroy(*out);
        *out = NULL;
        if (s != NATS_OK && s != NATS_NOT_FOUND)
            return s;
    }
    static const char *outcomes[] = {"approve", "review", "decline"};
    for (size_t i = 0; i < ARRAY_LEN(outcomes); i++) {
        char subj[NAME_MAX_LEN + 96];
        snprintf(subj, sizeof subj, "%s.%s.%s", en->cfg.decision_prefix, outcomes[i], txn_id);
        s = js_GetLastMsg(out, en->gjs, en->cfg.decisions_stream, subj, NULL, &jerr);
        if (s == NATS_OK || s != NATS_NOT_FOUND)
            return s;
    }
    return NATS_NOT_FOUND;
}

/* --- the commit protocol ------------------------------------------------------------------------------ */

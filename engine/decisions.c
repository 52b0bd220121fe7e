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

natsStatus set_decision_headers(natsMsg *m, const Decision *d)
{
    char score[32], lat[32], reasons[DECIDE_MAX_REASONS * (IDENT_NAME_MAX + 1) + 1];
    size_t o = 0;
    reasons[0] = 0;
    for (size_t i = 0; i < d->n_reasons; i++) {
        int k = snprintf(reasons + o, sizeof reasons - o, "%s%s", i ? "," : "", d->reasons[i]->rule_id);
        if (k < 0 || (size_t)k >= sizeof reasons - o)
            break; /* cannot happen with ids the compiler accepts (ident.h); never overrun */
        o += (size_t)k;
    }
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

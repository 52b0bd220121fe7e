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
#include "ident.h"
#include "jsoncodec.h"
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

/* The largest decision a policy can produce: every reported match at the longest rule id and reason text the
 * compiler accepts (ident.h, rules.h), ids and versions at their limits, protobuf framing on each; so a decision
 * always fits and the most suspicious transactions (the most matches) are never the ones lost. */
#define DECISION_BUF (DECIDE_MAX_REASONS * (IDENT_NAME_MAX + RULES_REASON_MAX + 16) + 4 * NAME_MAX_LEN + 1024)
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
    /* PubAcks come on nats.c's thread. pub_mu guards the pairing of an in-flight message with its slot
     * (slot.sent); in_flight counts publishes whose handler has not returned yet, so no slot is reused or freed
     * while a late PubAck may still look at it. */
    pthread_mutex_t pub_mu;
    atomic_int in_flight;
    int64_t recv_ns;     /* monotonic time the batch in hand was taken: the budget's start */
    int64_t recv_wall_us;
    arena arena;       /* decode arena, reset per message */
    arena dup_arena;   /* decoding stored decisions on the duplicate path */
    unsigned char *enc; /* encoded decision */
    fval vals[FEAT_MAX];
    policy *policy; /* held for the batch in hand */
    velref *vel;    /* held with it */
    Reason reasons[DECIDE_MAX_REASONS];
    Reason *reason_ptrs[DECIDE_MAX_REASONS];
} worker;

/* A duplicate request waiting for the first copy's decision to be stored (see the resolver below). */
typedef struct late_reply {
    char txn_id[IDENT_TXN_ID_MAX + 1];
    char reply[IDENT_SUBJECT_MAX + 1];
    int64_t deadline_ns; /* monotonic */
    natsMsg *orig;       /* the retry's publish (owned): stored again if TXN does not hold the first copy */
    uint64_t seq;        /* the first copy's TXN sequence, as the Duplicate PubAck names it */
    bool verified;       /* the first copy was looked for */
} late_reply;

#define LATE_CAP 4096 /* duplicates waiting at once; beyond it a retry is told to come back (503) */
#define LATE_ROUND 64 /* looked up per round, outside the lock */

struct engine {
    config cfg;
    natsConnection *nc;  /* workers: send-asap */
    natsConnection *inc; /* ingress: buffered, with async publish */
    _Atomic(broker_link *) nc_link, inc_link; /* their state, for health checks that never wait on nats.c */
    jsCtx *js;
    jsCtx *ijs;
    jsCtx *gjs; /* look-ups of stored decisions on the worker connection: 1 s per request */
    natsSubscription *ingress;
    arena ingress_arena; /* ingress callbacks are serialised per subscription */
    worker *workers;
    int nworkers;
    int64_t ack_wait_ms;  /* the consumer's effective AckWait for a first delivery */
    int64_t heartbeat_ms; /* InProgress interval for held messages: a third of it */
    policy *policy;          /* the policy in force; swapped under policy_mu, held by workers per batch */
    pthread_mutex_t policy_mu;
    velref *vel; /* the velocity state matching policy's registry; swapped with it */
    replica *lists, *profiles; /* local replicas of verdict_lists and verdict_profiles */
    reloader *reloader;
    observe *observe;
    dlq_worker *dlq;
    /* the duplicate resolver: a ring of late_reply served by its own thread, never by a nats.c callback */
    pthread_t late_thread;
    bool late_started;
    pthread_mutex_t late_mu;
    pthread_cond_t late_cv;
    late_reply *late;
    int late_head, late_n;
    late_reply late_round[LATE_ROUND];
    atomic_bool stopping;
    atomic_int phase; /* engine_phase */
    /* stopping within a deadline (see closer_main) */
    const atomic_bool *start_stop; /* the caller's flag: set to abandon a start (SIGTERM while starting) */
    atomic_bool started;           /* engine_start returned the engine */
    atomic_llong stop_deadline_ns; /* mono_ns() by which the stop ends; 0 until one is requested */
    atomic_llong stop_t0_ns;       /* when it was requested */
    atomic_bool closer_quit;
    bool closer_running;
    pthread_t closer;
    pthread_mutex_t conn_mu; /* nc and inc as the closer sees them */
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

/* A reply subject taken from a message header or a request: a literal subject under one of the requesters'
 * inbox prefixes (--reply-prefix). Anything else could make the server close our connection (a bare LF), split
 * into subject and reply (a space), or write into one of our own streams (decision.>, dlq.>, txn.>). */
static bool reply_subject_ok(const config *c, const char *s)
{
    return ident_subject_valid(s) && ident_subject_under(s, c->reply_prefix);
}

static const char *decision_header_keys[] = {"Nats-Msg-Id",           "Verdict-Outcome",        "Verdict-Score",
                                             "Verdict-Reasons",       "Verdict-Rules-Version",  "Verdict-Model-Version",
                                             "Verdict-Latency-Us",    "Verdict-Budget-Exceeded", "Verdict-Degraded"};

static natsStatus set_decision_headers(natsMsg *m, const Decision *d)
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
static void reply_decision(natsConnection *nc, const char *reply_to, natsMsg *decision, bool duplicate, natsMsg *in)
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
static natsStatus build_dead_letter(const engine *en, natsMsg *msg, const js_meta *m, poison_reason why,
                                    const char *err, natsMsg **out)
{
    *out = NULL;
    return dlq_letter_new(out, &en->cfg, why, err, msg, m->stream_seq, m->delivered, NULL);
}

/* Looks up the stored decision of txn_id under any outcome. */
static natsStatus find_decision(engine *en, jsCtx *js, const char *txn_id, natsMsg **out)
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
static natsStatus stored_decision(engine *en, const char *txn_id, uint64_t seq, natsMsg **out)
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
enum slot_kind { SLOT_DECISION = 0, SLOT_DEAD_LETTER };

typedef struct slot {
    natsMsg *in;      /* the TXN message (owned by the fetched list) */
    natsMsg *dm;      /* the decision or dead letter; ours until published, then handed back by the PubAck handler */
    natsMsg *to_send; /* to publish in the next round */
    natsMsg *sent;    /* in flight: identity only, never dereferenced; pairs a PubAck with this slot (pub_mu) */
    js_meta meta;
    const char *reply_to; /* validated (reply_subject_ok); points into in's headers */
    char msg_id[NAME_MAX_LEN + 40]; /* txn_id for a decision, dlq-<stream>-<seq> for a dead letter */
    char txn_id[IDENT_TXN_ID_MAX + 1];
    int kind;
    poison_reason why;
    int64_t latency_us;
    int outcome;
    bool budget_exceeded, degraded;
    _Atomic int state;
    bool retryable; /* failed because the stream had no leader for a moment (see process_batch) */
    bool finished;  /* replied/acked/naked: nothing more to do for this message */
    bool restoring; /* published again under a derived id (stored_decision found nothing) */
    uint64_t dup_seq;
    char err[192];
} slot;

/* Step 1, per message: decode, validate, decide, encode. Poison gets its dead letter, published with the
 * batch. */
static void prepare(worker *w, natsMsg *msg, slot *sl)
{
    engine *en = w->en;
    const config *cfg = &en->cfg;
    memset(sl, 0, sizeof *sl);
    sl->in = msg;
    if (!broker_parse_ack_subject(natsMsg_GetReply(msg), &sl->meta)) {
        log_warn("message without JetStream metadata ignored", NULL);
        sl->finished = true;
        return;
    }
    js_meta *m = &sl->meta;
    if (m->delivered > 1)
        atomic_fetch_add(&en->stats.redeliveries, 1);
    /* Verdict-Reply-To is honoured only on what the ingress stored (its own subject) and only when it names a
     * requester's inbox; a header is data from whoever published the message */
    const char *rt = NULL;
    if (natsMsgHeader_Get(msg, "Verdict-Reply-To", &rt) == NATS_OK && rt) {
        if (strcmp(natsMsg_GetSubject(msg), cfg->ingress_subject) == 0 && reply_subject_ok(cfg, rt)) {
            sl->reply_to = rt;
        } else {
            long long n = atomic_fetch_add(&en->stats.reply_to_ignored, 1);
            if (n < 10 || n % 1000 == 0)
                log_warn("Verdict-Reply-To ignored: only the ingress's own messages may name a reply inbox, and "
                         "only under --reply-prefix",
                         "\"stream\":\"%s\",\"seq\":%llu,\"subject\":\"%s\",\"ignored_total\":%lld",
                         cfg->txn_stream, (unsigned long long)m->stream_seq, log_esc(natsMsg_GetSubject(msg)),
                         n + 1);
        }
    }
    if (cfg->passthrough) {
        /* the benchmark baseline: the same pull, async republish with a msg-id, reply and ack, and nothing
         * else: no decode, no features, no rules, no model */
        char subj[NAME_MAX_LEN + 48];
        snprintf(subj, sizeof subj, "%s.passthrough.%llu", cfg->decision_prefix, (unsigned long long)m->stream_seq);
        snprintf(sl->txn_id, sizeof sl->txn_id, "pt-%llu", (unsigned long long)m->stream_seq);
        str_copy(sl->msg_id, sizeof sl->msg_id, sl->txn_id);
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
        sl->kind = SLOT_DEAD_LETTER;
        sl->why = why;
        str_copy(sl->err, sizeof sl->err, err.msg);
        snprintf(sl->msg_id, sizeof sl->msg_id, "dlq-%s-%llu", cfg->txn_stream, (unsigned long long)m->stream_seq);
        natsStatus s = build_dead_letter(en, msg, m, why, err.msg, &sl->dm);
        atomic_store(&sl->state, s == NATS_OK ? SLOT_PENDING : SLOT_FAILED);
        return;
    }

    /* The budget runs on this engine's monotonic clock from the moment the batch was taken: comparing the
     * server's store time with our wall clock would make every decision late (or none) under clock skew. The
     * age since store is reported separately (queued_us). */
    int64_t budget_us = cfg->budget_ms * 1000;
    int64_t elapsed_us = (mono_ns() - w->recv_ns) / 1000;
    /* "about to be spent": with less than a fifth of the budget left, the model is skipped and the rules
     * decide alone (degraded), so the answer still arrives in time */
    bool skip_model = elapsed_us * 5 >= budget_us * 4;
    decide_out out;
    const policy *p = w->policy;
    decide_env env = {.vel = w->vel ? w->vel->v : NULL, .lists = en->lists, .profiles = en->profiles};
    int64_t store_us = m->timestamp_ns / 1000;
    decide_run(p, &env, t, txn_event_ms(t, store_us / 1000), skip_model, w->vals, &out);
    atomic_fetch_add_explicit(&en->stats.stage_ns[0], out.features_ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&en->stats.stage_ns[1], out.model_ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&en->stats.stage_ns[2], out.rules_ns, memory_order_relaxed);

    if (strcmp(cfg->fault, "slow_decide") == 0)
        sleep_ms((int)cfg->budget_ms + 10); /* tests: a decision that overruns its budget */
    Decision d = VERDICT__V1__DECISION__INIT;
    d.latency_us = (mono_ns() - w->recv_ns) / 1000;
    /* the flag is exactly "the stored latency exceeds the budget"; the fallback outcome is for a requester who
     * is waiting, never for direct-publish traffic nobody waits on */
    if (d.latency_us > budget_us) {
        out.budget_exceeded = true;
        if (sl->reply_to && strcmp(cfg->fallback, "none") != 0) {
            out.outcome = strcmp(cfg->fallback, "approve") == 0  ? VERDICT__V1__OUTCOME__OUTCOME_APPROVE
                          : strcmp(cfg->fallback, "review") == 0 ? VERDICT__V1__OUTCOME__OUTCOME_REVIEW
                                                                 : VERDICT__V1__OUTCOME__OUTCOME_DECLINE;
            if (out.n_reasons < DECIDE_MAX_REASONS) {
                out.reason_id[out.n_reasons] = "budget_fallback";
                out.reason_text[out.n_reasons++] = "Latency budget spent; configured fallback outcome applied";
            }
        }
    }
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
    d.queued_us = w->recv_wall_us - store_us;
    if (d.queued_us < 0)
        d.queued_us = 0; /* clocks differ */
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
    str_copy(sl->msg_id, sizeof sl->msg_id, t->txn_id);
    sl->outcome = d.outcome & 3;
    sl->latency_us = d.latency_us;
    sl->budget_exceeded = d.budget_exceeded;
    sl->degraded = d.degraded;
    if (s != NATS_OK) {
        str_copy(sl->err, sizeof sl->err, natsStatus_GetText(s));
        atomic_store(&sl->state, SLOT_FAILED);
        return;
    }
    atomic_store(&sl->state, SLOT_PENDING);
}

/* PubAck of a decision or dead letter (nats.c's thread): record the outcome in the slot that sent it. Never
 * blocks. A PubAck for a message no slot holds any more (it came after the batch gave up waiting) is dropped. */
static void on_decision_puback(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    worker *w = closure;
    bool matched = false;
    pthread_mutex_lock(&w->pub_mu);
    for (int i = 0; i < w->nslots; i++) {
        slot *sl = &w->slots[i];
        if (sl->sent != msg)
            continue;
        sl->sent = NULL;
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
        matched = true;
        break;
    }
    pthread_mutex_unlock(&w->pub_mu);
    if (!matched)
        natsMsg_Destroy(msg);
    atomic_fetch_sub(&w->in_flight, 1);
}

/* Keeps every message of the batch that is still held from being redelivered: with BackOff set the server's
 * AckWait for a first delivery is BackOff[0] (1 s by default), shorter than a slow PubAck or a leader election. */
static void keep_in_progress(worker *w, int count)
{
    for (int i = 0; i < count; i++) {
        slot *sl = &w->slots[i];
        if (!sl->finished && natsMsg_InProgress(sl->in, NULL) != NATS_OK)
            log_warn("in-progress not sent; AckWait may redeliver, which the dedup absorbs",
                     "\"seq\":%llu", (unsigned long long)sl->meta.stream_seq);
    }
}

static void nak(worker *w, slot *sl, const char *what)
{
    engine *en = w->en;
    const config *cfg = &en->cfg;
    int64_t delay = sl->kind == SLOT_DEAD_LETTER ? 1000 : backoff_delay_ms(cfg, sl->meta.delivered);
    log_warn(what,
             "\"stream\":\"%s\",\"seq\":%llu,\"txn_id\":\"%s\",\"delivered\":%llu,\"delay_ms\":%lld,\"error\":\"%s\"",
             cfg->txn_stream, (unsigned long long)sl->meta.stream_seq, sl->txn_id,
             (unsigned long long)sl->meta.delivered, (long long)delay, log_esc(sl->err));
    if (natsMsg_NakWithDelay(sl->in, delay, NULL) != NATS_OK)
        log_warn("nak failed; AckWait will redeliver", NULL);
    atomic_fetch_add(&en->stats.naks, 1);
}

/* Step 3, per message once its PubAck is in: reply, then ack (or term a dead letter's input, or nak). */
static void finish(worker *w, slot *sl)
{
    engine *en = w->en;
    const config *cfg = &en->cfg;
    if (sl->finished)
        return;
    sl->finished = true;
    int st = atomic_load(&sl->state);
    if (st == SLOT_DONE)
        return;
    if (st == SLOT_PENDING) {
        st = SLOT_FAILED;
        str_copy(sl->err, sizeof sl->err, "no PubAck within the publish timeout");
    }
    if (sl->kind == SLOT_DEAD_LETTER) {
        if (st == SLOT_FAILED) {
            nak(w, sl, "dead letter not stored; will retry");
            return;
        }
        atomic_fetch_add(&en->stats.dead_letters, 1);
        atomic_fetch_add(&en->stats.dead_letters_by[sl->why], 1);
        log_warn("dead-lettered", "\"stream\":\"%s\",\"seq\":%llu,\"reason\":\"%s\",\"error\":\"%s\"",
                 cfg->txn_stream, (unsigned long long)sl->meta.stream_seq, poison_reason_str(sl->why),
                 log_esc(sl->err));
        reply_error(en->nc, sl->reply_to, 400, sl->err);
        if (natsMsg_Term(sl->in, NULL) != NATS_OK)
            log_warn("term failed; the message will be redelivered and dead-lettered idempotently",
                     "\"seq\":%llu", (unsigned long long)sl->meta.stream_seq);
        return;
    }
    if (st == SLOT_FAILED) {
        /* A caller waiting on this decision gets a timely error instead of silence when the retry would come
         * after its budget; the transaction stays in the stream and will be decided (or dead-lettered). */
        int64_t retry_at_us = (mono_ns() - w->recv_ns) / 1000 + backoff_delay_ms(cfg, sl->meta.delivered) * 1000;
        if (sl->reply_to && retry_at_us >= cfg->budget_ms * 1000)
            reply_error(en->nc, sl->reply_to, 504,
                        "decision delayed: not stored within the latency budget; it will be decided and stored, "
                        "retry the request to read it");
        nak(w, sl, "decision not stored; nak for retry");
        return;
    }
    fault_point(en, "crash_after_publish");
    if (st == SLOT_DUPLICATE) {
        /* Decided before (a redelivery or a client retry): answer with the stored decision, never a new one.
         * The input is acked only once the decision has been seen in the stream, whatever the PubAck said. */
        natsMsg *stored = NULL;
        natsStatus gs = stored_decision(en, sl->txn_id, sl->dup_seq, &stored);
        if (gs == NATS_NOT_FOUND && sl->dm && !sl->restoring) {
            atomic_fetch_add(&en->stats.decisions_restored, 1);
            log_error("the decisions stream answered Duplicate but holds no decision for this transaction; "
                      "storing it again under a derived id",
                      "\"stream\":\"%s\",\"seq\":%llu,\"txn_id\":\"%s\",\"dup_seq\":%llu", cfg->txn_stream,
                      (unsigned long long)sl->meta.stream_seq, sl->txn_id, (unsigned long long)sl->dup_seq);
            /* ':' never occurs in a txn_id, so the derived id cannot be another transaction's */
            snprintf(sl->msg_id, sizeof sl->msg_id, "%s:restored", sl->txn_id);
            sl->restoring = true;
            sl->retryable = true;
            str_copy(sl->err, sizeof sl->err, "duplicate without a stored decision");
            atomic_store(&sl->state, SLOT_FAILED);
            sl->finished = false; /* process_batch publishes it again */
            return;
        }
        if (gs != NATS_OK) {
            str_copy(sl->err, sizeof sl->err, gs == NATS_NOT_FOUND ? "no stored decision" : natsStatus_GetText(gs));
            nak(w, sl, "stored decision not readable; nak for retry");
            return;
        }
        atomic_fetch_add(&en->stats.duplicates, 1);
        if (sl->reply_to)
            reply_decision(en->nc, sl->reply_to, stored, true, sl->in);
        natsMsg_Destroy(stored);
    } else {
        atomic_fetch_add(&en->stats.decided[sl->outcome], 1);
        int64_t lat = (mono_ns() - w->recv_ns) / 1000; /* taken -> stored */
        int b = 0;
        while (b < LATENCY_BUCKETS && lat > latency_bounds_us[b])
            b++;
        atomic_fetch_add(&en->stats.latency_bucket[b], 1);
        atomic_fetch_add(&en->stats.latency_sum_us, lat > 0 ? lat : 0);
        if (sl->budget_exceeded)
            atomic_fetch_add(&en->stats.budget_exceeded, 1);
        if (sl->degraded)
            atomic_fetch_add(&en->stats.degraded, 1);
        if (sl->reply_to && sl->dm)
            reply_decision(en->nc, sl->reply_to, sl->dm, false, sl->in);
    }
    if (sl->meta.delivered == 1 && strcmp(cfg->fault, "skip_first_ack") == 0)
        return; /* test fault: behave as if the ack was lost, so AckWait redelivers */
    if (natsMsg_Ack(sl->in, NULL) != NATS_OK)
        log_warn("ack failed; the redelivery will be answered from the stored decision", "\"seq\":%llu",
                 (unsigned long long)sl->meta.stream_seq);
    fault_point(en, "crash_after_ack");
}

/* Test fault "retry_some": decisions of txn ids starting "retry-" fail as if the stream had no leader for
 * their first 3 s in the engine, so a batch mixes stored and retrying slots (docs/testing.md). */
static bool fault_retry(const engine *en, const slot *sl)
{
    static _Atomic int64_t first_ns;
    if (strcmp(en->cfg.fault, "retry_some") != 0 || strncmp(sl->txn_id, "retry-", 6) != 0)
        return false;
    int64_t zero = 0, now = mono_ns();
    atomic_compare_exchange_strong(&first_ns, &zero, now);
    return now - atomic_load(&first_ns) < 3000000000LL;
}

/* Waits until every PubAck handler of this worker has returned, keeping held messages in progress, at most
 * until deadline_ms (each publish has MaxWait, so nats.c answers every one with a PubAck or a timeout). */
static void wait_pubacks(worker *w, int count, int64_t deadline_ms)
{
    int64_t next_hb = now_ms() + w->en->heartbeat_ms;
    while (atomic_load(&w->in_flight) > 0) {
        int64_t now = now_ms();
        if (now >= deadline_ms) {
            log_warn("some PubAcks did not arrive in time", "\"worker\":%d,\"in_flight\":%d", w->id,
                     atomic_load(&w->in_flight));
            return;
        }
        if (now >= next_hb) {
            keep_in_progress(w, count);
            next_hb = now + w->en->heartbeat_ms;
        }
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = (next_hb < deadline_ms ? next_hb : deadline_ms) - now;
        if (po.MaxWait < 1)
            po.MaxWait = 1;
        /* OK means nats.c's count reached 0; the last handler may still be returning */
        if (js_PublishAsyncComplete(w->js, &po) == NATS_OK && atomic_load(&w->in_flight) > 0)
            sleep_ms(0);
    }
}

/* Publishes every slot's to_send asynchronously and waits (bounded) for their PubAcks. */
static void publish_slots(worker *w, int count)
{
    const config *cfg = &w->en->cfg;
    pthread_mutex_lock(&w->pub_mu);
    for (int i = 0; i < count; i++)
        w->slots[i].sent = w->slots[i].to_send;
    pthread_mutex_unlock(&w->pub_mu);
    for (int i = 0; i < count; i++) {
        slot *sl = &w->slots[i];
        if (!sl->to_send)
            continue;
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = sl->msg_id;
        po.MaxWait = cfg->publish_timeout_ms;
        natsMsg *dm = sl->to_send;
        sl->to_send = NULL;
        natsStatus s;
        atomic_fetch_add(&w->in_flight, 1);
        if (strcmp(cfg->fault, "publish_fail") == 0)
            s = NATS_TIMEOUT;
        else if (fault_retry(w->en, sl))
            s = NATS_NO_RESPONDERS;
        else
            s = js_PublishMsgAsync(w->js, &dm, &po);
        if (s != NATS_OK) {
            /* not handed over (on failure nats.c leaves the message with us) */
            atomic_fetch_sub(&w->in_flight, 1);
            pthread_mutex_lock(&w->pub_mu);
            sl->sent = NULL;
            pthread_mutex_unlock(&w->pub_mu);
            str_copy(sl->err, sizeof sl->err, natsStatus_GetText(s));
            if (s == NATS_NO_RESPONDERS) {
                sl->retryable = true;
                sl->dm = dm; /* kept to publish again */
            } else {
                natsMsg_Destroy(dm);
            }
            atomic_store(&sl->state, SLOT_FAILED);
        }
    }
    wait_pubacks(w, count, now_ms() + cfg->publish_timeout_ms + 1000);
}

static bool slot_retrying(slot *sl)
{
    return !sl->finished && atomic_load(&sl->state) == SLOT_FAILED && sl->retryable && sl->dm;
}

/* A batch: decide every message, publish every decision asynchronously (at most one batch in flight per
 * worker), wait for all PubAcks, then reply and ack. One round trip per batch instead of per message. */
static void process_batch(worker *w, natsMsgList *list)
{
    engine *en = w->en;
    int count = list->Count;
    pthread_mutex_lock(&w->pub_mu);
    w->nslots = count;
    pthread_mutex_unlock(&w->pub_mu);
    /* one policy for the whole batch: a reload takes effect between batches, never inside a decision */
    pthread_mutex_lock(&en->policy_mu);
    w->policy = en->policy;
    policy_retain(w->policy);
    w->vel = en->vel;
    if (w->vel)
        atomic_fetch_add(&w->vel->refs, 1);
    pthread_mutex_unlock(&en->policy_mu);
    for (int i = 0; i < count; i++)
        prepare(w, list->Msgs[i], &w->slots[i]);
    policy_release(w->policy);
    w->policy = NULL;
    velref_release(w->vel);
    w->vel = NULL;
    fault_point(en, "crash_before_publish");
    for (int i = 0; i < count; i++) {
        slot *sl = &w->slots[i];
        sl->to_send = NULL;
        if (atomic_load(&sl->state) == SLOT_PENDING) {
            sl->to_send = sl->dm;
            sl->dm = NULL;
        }
    }
    publish_slots(w, count);
    /* Everything settled is answered and acked now; only what the stream could not take for want of a leader
     * is held for the retry below, so a failover never delays (or redelivers) decisions already stored. */
    for (int i = 0; i < count; i++)
        if (!slot_retrying(&w->slots[i]))
            finish(w, &w->slots[i]);
    /* A stream that lost its leader answers "no responders" at once (or not at all) until a new leader is
     * elected, which takes seconds on a cluster. Naking would spend one of the transaction's MaxDeliver attempts
     * per retry and dead-letter it during an ordinary failover, so those are published again from here, kept in
     * progress, for up to DECISION_RETRY_MS; only then are they naked. */
    int64_t give_up = now_ms() + DECISION_RETRY_MS;
    for (int delay = 100; !atomic_load(&en->stopping) && now_ms() < give_up; delay = delay < 800 ? delay * 2 : 1000) {
        int n = 0;
        const char *why = "";
        for (int i = 0; i < count; i++)
            if (slot_retrying(&w->slots[i])) {
                why = w->slots[i].err;
                n++;
            }
        if (n == 0)
            break;
        if (delay == 100)
            log_warn("decision stream unavailable; retrying the batch's publishes",
                     "\"worker\":%d,\"messages\":%d,\"error\":\"%s\"", w->id, n, log_esc(why));
        /* never longer than a heartbeat between two InProgress: the wait grows to 1 s, the AckWait may be 1 s */
        for (int waited = 0; waited < delay; waited += (int)en->heartbeat_ms) {
            keep_in_progress(w, count);
            sleep_ms(delay - waited < en->heartbeat_ms ? delay - waited : (int)en->heartbeat_ms);
        }
        for (int i = 0; i < count; i++) {
            slot *sl = &w->slots[i];
            sl->to_send = NULL;
            if (slot_retrying(sl)) {
                sl->to_send = sl->dm; /* handed back by the PubAck handler: ours to publish again */
                sl->dm = NULL;
                sl->retryable = false;
                sl->err[0] = 0;
                atomic_store(&sl->state, SLOT_PENDING);
            }
        }
        publish_slots(w, count);
        for (int i = 0; i < count; i++)
            if (!slot_retrying(&w->slots[i]))
                finish(w, &w->slots[i]);
    }
    for (int i = 0; i < count; i++) {
        finish(w, &w->slots[i]);
        if (!w->slots[i].finished)
            finish(w, &w->slots[i]); /* turned into a retry too late for this batch: naked */
    }
    /* a PubAck that has not come by now is dropped by the handler, never paired with the next batch's slots */
    pthread_mutex_lock(&w->pub_mu);
    for (int i = 0; i < count; i++) {
        natsMsg_Destroy(w->slots[i].dm);
        w->slots[i].dm = NULL;
        w->slots[i].sent = NULL;
    }
    w->nslots = 0;
    pthread_mutex_unlock(&w->pub_mu);
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
                log_warn("fetch failed; retrying", "\"worker\":%d,\"error\":\"%s\",\"js_code\":%d,\"detail\":\"%s\"",
                         w->id, log_esc(natsStatus_GetText(s)), (int)jerr, log_esc(nats_GetLastError(NULL)));
            natsMsgList_Destroy(&list);
            sleep_ms(200);
            continue;
        }
        w->recv_ns = mono_ns();
        w->recv_wall_us = now_us();
        process_batch(w, &list);
        natsMsgList_Destroy(&list);
    }
    /* late PubAck handlers hold w: let them return before the engine frees it. nats.c answers every publish
     * within its MaxWait (a PubAck or a timeout), so this ends; free_engine keeps w if it has not. */
    int64_t deadline = now_ms() + en->cfg.publish_timeout_ms + 1000;
    while (atomic_load(&w->in_flight) > 0 && now_ms() < deadline)
        sleep_ms(5);
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
    if (!reply_subject_ok(&en->cfg, reply)) {
        /* answered only when the subject is one we can publish to safely; the worker would ignore it anyway */
        request_failed(en, nc, ident_subject_valid(reply) ? reply : NULL, 400,
                       "reply subject refused: it must be an inbox under --reply-prefix");
        natsMsg_Destroy(req);
        return;
    }
    Transaction *t = NULL;
    poison_reason why;
    verror err = {0};
    json_request jr; /* the body as protobuf (a JSON one converted) and the reply format (jsoncodec.h) */
    if (json_request_read(req, &jr, &err) != V_OK ||
        txn_decode(&en->ingress_arena, jr.data, (size_t)jr.len, (size_t)en->cfg.max_msg_size, &t, &why, &err) != V_OK) {
        request_failed(en, nc, reply, jr.code ? jr.code : 400, err.msg);
        json_request_done(&jr);
        natsMsg_Destroy(req);
        return;
    }
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, en->cfg.ingress_subject, NULL, jr.data, jr.len);
    json_request_done(&jr);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Verdict-Reply-To", reply);
    if (s == NATS_OK && jr.reply_json)
        s = natsMsgHeader_Set(m, JSON_REPLY_HEADER, "json");
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = t->txn_id; /* nats.c sets Nats-Msg-Id from it */
    po.MaxWait = en->cfg.publish_timeout_ms;
    if (s == NATS_OK)
        s = js_PublishMsgAsync(en->ijs, &m, &po); /* on success nats.c owns m */
    if (s != NATS_OK) {
        request_failed(en, nc, reply, 503, "transaction not accepted: the stream is unavailable, retry");
        natsMsg_Destroy(m);
    }
    natsMsg_Destroy(req);
}

/* --- the duplicate resolver ----------------------------------------------------------------------------
 * A retried request whose first copy is still being decided must get that decision, not a new one, and must
 * not make anyone else wait: the PubAck handler only queues it (never blocks: all PubAcks of a connection come
 * on one nats.c thread), and this thread looks the decision up until it is stored or the budget is spent. */

static bool late_push(engine *en, const late_reply *r)
{
    pthread_mutex_lock(&en->late_mu);
    bool ok = en->late_n < LATE_CAP;
    if (ok) {
        en->late[(en->late_head + en->late_n) % LATE_CAP] = *r;
        en->late_n++;
        pthread_cond_signal(&en->late_cv);
    }
    pthread_mutex_unlock(&en->late_mu);
    return ok;
}

/* True unless TXN demonstrably does not hold the first copy: the Duplicate PubAck named sequence 0, or one past
 * the stream's end, or a message that is another transaction's (nats-server before 2.11 could keep the dedup id
 * of a write that never committed through a leader change). A message deleted on purpose (a dead letter's
 * original) is not brought back: `verdict audit` accounts for it. */
static bool first_copy_stored(engine *en, const late_reply *r)
{
    if (strcmp(en->cfg.fault, "dup_seq_zero") != 0 && r->seq > 0) {
        natsMsg *m = NULL;
        natsStatus s = js_GetMsg(&m, en->ijs, en->cfg.txn_stream, r->seq, NULL, NULL);
        if (s == NATS_OK) {
            const char *id = NULL;
            natsMsgHeader_Get(m, "Nats-Msg-Id", &id);
            size_t n = strlen(r->txn_id);
            bool ours = id && strncmp(id, r->txn_id, n) == 0 && (id[n] == 0 || strcmp(id + n, ":restored") == 0);
            natsMsg_Destroy(m);
            return ours;
        }
        if (s != NATS_NOT_FOUND)
            return true; /* cannot tell: never store twice on a guess */
        jsStreamInfo *si = NULL;
        if (js_GetStreamInfo(&si, en->ijs, en->cfg.txn_stream, NULL, NULL) != NATS_OK)
            return true;
        bool beyond = r->seq > si->State.LastSeq;
        jsStreamInfo_Destroy(si);
        if (!beyond)
            return true;
    }
    return false;
}

/* Stores the retry under a derived id (':' never occurs in a txn_id); the worker decides it as usual. */
static void restore_first_copy(engine *en, late_reply *r)
{
    char id[IDENT_TXN_ID_MAX + 16];
    snprintf(id, sizeof id, "%s:restored", r->txn_id);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = id;
    po.MaxWait = en->cfg.publish_timeout_ms;
    jsPubAck *pa = NULL;
    natsStatus s = js_PublishMsg(&pa, en->ijs, r->orig, &po, NULL);
    log_error("a retried transaction was confirmed before but TXN does not hold it; stored again under a "
              "derived id",
              "\"txn_id\":\"%s\",\"dup_seq\":%llu,\"stored\":%s,\"seq\":%llu", r->txn_id,
              (unsigned long long)r->seq, s == NATS_OK ? "true" : "false",
              (unsigned long long)(pa ? pa->Sequence : 0));
    if (s == NATS_OK)
        atomic_fetch_add(&en->stats.transactions_restored, 1);
    jsPubAck_Destroy(pa);
}

static void late_done(late_reply *r)
{
    natsMsg_Destroy(r->orig);
    r->orig = NULL;
}

static void *late_main(void *arg)
{
    engine *en = arg;
    for (;;) {
        pthread_mutex_lock(&en->late_mu);
        while (en->late_n == 0 && !atomic_load(&en->stopping)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&en->late_cv, &en->late_mu, &ts);
        }
        int n = 0;
        while (en->late_n > 0 && n < LATE_ROUND) {
            en->late_round[n++] = en->late[en->late_head];
            en->late_head = (en->late_head + 1) % LATE_CAP;
            en->late_n--;
        }
        bool stopping = atomic_load(&en->stopping);
        pthread_mutex_unlock(&en->late_mu);
        if (n == 0 && stopping)
            return NULL;
        bool waiting = false;
        for (int i = 0; i < n; i++) {
            late_reply *r = &en->late_round[i];
            natsMsg *stored = NULL;
            natsStatus s = stopping ? NATS_NOT_FOUND : find_decision(en, en->ijs, r->txn_id, &stored);
            if (s == NATS_NOT_FOUND && !stopping && !r->verified) {
                r->verified = true;
                if (!first_copy_stored(en, r))
                    restore_first_copy(en, r);
            }
            if (s == NATS_OK) {
                reply_decision(en->inc, r->reply, stored, true, r->orig);
                natsMsg_Destroy(stored);
                late_done(r);
            } else if (stopping) {
                reply_error(en->inc, r->reply, 503, "engine stopping; retry the request");
                late_done(r);
            } else if (mono_ns() < r->deadline_ns && (s == NATS_NOT_FOUND || s == NATS_TIMEOUT) && late_push(en, r)) {
                waiting = true;
            } else {
                reply_error(en->inc, r->reply, 409, "transaction already accepted and still being decided; retry");
                late_done(r);
            }
        }
        if (waiting)
            sleep_ms(5);
    }
}

/* PubAck of an ingress publish (nats.c's thread; never blocks). A Duplicate means this txn_id was accepted
 * before: its requester gets the stored decision through the resolver. */
static void ingress_on_puback(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    engine *en = closure;
    const char *reply = NULL, *txn_id = NULL;
    natsMsgHeader_Get(msg, "Verdict-Reply-To", &reply);
    natsMsgHeader_Get(msg, "Nats-Msg-Id", &txn_id);
    if (pae) {
        request_failed(en, en->inc, reply, 503, "transaction not accepted: the stream did not confirm it, retry");
    } else if (pa && pa->Duplicate && txn_id && reply) {
        atomic_fetch_add(&en->stats.duplicates, 1);
        late_reply r = {.deadline_ns = mono_ns() + en->cfg.budget_ms * 1000000LL, .seq = pa->Sequence, .orig = msg};
        str_copy(r.txn_id, sizeof r.txn_id, txn_id);
        str_copy(r.reply, sizeof r.reply, reply);
        if (late_push(en, &r))
            return; /* msg is the resolver's now */
        request_failed(en, en->inc, reply, 503, "too many retries waiting for their decisions; retry");
    }
    natsMsg_Destroy(msg);
}

/* --- lifecycle ---------------------------------------------------------------------------------------- */

#define CLOSER_TICK_MS 20

static bool start_abandoned(const engine *en)
{
    return en->start_stop && atomic_load(en->start_stop) && !atomic_load(&en->started);
}

/* A stop must end within seconds in every state (Docker kills at 10 s), but calls into nats.c block for their
 * own timeouts (requests 5 s, drains and flushes on a frozen server) and a velocity rebuild as long as the stream
 * is. One thread per engine bounds them all: it closes both connections, which returns every call blocked on
 * NATS with an error, when a start is abandoned (nothing is in flight yet), when the stop's deadline passes,
 * or when a stop is requested while NATS is down (nothing in flight can complete then). The commit protocol
 * stays intact: a message is acked only after its decision's PubAck, so whatever was cut short is redelivered
 * and answered from the stored decision. */
static void *closer_main(void *arg)
{
    engine *en = arg;
    bool nc_closed = false, inc_closed = false;
    while (!atomic_load(&en->closer_quit)) {
        int64_t dl = atomic_load(&en->stop_deadline_ns);
        bool late = dl && mono_ns() >= dl;
        if (start_abandoned(en) || late || (dl && !engine_connected(en))) {
            pthread_mutex_lock(&en->conn_mu);
            if ((en->inc && !inc_closed) || (en->nc && !nc_closed)) {
                if (late)
                    log_warn("stop deadline reached: closing the NATS connections; unacknowledged messages are "
                             "redelivered", NULL);
                if (en->inc && !inc_closed) {
                    natsConnection_Close(en->inc);
                    inc_closed = true;
                }
                if (en->nc && !nc_closed) {
                    natsConnection_Close(en->nc);
                    nc_closed = true;
                }
            }
            pthread_mutex_unlock(&en->conn_mu);
        }
        sleep_ms(CLOSER_TICK_MS);
    }
    return NULL;
}

static int64_t ms_left(int64_t deadline_ns)
{
    int64_t left = (deadline_ns - mono_ns()) / 1000000;
    return left > 0 ? left : 0;
}

static void free_engine(engine *en)
{
    if (en->late_started) {
        atomic_store(&en->stopping, true);
        pthread_mutex_lock(&en->late_mu);
        pthread_cond_signal(&en->late_cv);
        pthread_mutex_unlock(&en->late_mu);
        pthread_join(en->late_thread, NULL);
        en->late_started = false;
    }
    if (en->closer_running) {
        atomic_store(&en->closer_quit, true);
        pthread_join(en->closer, NULL);
        en->closer_running = false;
    }
    observe_stop(en->observe);
    en->observe = NULL;
    reloader_stop(en->reloader);
    en->reloader = NULL;
    dlq_worker_stop(en->dlq);
    replica_stop(en->lists); /* workers are joined by now; the watchers use en->nc */
    replica_stop(en->profiles);
    en->lists = en->profiles = NULL;
    bool handlers_pending = false;
    for (int i = 0; en->workers && i < en->nworkers; i++)
        handlers_pending |= atomic_load(&en->workers[i].in_flight) > 0;
    if (handlers_pending) {
        /* a PubAck handler may still run with a worker as its closure: keeping the workers (a bounded leak at
         * exit) is better than freeing memory a nats.c thread is about to touch */
        log_error("decision PubAcks still outstanding at shutdown; worker state is not freed", NULL);
    } else if (en->workers) {
        for (int i = 0; i < en->nworkers; i++) {
            worker *w = &en->workers[i];
            natsSubscription_Destroy(w->sub);
            jsCtx_Destroy(w->js);
            free(w->slots);
            pthread_mutex_destroy(&w->pub_mu);
            arena_free(&w->arena);
            arena_free(&w->dup_arena);
            free(w->enc);
        }
        free(en->workers);
    }
    natsSubscription_Destroy(en->ingress);
    jsCtx_Destroy(en->js);
    jsCtx_Destroy(en->ijs);
    jsCtx_Destroy(en->gjs);
    natsConnection_Destroy(en->nc);
    natsConnection_Destroy(en->inc);
    arena_free(&en->ingress_arena);
    policy_release(en->policy);
    velref_release(en->vel);
    pthread_mutex_destroy(&en->policy_mu);
    pthread_mutex_destroy(&en->last_error_mu);
    pthread_mutex_destroy(&en->conn_mu);
    pthread_mutex_destroy(&en->late_mu);
    pthread_cond_destroy(&en->late_cv);
    for (int i = 0; en->late && i < en->late_n; i++)
        late_done(&en->late[(en->late_head + i) % LATE_CAP]);
    free(en->late);
    free(en);
}

/* The consumer's effective AckWait for a first delivery, as the server applies it: with BackOff set the server
 * uses BackOff[0] (1 s by default) whatever AckWait says (DESIGN section 8). Held messages are kept in progress
 * at a third of it. Read back from the consumer, since an operator may have changed it. */
static vstatus effective_ack_wait(engine *en, verror *e)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, en->js, en->cfg.txn_stream, en->cfg.consumer, NULL, &jerr);
    if (s != NATS_OK)
        return broker_err(e, s, jerr, "cannot read the consumer's configuration");
    int64_t ns = ci->Config->AckWait;
    if (ci->Config->BackOffLen > 0 && ci->Config->BackOff[0] > 0)
        ns = ci->Config->BackOff[0];
    jsConsumerInfo_Destroy(ci);
    int64_t ms = ns / 1000000;
    if (ms < 300) {
        return verror_set(e, V_EINVAL,
                          "consumer %s on %s redelivers after %lld ms (its AckWait, or its first BackOff entry, "
                          "which the server uses instead); at least 300 ms is needed to keep messages in progress",
                          en->cfg.consumer, en->cfg.txn_stream, (long long)ms);
    }
    en->ack_wait_ms = ms;
    en->heartbeat_ms = ms / 3;
    return V_OK;
}

vstatus engine_start(const config *c, engine **out, verror *e) { return engine_start_until(c, NULL, out, e); }

/* Between phases: a start abandoned by the caller ends here rather than entering the next long phase. */
#define START_CHECK(en, e)                                                                                     \
    do {                                                                                                       \
        if (start_abandoned(en)) {                                                                             \
            free_engine(en);                                                                                   \
            return verror_set((e), V_ESTOPPED, "stopped before the start completed");                          \
        }                                                                                                      \
    } while (0)

vstatus engine_start_until(const config *c, const atomic_bool *stop, engine **out, verror *e)
{
    engine *en = calloc(1, sizeof *en);
    if (!en)
        return verror_set(e, V_ENOMEM, "out of memory");
    en->cfg = *c;
    en->start_stop = stop;
    pthread_mutex_init(&en->policy_mu, NULL);
    pthread_mutex_init(&en->last_error_mu, NULL);
    pthread_mutex_init(&en->conn_mu, NULL);
    vstatus rc = arena_init(&en->ingress_arena, txn_arena_size((size_t)c->max_msg_size));
    if (rc) {
        free_engine(en);
        return verror_set(e, rc, "out of memory");
    }
    pthread_mutex_init(&en->late_mu, NULL);
    pthread_cond_init(&en->late_cv, NULL);
    en->heartbeat_ms = 300;
    if (pthread_create(&en->closer, NULL, closer_main, en) != 0) {
        free_engine(en);
        return verror_set(e, V_ENOMEM, "cannot start a thread");
    }
    en->closer_running = true;
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
    START_CHECK(en, e);
    char name[128];
    snprintf(name, sizeof name, "verdict-%s", c->engine_id);
    broker_link *nl = NULL, *il = NULL;
    natsConnection *nc = NULL, *inc = NULL;
    rc = broker_connect_linked(c, name, true, &nl, &nc, e);
    pthread_mutex_lock(&en->conn_mu); /* the closer may close them from now on */
    en->nc = nc;
    pthread_mutex_unlock(&en->conn_mu);
    if (rc == V_OK)
        rc = broker_connect_linked(c, name, true, &il, &inc, e);
    pthread_mutex_lock(&en->conn_mu);
    en->inc = inc;
    pthread_mutex_unlock(&en->conn_mu);
    if (rc != V_OK) {
        free_engine(en);
        return rc;
    }
    atomic_store(&en->nc_link, nl); /* /readyz reads them from the HTTP thread */
    atomic_store(&en->inc_link, il);
    START_CHECK(en, e);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 5000;
    natsStatus s = natsConnection_JetStream(&en->js, en->nc, &jo);
    jsOptions gjo;
    jsOptions_Init(&gjo);
    gjo.Wait = 1000;
    if (s == NATS_OK)
        s = natsConnection_JetStream(&en->gjs, en->nc, &gjo);
    if (s != NATS_OK) {
        free_engine(en);
        return broker_err(e, s, 0, "cannot get a JetStream context");
    }
    atomic_store(&en->phase, PHASE_VERIFYING);
    if ((rc = broker_setup(c, en->js, e)) != V_OK) {
        free_engine(en);
        return rc;
    }
    START_CHECK(en, e);
    /* lists and profiles: local replicas kept current by KV watchers; a slow first load does not block the
     * start (decisions are marked degraded until it completes) */
    if ((rc = replica_start(&en->lists, en->nc, c->lists_bucket, REPLICA_LISTS, c->replicas, e)) != V_OK ||
        (rc = replica_start(&en->profiles, en->nc, c->profiles_bucket, REPLICA_PROFILES, c->replicas, e)) != V_OK) {
        free_engine(en);
        return rc;
    }
    for (int64_t until = mono_ns() + 3000000000LL; mono_ns() < until && !start_abandoned(en) &&
                                                   !(replica_ready(en->lists) && replica_ready(en->profiles));)
        sleep_ms(5);
    START_CHECK(en, e);
    if (!replica_ready(en->lists) || !replica_ready(en->profiles))
        log_warn("lists/profiles replicas not loaded yet; decisions are marked degraded until they are", NULL);
    /* velocity state before any work: rebuilt from TXN up to what the consumer has delivered, so a restart
     * neither resets nor double-counts (rebuild.h) */
    atomic_store(&en->phase, PHASE_REBUILDING);
    if (en->cfg.fault[0] && strcmp(en->cfg.fault, "slow_rebuild") == 0)
        for (int i = 0; i < 300 && !start_abandoned(en); i++)
            sleep_ms(10); /* tests: hold the start in this phase so /readyz can be seen saying so */
    START_CHECK(en, e);
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
    START_CHECK(en, e);
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

    if ((rc = effective_ack_wait(en, e)) != V_OK) {
        free_engine(en);
        return rc;
    }
    en->late = calloc(LATE_CAP, sizeof *en->late);
    en->nworkers = c->workers;
    en->workers = calloc((size_t)c->workers, sizeof *en->workers);
    if (!en->workers || !en->late) {
        free_engine(en);
        return verror_set(e, V_ENOMEM, "out of memory");
    }
    for (int i = 0; i < en->nworkers; i++) {
        worker *w = &en->workers[i];
        w->en = en;
        w->id = i;
        w->enc = malloc(DECISION_BUF);
        pthread_mutex_init(&w->pub_mu, NULL);
        if (!w->enc || arena_init(&w->arena, txn_arena_size((size_t)c->max_msg_size)) ||
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
    if (pthread_create(&en->late_thread, NULL, late_main, en) != 0) {
        free_engine(en);
        return verror_set(e, V_ENOMEM, "cannot start the duplicate resolver thread");
    }
    en->late_started = true;
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
    if ((rc = observe_attach(en->observe, en->inc, e)) != V_OK || start_abandoned(en)) {
        atomic_store(&en->stopping, true);
        for (int i = 0; i < en->nworkers; i++)
            pthread_join(en->workers[i].thread, NULL);
        free_engine(en);
        return rc != V_OK ? rc : verror_set(e, V_ESTOPPED, "stopped before the start completed");
    }
    /* ready means subscribed: the SUBs (decide endpoint, $SRV, pulls) have reached the server, so a request sent
     * the moment this is logged or /readyz says ready is not lost */
    if ((s = natsConnection_FlushTimeout(en->inc, 5000)) != NATS_OK ||
        (s = natsConnection_FlushTimeout(en->nc, 5000)) != NATS_OK) {
        atomic_store(&en->stopping, true);
        for (int i = 0; i < en->nworkers; i++)
            pthread_join(en->workers[i].thread, NULL);
        free_engine(en);
        return broker_err(e, s, 0, "the server did not confirm the engine's subscriptions");
    }
    atomic_store(&en->started, true);
    atomic_store(&en->phase, PHASE_READY);
    /* the reloader runs already and may swap (and free) the policy: read it under the lock */
    char rules_version[64], model_version[64];
    engine_current_versions(en, rules_version, model_version, sizeof rules_version);
    log_info("engine started",
             "\"workers\":%d,\"batch\":%d,\"decide_subject\":\"%s\",\"stream\":\"%s\",\"consumer\":\"%s\","
             "\"rules_version\":\"%s\",\"model_version\":\"%s\",\"effective_ack_wait_ms\":%lld",
             c->workers, c->batch, c->decide_subject, c->txn_stream, c->consumer, rules_version, model_version,
             (long long)en->ack_wait_ms);
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

/* A velocity state for p's velocity plan, filled from TXN up to upto_seq (0 = the stream's end), or left empty.
 * A rebuild that does not reach its end is an error: no state is better than one that counts too low. */
static vstatus make_velocity(engine *en, const policy *p, uint64_t upto_seq, bool empty, velref **out, verror *e)
{
    velocity_cfg vc = {.max_keys = (size_t)en->cfg.max_keys};
    velocity *v = NULL;
    vstatus rc = velocity_new(policy_velocity_plan(p), &vc, &v, e);
    if (rc != V_OK)
        return rc;
    int64_t window = longest_window(p);
    if (window > 0 && !empty) {
        rebuild_stats st;
        rc = rebuild_velocity(en->js, &en->cfg, policy_velocity_plan(p), v, upto_seq, window, &st, e);
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

/* Swaps in p (taking over its reference); workers pick it up at their next batch. The running velocity state
 * stays only when it keeps exactly p's velocity features (by name, whatever their ids in p's registry);
 * otherwise a new state is built and filled from TXN first, and the policy and its state swap together. */
static vstatus swap_policy(engine *en, policy *p, const char *why, verror *e)
{
    velref *nv = NULL;
    if (!en->vel || !velocity_compatible(en->vel->v, policy_velocity_plan(p))) {
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
             "\"old_rules_version\":\"%s\",\"velocity\":\"%s\"",
             log_esc(why), policy_rules_version(p), log_esc(policy_rules_source(p)), policy_model_version(p),
             policy_rules_version(old), nv ? "new" : "kept");
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

void engine_request_stop(engine *en, int64_t deadline_ns)
{
    if (!atomic_exchange(&en->stopping, true)) {
        atomic_store(&en->stop_t0_ns, mono_ns());
        atomic_store(&en->phase, PHASE_STOPPING);
        /* stop taking requests; those already received are still published (engine_stop waits for them).
         * Before the deadline is set: with NATS down the closer closes the connections as soon as it is. */
        if (en->ingress && natsSubscription_Drain(en->ingress) != NATS_OK)
            log_warn("the decide subscription could not be drained", NULL);
    }
    int64_t none = 0;
    atomic_compare_exchange_strong(&en->stop_deadline_ns, &none, deadline_ns); /* the first deadline holds */
}

void engine_stop(engine *en)
{
    if (!en)
        return;
    engine_request_stop(en, mono_ns() + (int64_t)ENGINE_STOP_MS * 1000000);
    /* One deadline for every step: each waits at most for what is left of it, and the closer ends whatever
     * still blocks on NATS when it passes. */
    int64_t dl = atomic_load(&en->stop_deadline_ns);
    /* 1. every accepted request stored in the stream (or refused) */
    if (en->ingress && ms_left(dl) > 0)
        natsSubscription_WaitForDrainCompletion(en->ingress, ms_left(dl));
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = ms_left(dl); /* 0 would mean no limit */
    if (en->ijs && (po.MaxWait == 0 || js_PublishAsyncComplete(en->ijs, &po) != NATS_OK))
        log_warn("some ingress publishes were not confirmed before shutdown", NULL);
    /* 2. no more fetching; each worker finishes the batch it holds (decide, publish, ack) */
    observe_stop(en->observe);
    en->observe = NULL;
    for (int i = 0; i < en->nworkers; i++)
        pthread_join(en->workers[i].thread, NULL);
    dlq_worker_stop(en->dlq);
    en->dlq = NULL;
    reloader_stop(en->reloader);
    en->reloader = NULL;
    /* 3. acks and replies on their way before the connections close */
    if (ms_left(dl) > 0)
        natsConnection_FlushTimeout(en->nc, ms_left(dl));
    if (ms_left(dl) > 0)
        natsConnection_FlushTimeout(en->inc, ms_left(dl));
    const engine_stats *st = &en->stats;
    log_info("engine stopped",
             "\"approve\":%lld,\"review\":%lld,\"decline\":%lld,\"duplicates\":%lld,\"dead_letters\":%lld,"
             "\"naks\":%lld,\"stop_ms\":%lld",
             (long long)st->decided[1], (long long)st->decided[2], (long long)st->decided[3],
             (long long)st->duplicates, (long long)st->dead_letters, (long long)st->naks,
             (long long)((mono_ns() - atomic_load(&en->stop_t0_ns)) / 1000000));
    free_engine(en);
}

const engine_stats *engine_get_stats(const engine *en) { return &en->stats; }

long long engine_dlq_decided_late(engine *en) { return en->dlq ? dlq_worker_decided_late(en->dlq) : 0; }

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
    return broker_link_up(atomic_load(&en->nc_link)) && broker_link_up(atomic_load(&en->inc_link));
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

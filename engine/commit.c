/* commit.c - the workers and the commit protocol: decide a sequenced batch, publish every decision
 * asynchronously, wait for the PubAcks, then reply and ack; naks, retries during elections, Duplicate checks.
 * The worker connection is send-asap: acks, replies and pull requests leave at once. */
#include "engine_int.h"

#include "partition.h"

#include "broker.h"
#include "codec.h"
#include "decide.h"
#include "dlq.h"
#include "history.h"
#include "ident.h"
#include "jsoncodec.h"
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

/* a.b.c into out (cap > 0), cut to cap - 1 as snprintf("%s.%s.%s") would, without printf's cost. */
static void subject3(char *out, size_t cap, const char *a, const char *b, const char *c)
{
    const char *parts[] = {a, ".", b, ".", c};
    size_t o = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        size_t n = strlen(parts[i]);
        if (n > cap - 1 - o)
            n = cap - 1 - o;
        memcpy(out + o, parts[i], n);
        o += n;
    }
    out[o] = 0;
}

static int64_t backoff_delay_ms(const config *c, uint64_t delivered)
{
    if (c->backoff_len == 0)
        return 1000;
    uint64_t i = delivered > 0 ? delivered - 1 : 0;
    if (i >= (uint64_t)c->backoff_len)
        i = (uint64_t)c->backoff_len - 1;
    return c->backoff_ms[i];
}

/* Step 1, per message: decode, validate, decide, encode. Poison gets its dead letter, published with the
 * batch. */
static void prepare(worker *w, int idx, slot *sl)
{
    natsMsg *msg = w->b->list.Msgs[idx];
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
        const char *subj = natsMsg_GetSubject(msg);
        if ((strcmp(subj, cfg->ingress_subject) == 0 || partition_is_ingress_subject(cfg, subj)) &&
            reply_subject_ok(cfg, rt)) {
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
        if (republish_msg_new(&sl->dm, subj, sl->msg_id, natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg),
                              w->enc, w->enc_cap, &sl->id_in_msg) != NATS_OK) {
            atomic_store(&sl->state, SLOT_FAILED);
            return;
        }
        atomic_store(&sl->state, SLOT_PENDING);
        return;
    }

    Transaction *t = w->b->txn[idx]; /* decoded by the sequencer, or NULL: decoded here */
    poison_reason why;
    verror err = {0};
    if (!t && txn_decode(&w->arena, natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg),
                         (size_t)cfg->max_msg_size, &t, &why, &err) != V_OK) {
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
    int64_t start_ns = mono_ns(), elapsed_us = (start_ns - w->recv_ns) / 1000;
    /* "about to be spent": with less than a fifth of the budget left, the model is skipped and the rules
     * decide alone (degraded), so the answer still arrives in time */
    bool skip_model = elapsed_us * 5 >= budget_us * 4;
    decide_out out;
    const policy *p = w->policy;
    /* the velocity features come from the sequencing stage (the state before this transaction in stream order),
     * never from the state as it is now */
    int vs = w->b->vs[idx];
    decide_env env = {.vel_pre = vs != VS_NONE ? &w->b->vv[idx] : NULL,
                      .vel_inexact = vs == VS_INEXACT,
                      .lists = en->lists,
                      .profiles = en->profiles,
                      .start_ns = start_ns};
    int64_t store_us = m->timestamp_ns / 1000;
    decide_run(p, &env, t, txn_event_ms(t, store_us / 1000), skip_model, w->vals, &out);
    sl->skip_model = skip_model;
    atomic_fetch_add_explicit(&en->stats.stage_ns[0], out.features_ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&en->stats.stage_ns[1], out.model_ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&en->stats.stage_ns[2], out.rules_ns, memory_order_relaxed);

    int64_t decided_ns = out.end_ns;
    if (strcmp(cfg->fault, "slow_decide") == 0) {
        sleep_ms((int)cfg->budget_ms + 10); /* tests: a decision that overruns its budget */
        decided_ns = mono_ns();
    }
    Decision d = VERDICT__V1__DECISION__INIT;
    d.latency_us = (decided_ns - w->recv_ns) / 1000;
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
    char subj[NAME_MAX_LEN + 96];
    subject3(subj, sizeof subj, cfg->decision_prefix, outcome_str(d.outcome), t->txn_id);
    str_copy(sl->txn_id, sizeof sl->txn_id, t->txn_id);
    str_copy(sl->msg_id, sizeof sl->msg_id, t->txn_id);
    /* a JSON request's answer is made from the stored decision (json_reply_create) */
    const char *fmt = NULL;
    bool json = sl->reply_to && natsMsgHeader_Get(msg, JSON_REPLY_HEADER, &fmt) == NATS_OK && fmt &&
                strcmp(fmt, "json") == 0;
    natsStatus s = decision_msg_new(&sl->dm, subj, sl->msg_id, &d, w->enc, w->enc_cap, &sl->id_in_msg,
                                    json ? NULL : sl->reply_to, &sl->reply);
    sl->outcome = d.outcome & 3;
    sl->score = out.score;
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
void on_decision_puback(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
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
        if (sl->kind != SLOT_DEAD_LETTER)
            engine_stats_decision_published(&w->en->stats, !pae, pae ? mono_ns() : 0);
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
            sl->id_in_msg = false; /* the new id goes in by jsPubOptions.MsgId, replacing the one in the message */
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
        if (sl->reply_to && sl->reply && !sl->restoring) {
            /* made with the decision; the publish takes a copy, the batch's end frees it */
            if (natsConnection_PublishMsg(en->nc, sl->reply) != NATS_OK)
                log_warn("could not send a reply; the decision is stored and a retry reads it",
                         "\"error\":\"%s\"", log_esc(nats_GetLastError(NULL)));
        } else if (sl->reply_to && sl->dm) {
            reply_decision(en->nc, sl->reply_to, sl->dm, false, sl->in);
        }
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
        /* a shadow policy's work overlaps the round trip, one message at a time (shadow_pub.c) */
        if (shadow_precompute_one(w))
            continue;
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
        if (!sl->id_in_msg)
            po.MsgId = sl->msg_id; /* nats.c adds the header (and then encodes all headers itself) */
        po.MaxWait = cfg->publish_timeout_ms;
        natsMsg *dm = sl->to_send;
        sl->to_send = NULL;
        natsStatus s;
        atomic_fetch_add(&w->in_flight, 1);
        if (strcmp(cfg->fault, "publish_fail") == 0 ||
            (strcmp(cfg->fault, "publish_fail_some") == 0 && sl->meta.delivered == 1 && sl->meta.stream_seq % 7 == 0))
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
            if (sl->kind != SLOT_DEAD_LETTER)
                engine_stats_decision_published(&w->en->stats, false, mono_ns());
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
static void process_batch(worker *w, batch *b)
{
    engine *en = w->en;
    int count = b->list.Count;
    pthread_mutex_lock(&w->pub_mu);
    w->nslots = count;
    pthread_mutex_unlock(&w->pub_mu);
    /* one policy for the whole batch, the one it was sequenced with: a reload takes effect between batches */
    w->b = b;
    w->policy = b->policy;
    w->vel = b->vel;
    w->recv_ns = b->recv_ns;
    w->recv_wall_us = b->recv_wall_us;
    if (en->shadow_on) {
        /* the candidate for this batch, held like the live policy: a shadow reload takes effect between batches */
        pthread_mutex_lock(&en->policy_mu);
        w->shadow = en->shadow_policy;
        if (w->shadow)
            policy_retain(w->shadow);
        pthread_mutex_unlock(&en->policy_mu);
        w->shadow_next = 0;
    }
    for (int i = 0; i < count; i++)
        prepare(w, i, &w->slots[i]);
    w->policy = NULL;
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
    /* the shadow decisions of what is stored, answered and acked: after the live work, never before it */
    shadow_batch(w, b, count);
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
    shadow_batch(w, b, count); /* those stored by the retries */
    policy_release(w->shadow);
    w->shadow = NULL;
    /* a PubAck that has not come by now is dropped by the handler, never paired with the next batch's slots */
    pthread_mutex_lock(&w->pub_mu);
    for (int i = 0; i < count; i++) {
        natsMsg_Destroy(w->slots[i].dm);
        natsMsg_Destroy(w->slots[i].reply);
        w->slots[i].dm = NULL;
        w->slots[i].reply = NULL;
        w->slots[i].sent = NULL;
    }
    w->nslots = 0;
    pthread_mutex_unlock(&w->pub_mu);
}

/* --- the workers ------------------------------------------------------------------------------------------ */

void *worker_main(void *arg)
{
    worker *w = arg;
    engine *en = w->en;
    for (;;) {
        pthread_mutex_lock(&en->q_mu);
        while (!en->ready_head && !atomic_load(&en->stopping)) {
            cond_wait_ms(&en->q_cv, &en->q_mu, 100); /* and look at stopping again */
        }
        /* stopping: batches not taken yet are left unacked (redelivered to whoever runs next) */
        batch *b = atomic_load(&en->stopping) ? NULL : en->ready_head;
        if (b) {
            en->ready_head = b->next;
            if (!en->ready_head)
                en->ready_tail = NULL;
        }
        pthread_mutex_unlock(&en->q_mu);
        if (!b)
            break;
        process_batch(w, b);
        w->b = NULL;
        batch_recycle(en, b);
    }
    /* late PubAck handlers hold w: let them return before the engine frees it. nats.c answers every publish
     * within its MaxWait (a PubAck or a timeout), so this ends; free_engine keeps w if it has not. */
    int64_t deadline = now_ms() + en->cfg.publish_timeout_ms + 1000;
    while (atomic_load(&w->in_flight) > 0 && now_ms() < deadline)
        sleep_ms(5);
    return NULL;
}

/* --- ingress: verdict.v1.decide ----------------------------------------------------------------------- */

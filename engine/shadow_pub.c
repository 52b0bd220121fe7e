/* shadow_pub.c - the engine's side of shadow policies (shadow.h): the SHADOW stream, the candidate in force
 * (loaded at start and on SIGHUP, compiled in full before it is swapped in), and the per-batch step that
 * decides the batch's transactions again with the candidate and publishes those decisions asynchronously.
 *
 * Placement: the worker computes the shadow decisions one at a time while it waits for the batch's PubAcks
 * (shadow_precompute_one), so a live answer waits at most one of them longer, and sends those of the stored
 * decisions after the batch's live decisions are replied to and acked; it costs the worker a second decode and
 * decide (a few microseconds each) and one async publish per batch on the buffered ingress connection,
 * whose PubAck nobody waits for. One message per batch, not per decision: a stored message costs the server about as much as the
 * live decision's own, and per-decision messages cost the live path 24-54% of its throughput where batches
 * cost a few per cent (docs/shadow.md, measured). A bounded number of shadow publishes is in flight; beyond it
 * shadow decisions are dropped (counted), never waited for. Every failure is a counter and a log line, never a
 * nak: the live message is already acked. */
#include "engine_int.h"

#include "rebuild.h"
#include "shadow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* shadow messages (batches) in flight across the engine; nats.c's own cap is set above it so a publish never
 * stalls */
#define SHADOW_IN_FLIGHT_MAX 256
/* a shadow message holds at most this many bytes of records (well under the server's 1 MB max_payload) */
#define SHADOW_MSG_BYTES (128 * 1024)

static vstatus ensure_shadow_stream(const config *c, jsCtx *js, verror *e)
{
    char subj[NAME_MAX_LEN + 4];
    snprintf(subj, sizeof subj, "%s.>", c->shadow_prefix);
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, js, c->shadow_stream, NULL, &jerr);
    if (s == NATS_OK) {
        bool has = false;
        for (int i = 0; i < si->Config->SubjectsLen; i++)
            has |= strcmp(si->Config->Subjects[i], subj) == 0;
        jsStreamInfo_Destroy(si);
        if (!has)
            return verror_set(e, V_ECONFLICT, "stream %s exists but does not capture subject '%s'", c->shadow_stream,
                              subj);
        return V_OK;
    }
    if (s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr)
        return broker_err(e, s, jerr, "cannot look up the shadow stream");
    const char *subjects[] = {subj};
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = c->shadow_stream;
    sc.Description = "Verdict: shadow (candidate policy) decisions, Nats-Msg-Id = txn_id; never sent to requesters";
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Retention = js_LimitsPolicy;
    sc.Storage = js_FileStorage;
    sc.MaxAge = c->txn_max_age_ms * 1000000LL;
    sc.AllowDirect = true;
    sc.Replicas = c->replicas;
    s = js_AddStream(&si, js, &sc, NULL, &jerr);
    if (s != NATS_OK)
        return broker_err(e, s, jerr, "cannot create the shadow stream");
    jsStreamInfo_Destroy(si);
    log_info("stream created", "\"stream\":\"%s\"", c->shadow_stream);
    return V_OK;
}

/* PubAck of a shadow message (nats.c's thread): count its decisions, free it. Never blocks. */
static void shadow_on_puback(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    engine *en = closure;
    const char *n = NULL;
    long long count = natsMsgHeader_Get(msg, "Verdict-Shadow-Decisions", &n) == NATS_OK && n ? atoll(n) : 0;
    (void)pa;
    if (pae)
        atomic_fetch_add(&en->stats.shadow_publish_failures, count);
    else
        atomic_fetch_add(&en->stats.shadow_stored, count);
    natsMsg_Destroy(msg);
    atomic_fetch_sub(&en->shadow_in_flight, 1);
}

/* Loads the configured candidate against the live policy in force and swaps it in; a refusal keeps the one in
 * force (none at start). */
static vstatus load_and_swap(engine *en, const char *why, verror *e)
{
    const config *c = &en->cfg;
    policy *live = NULL;
    pthread_mutex_lock(&en->policy_mu);
    live = en->next_policy ? en->next_policy : en->policy;
    policy_retain(live);
    pthread_mutex_unlock(&en->policy_mu);
    policy *p = NULL;
    vstatus rc = shadow_load(c->shadow_rules_file, c->shadow_model_file, c->rules_file, c->model_file, live, &p, e);
    policy_release(live);
    if (rc != V_OK) {
        atomic_fetch_add(&en->stats.shadow_reload_failures, 1);
        log_error("shadow policy refused; live decisions are unaffected and the shadow policy in force (if any) stays",
                  "\"why\":\"%s\",\"errors\":\"%s\"", log_esc(why), log_esc(e->msg));
        return rc;
    }
    pthread_mutex_lock(&en->policy_mu);
    policy *old = en->shadow_policy;
    en->shadow_policy = p;
    pthread_mutex_unlock(&en->policy_mu);
    atomic_store(&en->stats.shadow_active, 1);
    atomic_fetch_add(&en->stats.shadow_reloads, 1);
    log_info("shadow policy in force",
             "\"why\":\"%s\",\"rules_version\":\"%s\",\"rules_source\":\"%s\",\"model_version\":\"%s\",\"stream\":\"%s\"",
             log_esc(why), policy_rules_version(p), log_esc(policy_rules_source(p)), policy_model_version(p),
             c->shadow_stream);
    policy_release(old);
    return V_OK;
}

vstatus shadow_engine_start(engine *en, verror *e)
{
    const config *c = &en->cfg;
    if (!c->shadow_rules_file[0] && !c->shadow_model_file[0])
        return V_OK;
    if (c->passthrough)
        return V_OK;
    for (int i = 0; i < en->nworkers; i++) {
        worker *w = &en->workers[i];
        w->shadow_pre = malloc((size_t)c->batch * SHADOW_RECORD_MAX);
        w->shadow_pre_len = calloc((size_t)c->batch, sizeof *w->shadow_pre_len);
        w->shadow_pre_outcome = calloc((size_t)c->batch, 1);
        if (!w->shadow_pre || !w->shadow_pre_len || !w->shadow_pre_outcome ||
            shadow_eval_init(&w->se, SHADOW_MSG_BYTES + SHADOW_RECORD_MAX) != V_OK)
            return verror_set(e, V_ENOMEM, "out of memory");
    }
    jsOptions so;
    jsOptions_Init(&so);
    so.Wait = 5000;
    so.PublishAsync.MaxPending = SHADOW_IN_FLIGHT_MAX + 64;
    so.PublishAsync.AckHandler = shadow_on_puback;
    so.PublishAsync.AckHandlerClosure = en;
    natsStatus s = natsConnection_JetStream(&en->sjs, en->inc, &so);
    if (s != NATS_OK)
        return broker_err(e, s, 0, "cannot get a JetStream context for shadow decisions");
    /* From here on nothing about the candidate stops the engine: live decisions never depend on it. */
    verror se = {0};
    if (ensure_shadow_stream(c, en->js, &se) != V_OK) {
        log_error("shadow stream not available; deciding with the live policy only",
                  "\"stream\":\"%s\",\"error\":\"%s\"", c->shadow_stream, log_esc(se.msg));
        return V_OK;
    }
    en->shadow_on = true;
    load_and_swap(en, "start", &se);
    return V_OK;
}

void shadow_engine_reload(engine *en, const char *why)
{
    if (!en->shadow_on)
        return;
    verror e = {0};
    load_and_swap(en, why, &e);
}

void shadow_engine_drain(engine *en, int64_t wait_ms)
{
    if (!en->sjs || atomic_load(&en->shadow_in_flight) == 0)
        return;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = wait_ms > 0 ? wait_ms : 1;
    if (js_PublishAsyncComplete(en->sjs, &po) != NATS_OK)
        log_warn("some shadow decisions were not confirmed before shutdown", "\"in_flight\":%d",
                 atomic_load(&en->shadow_in_flight));
}

bool shadow_engine_free(engine *en)
{
    /* every shadow publish has MaxWait, so nats.c answers each (PubAck or timeout) within it */
    int64_t deadline = now_ms() + en->cfg.publish_timeout_ms + 1000;
    while (atomic_load(&en->shadow_in_flight) > 0 && now_ms() < deadline)
        sleep_ms(5);
    if (atomic_load(&en->shadow_in_flight) > 0) {
        log_error("shadow PubAcks still outstanding at shutdown; engine state is not freed", NULL);
        return false;
    }
    jsCtx_Destroy(en->sjs);
    en->sjs = NULL;
    policy_release(en->shadow_policy);
    en->shadow_policy = NULL;
    for (int i = 0; en->workers && i < en->nworkers; i++) {
        worker *w = &en->workers[i];
        shadow_eval_free(&w->se);
        free(w->shadow_pre);
        free(w->shadow_pre_len);
        free(w->shadow_pre_outcome);
        w->shadow_pre = NULL;
        w->shadow_pre_len = NULL;
        w->shadow_pre_outcome = NULL;
    }
    return true;
}

static int64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* --- the per-batch step ------------------------------------------------------------------------------- */

/* Message i's shadow decision into *out (and its decoded transaction into *t): false when it does not decode or
 * the candidate cannot decide it (then shadow_decide's reason applies). */
static bool shadow_one(worker *w, batch *b, int i, Transaction **t, decide_out *out)
{
    engine *en = w->en;
    slot *sl = &w->slots[i];
    poison_reason why;
    verror err = {0};
    /* the sequencer's decode when there is one; else decoded again, into the per-message arena */
    *t = b->txn[i];
    if (!*t && txn_decode(&w->arena, natsMsg_GetData(sl->in), (size_t)natsMsg_GetDataLength(sl->in),
                          (size_t)en->cfg.max_msg_size, t, &why, &err) != V_OK)
        return false;
    int vs = b->vs[i];
    shadow_input in = {.live = b->policy,
                       .vel = vs != VS_NONE ? &b->vv[i] : NULL,
                       .vel_inexact = vs == VS_INEXACT,
                       .lists = en->lists,
                       .profiles = en->profiles,
                       .event_ms = txn_event_ms(*t, sl->meta.timestamp_ns / 1000000),
                       .skip_model = sl->skip_model,
                       .live_score = sl->score};
    return shadow_decide(&w->se, w->shadow, &in, *t, out);
}

/* One message's shadow record, computed ahead while its live decision's PubAck is awaited, so the candidate's
 * CPU overlaps the round trip instead of following it. One message per call: the worker looks at its PubAcks
 * between two, so a live answer waits at most one shadow decision (a few microseconds) longer. Only what is being
 * or has been stored is computed; shadow_batch_run uses the record if the decision was stored (not a Duplicate),
 * and otherwise decides again. Returns false when nothing is left to compute. */
bool shadow_precompute_one(worker *w)
{
    if (!w->shadow || !w->en->sjs || !w->shadow_pre || !w->b)
        return false;
    engine *en = w->en;
    batch *b = w->b;
    for (; w->shadow_next < w->nslots; w->shadow_next++) {
        int i = w->shadow_next;
        slot *sl = &w->slots[i];
        int st = atomic_load(&sl->state);
        if (sl->shadowed || sl->shadow_pre || sl->kind != SLOT_DECISION || !sl->in ||
            (st != SLOT_PENDING && st != SLOT_STORED))
            continue;
        w->shadow_next++;
        int64_t t0 = thread_cpu_ns();
        Transaction *t = NULL;
        decide_out out;
        if (shadow_one(w, b, i, &t, &out)) {
            size_t n = shadow_record(w->shadow_pre + (size_t)i * SHADOW_RECORD_MAX, SHADOW_RECORD_MAX, t->txn_id,
                                     (Verdict__V1__Outcome)sl->outcome, &out, sl->meta.delivered);
            if (n > 0 && n <= UINT16_MAX) {
                w->shadow_pre_len[i] = (uint16_t)n;
                w->shadow_pre_outcome[i] = (unsigned char)out.outcome;
                sl->shadow_pre = true;
            }
        }
        atomic_fetch_add_explicit(&en->stats.shadow_cpu_ns, thread_cpu_ns() - t0, memory_order_relaxed);
        return true;
    }
    return false;
}

static void shadow_fail(engine *en, long long n, const char *err)
{
    long long k = atomic_fetch_add(&en->stats.shadow_publish_failures, n);
    if (k == 0 || k / 10000 != (k + n) / 10000)
        log_warn("shadow decisions not published; live decisions are unaffected",
                 "\"decisions\":%lld,\"error\":\"%s\",\"failures_total\":%lld", n, err, k + n);
}

/* Publishes the records waiting in w's buffer as one message, without waiting for its PubAck. */
static void shadow_flush(worker *w, const policy *cand, const policy *live)
{
    engine *en = w->en;
    const config *c = &en->cfg;
    shadow_eval *se = &w->se;
    if (se->n == 0)
        return;
    int n = se->n;
    int by[4];
    memcpy(by, se->by_outcome, sizeof by);
    size_t len = se->len;
    se->n = 0;
    se->len = 0;
    memset(se->by_outcome, 0, sizeof se->by_outcome);
    if (atomic_load(&en->shadow_in_flight) >= SHADOW_IN_FLIGHT_MAX) {
        atomic_fetch_add(&en->stats.shadow_dropped, n);
        return;
    }
    char subj[NAME_MAX_LEN + 16], count[16];
    snprintf(subj, sizeof subj, "%s.batch", c->shadow_prefix);
    snprintf(count, sizeof count, "%d", n);
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subj, NULL, se->buf, (int)len);
    /* few headers: each costs nats.c allocations (docs/benchmarks.md) */
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Verdict-Shadow-Decisions", count);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Verdict-Rules-Version", policy_rules_version(cand));
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Verdict-Model-Version", policy_model_version(cand));
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Verdict-Live-Rules-Version", policy_rules_version(live));
    if (s == NATS_OK) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = c->publish_timeout_ms;
        atomic_fetch_add(&en->shadow_in_flight, 1);
        s = strcmp(c->fault, "shadow_publish_fail") == 0 ? NATS_TIMEOUT : js_PublishMsgAsync(en->sjs, &m, &po);
        if (s != NATS_OK)
            atomic_fetch_sub(&en->shadow_in_flight, 1);
    }
    if (s != NATS_OK) {
        natsMsg_Destroy(m); /* on failure nats.c leaves it with us */
        shadow_fail(en, n, natsStatus_GetText(s));
        return;
    }
    for (int o = 1; o <= 3; o++)
        atomic_fetch_add(&en->stats.shadow_decided[o], by[o]);
}


static void shadow_batch_run(worker *w, batch *b, int count);

void shadow_batch(worker *w, batch *b, int count)
{
    if (!w->shadow || !w->en->sjs)
        return;
    /* the worker's CPU, not wall time: what the shadow takes from the live path, even on a busy machine */
    int64_t t0 = thread_cpu_ns();
    shadow_batch_run(w, b, count);
    atomic_fetch_add_explicit(&w->en->stats.shadow_cpu_ns, thread_cpu_ns() - t0, memory_order_relaxed);
}

static void shadow_batch_run(worker *w, batch *b, int count)
{
    engine *en = w->en;
    const policy *cand = w->shadow;
    shadow_eval *se = &w->se;
    for (int i = 0; i < count; i++) {
        slot *sl = &w->slots[i];
        if (sl->shadowed || !sl->finished || sl->kind != SLOT_DECISION || !sl->in)
            continue;
        /* Stored (or found stored: a Duplicate) now: its shadow decision. A Duplicate may be this delivery's own
         * retry or a redelivery whose first delivery made a shadow decision before its ack was lost, or did not
         * (a crash, a lost PubAck): nothing here tells them apart, so it is decided again, at least once, and
         * readers keep the first per txn_id. Naked or failed: its redelivery gets it. */
        int st = atomic_load(&sl->state);
        if (st != SLOT_STORED && st != SLOT_DUPLICATE)
            continue;
        sl->shadowed = true;
        if (sl->shadow_pre && st == SLOT_STORED) {
            /* computed while the PubAcks were awaited; a Duplicate is decided below instead, against what was
             * stored */
            size_t n = w->shadow_pre_len[i];
            if (n == 0 || se->len + n > se->cap)
                continue;
            memcpy(se->buf + se->len, w->shadow_pre + (size_t)i * SHADOW_RECORD_MAX, n);
            se->len += n;
            se->n++;
            se->by_outcome[w->shadow_pre_outcome[i] & 3]++;
            if (se->len >= SHADOW_MSG_BYTES)
                shadow_flush(w, cand, b->policy);
            continue;
        }
        Transaction *t = NULL;
        decide_out out;
        if (!shadow_one(w, b, i, &t, &out)) {
            if (!t)
                continue; /* does not decode: nothing to decide */
            long long k = atomic_fetch_add(&en->stats.shadow_skipped, 1);
            if (k == 0 || k % 10000 == 0)
                log_warn("shadow decision skipped: the live policy in force lacks a velocity feature the candidate "
                         "reads (reload the candidate, docs/shadow.md)",
                         "\"skipped_total\":%lld", k + 1);
            continue;
        }
        size_t n = shadow_record(se->buf + se->len, se->cap - se->len, t->txn_id,
                                 (Verdict__V1__Outcome)sl->outcome, &out, sl->meta.delivered);
        if (n == 0)
            continue; /* cannot happen: the buffer keeps room for the longest record */
        se->len += n;
        se->n++;
        se->by_outcome[out.outcome & 3]++;
        if (se->len >= SHADOW_MSG_BYTES)
            shadow_flush(w, cand, b->policy);
    }
    shadow_flush(w, cand, b->policy);
}

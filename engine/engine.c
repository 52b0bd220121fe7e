/* engine.c - the engine's lifecycle: start (connect, verify streams, rebuild state, start threads), stop within
 * a deadline, phases and statistics (see pipeline.h). */
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

const int64_t latency_bounds_us[LATENCY_BUCKETS] = {250,   500,   1000,   2000,   5000,   10000,
                                                    20000, 50000, 100000, 250000, 500000, 1000000};

void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* --- fault switch (tests only; docs/testing.md) ------------------------------------------------------ */

void fault_point(const engine *en, const char *point)
{
    if (en->cfg.fault[0] && strcmp(en->cfg.fault, point) == 0) {
        log_warn("test fault: killing the process", "\"point\":\"%s\"", point);
        raise(SIGKILL);
    }
}

/* --- replies ------------------------------------------------------------------------------------------ */

/* --- the narrow views observe.c and reloader.c have of the engine ------------------------------------- */

static engine_phase src_phase(void *c) { return engine_get_phase(c); }
static bool src_ready(void *c) { return engine_ready(c); }
static bool src_connected(void *c) { return engine_connected(c); }
static void src_versions(void *c, char *r, char *m, size_t cap) { engine_current_versions(c, r, m, cap); }
static bool src_state_stats(void *c, velocity_stats_t *out) { return engine_state_stats(c, out); }
static void src_last_error(void *c, char *out, size_t cap) { engine_last_error(c, out, cap); }
static long long src_dlq_decided_late(void *c) { return engine_dlq_decided_late(c); }
static vstatus tgt_reload_files(void *c, const char *why, verror *e) { return engine_reload(c, why, e); }
static vstatus tgt_reload_text(void *c, const char *src, size_t len, const char *name, verror *e)
{
    return engine_reload_rules_text(c, src, len, name, e);
}

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
    bool nc_closed = false, inc_closed = false, snc_closed = false;
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
            if (en->snc && !snc_closed) {
                natsConnection_Close(en->snc); /* a snapshot being stored */
                snc_closed = true;
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

/* The sequencing stage and the workers, once stopping is set. */
static void join_threads(engine *en)
{
    partset_stop_fetching(en); /* partitioned: nothing more is queued for the sequencer */
    if (en->seq_started) {
        pthread_join(en->seq_thread, NULL);
        en->seq_started = false;
    }
    pthread_mutex_lock(&en->q_mu);
    pthread_cond_broadcast(&en->q_cv);
    pthread_mutex_unlock(&en->q_mu);
    for (int i = 0; i < en->nworkers; i++) {
        if (en->workers[i].running) {
            pthread_join(en->workers[i].thread, NULL);
            en->workers[i].running = false;
        }
    }
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
    lease_thread_stop(en);
    partset_stop_fetching(en);
    reloader_stop(en->reloader);
    en->reloader = NULL;
    checkpoint_stop(en->ckpt);
    en->ckpt = NULL;
    dlq_worker_stop(en->dlq);
    replica_stop(en->lists); /* workers are joined by now; the watchers use en->nc */
    replica_stop(en->profiles);
    en->lists = en->profiles = NULL;
    /* shadow PubAck handlers hold en: if any is still due, en is kept (a bounded leak at exit) */
    bool shadow_done = shadow_engine_free(en);
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
            jsCtx_Destroy(w->js);
            free(w->slots);
            pthread_mutex_destroy(&w->pub_mu);
            arena_free(&w->arena);
            arena_free(&w->dup_arena);
            free(w->enc);
        }
        free(en->workers);
    }
    for (int i = 0; en->batches && i < en->nbatches; i++) {
        batch *b = &en->batches[i];
        natsMsgList_Destroy(&b->list);
        policy_release(b->policy);
        velref_release(b->vel);
        free(b->vv);
        free(b->vs);
        free(b->txn);
        arena_free(&b->txa);
    }
    free(en->batches);
    arena_free(&en->seq_arena);
    /* The catch-up reader and the members watcher are ephemeral consumers the library created: unsubscribing
     * them asks the server to delete them, up to the JetStream wait each when the server does not answer (a node
     * gone: test_cluster saw the stop overrun its deadline). Closed first, the connection sends nothing; the
     * server drops them itself once they are inactive. */
    if (en->nc && (en->catchup || en->parts))
        natsConnection_Close(en->nc);
    catchup_reader_close(en->catchup);
    partset_free(en);
    natsSubscription_Destroy(en->sub);
    policy_release(en->next_policy);
    velref_release(en->next_vel);
    pthread_mutex_destroy(&en->q_mu);
    pthread_cond_destroy(&en->q_cv);
    natsSubscription_Destroy(en->ingress);
    lease_close(en->leases);
    jsCtx_Destroy(en->ljs);
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
    if (shadow_done)
        free(en);
}

/* The consumer's effective AckWait for a first delivery, as the server applies it: with BackOff set the server
 * uses BackOff[0] (1 s by default) whatever AckWait says (DESIGN section 8). Held messages are kept in progress
 * at a third of it. Read back from the consumer, since an operator may have changed it. */
static vstatus effective_ack_wait(engine *en, verror *e)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    char name[NAME_MAX_LEN + 16]; /* partitioned: every partition consumer is made alike; the first speaks for all */
    broker_first_consumer(&en->cfg, name, sizeof name);
    natsStatus s = js_GetConsumerInfo(&ci, en->js, en->cfg.txn_stream, name, NULL, &jerr);
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

/* The block each batch decodes its transactions into (batch.txa): room for a batch of ordinary transactions
 * (a simulated one takes about BATCH_TXN_BYTES decoded); one that does not fit is decoded by the worker. */
#define BATCH_TXN_BYTES 2048
static size_t batch_txn_arena_size(const config *c) { return (size_t)c->batch * BATCH_TXN_BYTES + 16384; }

vstatus engine_start(const config *c, engine **out, verror *e) { return engine_start_until(c, NULL, out, e); }

/* Between phases: a start abandoned by the caller ends here rather than entering the next long phase. */
#define START_CHECK(en, e)                                                                                     \
    do {                                                                                                       \
        if (start_abandoned(en)) {                                                                             \
            free_engine(en);                                                                                   \
            return verror_set((e), V_ESTOPPED, "stopped before the start completed");                          \
        }                                                                                                      \
    } while (0)

/* Asks the server to confirm what the engine has subscribed (a flush of each connection). A node lost meanwhile (a
 * standby taking over while its server goes down) fails the flush with a disconnect, although nats.c sends the
 * subscriptions again when it reconnects: then it is asked again, for up to START_CONFIRM_MS, unless the start is
 * abandoned. Test fault "confirm_disconnect_once": the first answer is a disconnect. */
#define START_CONFIRM_MS 30000
static natsStatus confirm_subscriptions(engine *en)
{
    bool fault = strcmp(en->cfg.fault, "confirm_disconnect_once") == 0;
    int64_t give_up = now_ms() + START_CONFIRM_MS;
    for (;;) {
        natsStatus s = fault ? NATS_CONNECTION_DISCONNECTED : natsConnection_FlushTimeout(en->inc, 5000);
        fault = false;
        if (s == NATS_OK)
            s = natsConnection_FlushTimeout(en->nc, 5000);
        if (s == NATS_OK || (s != NATS_CONNECTION_DISCONNECTED && s != NATS_TIMEOUT) || start_abandoned(en) ||
            now_ms() >= give_up)
            return s;
        log_warn("the server did not confirm the engine's subscriptions yet; asking again",
                 "\"error\":\"%s\"", natsStatus_GetText(s));
        sleep_ms(200);
    }
}

/* Creates or verifies the streams and the consumer (broker_setup). A cluster that has just started or lost a node
 * may not answer JetStream's API for seconds (no meta leader yet): a failed call is tried again, for up to
 * START_CONFIRM_MS, unless the start is abandoned; what exists but differs from what is needed (V_ECONFLICT) or
 * is invalid fails at once. Test fault "setup_timeout_once": the first attempt fails as a timeout. */
/* A start step that failed in the broker (V_ENATS: a timeout while a cluster elects, a node going down as the
 * step runs) is tried again for up to START_CONFIRM_MS, unless the start is abandoned; any other failure (a
 * conflict, a bad file) ends the start at once. fault names the test fault that fails the first attempt. */
typedef vstatus (*start_step)(engine *en, void *arg, verror *e);

static vstatus start_retrying(engine *en, start_step step, void *arg, const char *fault, const char *what, verror *e)
{
    bool fail_once = strcmp(en->cfg.fault, fault) == 0;
    int64_t give_up = now_ms() + START_CONFIRM_MS;
    for (;;) {
        vstatus rc = fail_once ? verror_set(e, V_ENATS, "%s: Timeout (test fault)", what) : step(en, arg, e);
        fail_once = false;
        if (rc != V_ENATS || start_abandoned(en) || now_ms() >= give_up)
            return rc;
        log_warn("a start step failed in the broker; trying again", "\"step\":\"%s\",\"error\":\"%s\"", what,
                 log_esc(e->msg));
        sleep_ms(500);
    }
}

static vstatus setup_step(engine *en, void *arg, verror *e)
{
    (void)arg;
    return broker_setup(&en->cfg, en->js, e);
}

static vstatus setup_streams(engine *en, verror *e)
{
    return start_retrying(en, setup_step, NULL, "setup_timeout_once", "JetStream set-up", e);
}

/* The rules bucket's watcher: its first read also failed as a node went down under a standby that had just
 * taken the lease (test_cluster under ASan: "cannot watch the rules KV bucket: Timeout", and the engine exited). */
static vstatus reloader_step(engine *en, void *arg, verror *e)
{
    return reloader_start(arg, &en->cfg, en->js, &en->reloader, e);
}

/* The same for the other start steps after the lease is taken, which a standby runs while the node that failed
 * its owner may be failing too (test_cluster in CI: "cannot create the DLQ worker's consumer: Timeout" 15 s after
 * the lease bucket's leader node was killed, and the standby that had just taken over exited). */
static vstatus ack_wait_step(engine *en, void *arg, verror *e)
{
    (void)arg;
    return effective_ack_wait(en, e);
}

static vstatus bind_step(engine *en, void *arg, verror *e)
{
    (void)arg;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = en->cfg.txn_stream;
    so.Consumer = en->cfg.consumer; /* bind: never create, so unsubscribing never deletes the durable */
    so.ManualAck = true;
    jsErrCode jerr = 0;
    natsStatus s = js_PullSubscribe(&en->sub, en->js, en->cfg.txn_subjects, en->cfg.consumer, NULL, &so, &jerr);
    if (s != NATS_OK) {
        en->sub = NULL;
        return broker_err(e, s, jerr, "cannot bind a pull subscription to the durable consumer");
    }
    return V_OK;
}

static vstatus dlq_step(engine *en, void *arg, verror *e)
{
    (void)arg;
    return dlq_worker_start(&en->cfg, en->nc, &en->stats.dead_letters, en->stats.dead_letters_by, &en->stats.sweep,
                            &en->dlq, e);
}

vstatus engine_start_until(const config *c, const atomic_bool *stop, engine **out, verror *e)
{
    engine *en = calloc(1, sizeof *en);
    if (!en)
        return verror_set(e, V_ENOMEM, "out of memory");
    en->cfg = *c;
    en->start_stop = stop;
    pthread_mutex_init(&en->policy_mu, NULL);
    pthread_mutex_init(&en->q_mu, NULL);
    pthread_cond_init(&en->q_cv, NULL);
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
    observe_source osrc = {.ctx = en,
                           .stats = &en->stats,
                           .phase = src_phase,
                           .ready = src_ready,
                           .connected = src_connected,
                           .versions = src_versions,
                           .state_stats = src_state_stats,
                           .last_error = src_last_error,
                           .dlq_decided_late = src_dlq_decided_late};
    if ((rc = observe_start(&osrc, c, &en->observe, e)) != V_OK) {
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
    if ((rc = setup_streams(en, e)) != V_OK) {
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
    velref *vel = NULL;
    if ((rc = make_velocity(en, en->policy, true, &vel, e)) != V_OK) {
        free_engine(en);
        return rc;
    }
    pthread_mutex_lock(&en->policy_mu); /* /metrics may be reading it already */
    en->vel = vel;
    pthread_mutex_unlock(&en->policy_mu);
    START_CHECK(en, e);
    /* hot standby: with a lease, take work only as the consumer's owner; the state is kept current meanwhile */
    if (c->lease_ttl_ms > 0 && c->partitions <= 0 && (rc = standby_wait(en, e)) != V_OK) {
        free_engine(en);
        return rc;
    }
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

    if ((rc = start_retrying(en, ack_wait_step, NULL, "ack_wait_timeout_once", "consumer configuration", e)) != V_OK) {
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
        /* the pass-through republishes whole transactions through the same buffer */
        w->enc_cap = DECISION_BUF + DECISION_HDR_BUF + (c->passthrough ? (size_t)c->max_msg_size : 0);
        w->enc = malloc(w->enc_cap);
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
    }
    if ((rc = shadow_engine_start(en, e)) != V_OK) {
        free_engine(en);
        return rc;
    }
    /* the sequencing stage: one pull subscription, and a batch for each worker plus one being filled */
    en->nbatches = en->nworkers + 1 + (c->partitions > 0 ? c->partitions : 0); /* + one per partition fetcher */
    en->batches = calloc((size_t)en->nbatches, sizeof *en->batches);
    if (!en->batches || arena_init(&en->seq_arena, txn_arena_size((size_t)c->max_msg_size)) != V_OK) {
        free_engine(en);
        return verror_set(e, V_ENOMEM, "out of memory");
    }
    for (int i = 0; i < en->nbatches; i++) {
        batch *b = &en->batches[i];
        b->vv = malloc((size_t)c->batch * sizeof *b->vv);
        b->vs = calloc((size_t)c->batch, 1);
        b->txn = calloc((size_t)c->batch, sizeof *b->txn);
        if (!b->vv || !b->vs || !b->txn || arena_init(&b->txa, batch_txn_arena_size(c)) != V_OK) {
            free_engine(en);
            return verror_set(e, V_ENOMEM, "out of memory");
        }
        b->next = en->free_b;
        en->free_b = b;
    }
    /* partitioned: each owned partition's fetcher binds its own (partset.c) */
    if (c->partitions <= 0 &&
        (rc = start_retrying(en, bind_step, NULL, "bind_timeout_once", "consumer bind", e)) != V_OK) {
        free_engine(en);
        return rc;
    }
    reload_target tgt = {
        .ctx = en, .reload_files = tgt_reload_files, .reload_text = tgt_reload_text, .versions = src_versions};
    if ((rc = checkpoint_start(en, &en->ckpt, e)) != V_OK) {
        free_engine(en);
        return rc;
    }
    if ((rc = start_retrying(en, reloader_step, &tgt, "reloader_timeout_once", "rules bucket watch", e)) != V_OK) {
        free_engine(en);
        return rc;
    }
    if ((rc = start_retrying(en, dlq_step, NULL, "dlq_timeout_once", "DLQ worker", e)) != V_OK) {
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
            join_threads(en);
            free_engine(en);
            return verror_set(e, V_ENOMEM, "cannot start worker threads");
        }
        en->workers[i].running = true;
    }
    if (en->leases && (rc = lease_thread_start(en, e)) != V_OK) {
        atomic_store(&en->stopping, true);
        join_threads(en);
        free_engine(en);
        return rc;
    }
    if (c->partitions > 0 && (rc = partset_start(en, e)) != V_OK) {
        atomic_store(&en->stopping, true);
        join_threads(en);
        free_engine(en);
        return rc;
    }
    if (pthread_create(&en->seq_thread, NULL, seq_main, en) != 0) {
        atomic_store(&en->stopping, true);
        join_threads(en);
        free_engine(en);
        return verror_set(e, V_ENOMEM, "cannot start the sequencing thread");
    }
    en->seq_started = true;
    if ((rc = observe_attach(en->observe, en->inc, e)) != V_OK || start_abandoned(en)) {
        atomic_store(&en->stopping, true);
        join_threads(en);
        free_engine(en);
        return rc != V_OK ? rc : verror_set(e, V_ESTOPPED, "stopped before the start completed");
    }
    /* ready means subscribed: the SUBs (decide endpoint, $SRV, pulls) have reached the server, so a request sent
     * the moment this is logged or /readyz says ready is not lost */
    if ((s = confirm_subscriptions(en)) != NATS_OK) {
        atomic_store(&en->stopping, true);
        join_threads(en);
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
    join_threads(en);
    /* the consumer's lease, as soon as the last acks are on their way: a standby takes over at once (it keeps its
     * own state, so it needs nothing of what follows) */
    if (en->leases && ms_left(dl) > 0) {
        natsConnection_FlushTimeout(en->nc, ms_left(dl));
        if (ms_left(dl) > 0)
            lease_give_up(en);
    }
    if (en->parts && ms_left(dl) > 0) { /* the same for every partition it owned */
        natsConnection_FlushTimeout(en->nc, ms_left(dl));
        if (ms_left(dl) > 0)
            partset_give_up(en);
    }
    shadow_engine_drain(en, ms_left(dl));
    /* the state no longer moves: checkpoint it, so the next start replays only what comes after */
    checkpoint_final(en->ckpt, dl);
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
    /* 4. nothing more to send: the connections close before the teardown, whose unsubscribes of consumers the
     * library created (the KV replicas' watchers, the catch-up reader, the members watcher) would each ask the
     * server to delete one and wait up to the JetStream timeout for a node that is gone (test_cluster: the
     * standby's stop overran its deadline after its node was killed) */
    pthread_mutex_lock(&en->conn_mu);
    if (en->nc)
        natsConnection_Close(en->nc);
    if (en->inc)
        natsConnection_Close(en->inc);
    pthread_mutex_unlock(&en->conn_mu);
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
    case PHASE_STANDBY: return "standby";
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
    velref *r = velref_current(en);
    if (!r)
        return false;
    velocity_stats(r->v, out);
    velref_release(r);
    return true;
}

const config *engine_config(const engine *en) { return &en->cfg; }

/* observe.c - metrics, health and $SRV discovery (see observe.h). */
#include "observe.h"

#include "broker.h"

#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <microhttpd.h>
#include <pthread.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef VERDICT_VERSION
#define VERDICT_VERSION "0.1.0"
#endif

/* Consumer figures and the decisions stream's leader, polled every POLL_MS by one thread (never per
 * transaction); each poll waits at most POLL_MS. */
#define POLL_MS 1000
/* /readyz says 503 when the consumer or the decisions stream has not answered for this long (no leader, no
 * route to it), or when decision publishes have been failing or timing out for this long, the last failure
 * less than PUB_FAIL_RECENT_MS ago (a failure streak with nothing tried since is no evidence: a retry, or a
 * redelivery within the consumer's BackOff, comes sooner while work is pending). */
#define UNAVAILABLE_MS 3000
#define PUB_FAIL_RECENT_MS 10000
/* How long observe_stop waits for a running $SRV handler before it gives up freeing (never expected). */
#define SRV_DONE_WAIT_S 2

struct observe {
    observe_source src;
    config cfg;
    natsConnection *nc;
    natsSubscription *subs[9];
    int nsubs;
    int srv_done;            /* subscriptions whose last on_srv has returned (under mu) */
    pthread_cond_t done_cv;
    struct MHD_Daemon *httpd;
    char started[40]; /* RFC 3339 */
    /* the consumer poller */
    jsCtx *js;
    pthread_t poller;
    bool poller_running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    atomic_llong pending, ack_pending, redelivered, waiting, poll_errors;
    atomic_bool polled; /* at least one poll succeeded */
    /* mono_ns of the last answer from the consumer (its info) and from the decisions stream's leader (its
     * info); set to the attach time first. Written by the poller, read by /readyz: never a nats.c call there. */
    atomic_llong consumer_ok_ns, decisions_ok_ns;
    /* The last answer said its group cannot commit (a leader whose replicas are silent): no waiting for
     * UNAVAILABLE_MS then, the replicas' silence has already been waited for (has_quorum). */
    atomic_bool consumer_no_quorum, decisions_no_quorum;
    atomic_bool attached;
};

/* What /readyz judges. The engine's own conditions (phase, connections) come from the engine (observe_source.ready); the others say
 * whether it can decide: the consumer answers, the decisions stream has a leader, decisions get stored. */
typedef struct readiness_t {
    bool ready, engine, consumer, decisions_stream, publishing;
} readiness_t;

static readiness_t judge(observe *o)
{
    readiness_t r = {.engine = o->src.ready(o->src.ctx), .consumer = true, .decisions_stream = true, .publishing = true};
    int64_t now = mono_ns();
    if (atomic_load(&o->attached)) {
        r.consumer = !atomic_load(&o->consumer_no_quorum) &&
                     now - atomic_load(&o->consumer_ok_ns) < UNAVAILABLE_MS * 1000000LL;
        r.decisions_stream = !atomic_load(&o->decisions_no_quorum) &&
                             now - atomic_load(&o->decisions_ok_ns) < UNAVAILABLE_MS * 1000000LL;
    }
    const engine_stats *st = o->src.stats;
    int64_t since = atomic_load(&st->decision_failing_since_ns), last = atomic_load(&st->decision_fail_ns);
    r.publishing = !(since && now - since >= UNAVAILABLE_MS * 1000000LL && now - last < PUB_FAIL_RECENT_MS * 1000000LL);
    r.ready = r.engine && r.consumer && r.decisions_stream && r.publishing;
    return r;
}

/* ------------------------------------------------------------------------------------------- metrics */

typedef struct out {
    char *buf;
    size_t cap, len;
} out;

static void put(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(out *o, const char *fmt, ...)
{
    if (o->len >= o->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n < o->cap - o->len ? (size_t)n : o->cap - o->len - 1;
}

static void counter(out *o, const char *name, const char *help, long long v)
{
    put(o, "# HELP %s %s\n# TYPE %s counter\n%s %lld\n", name, help, name, name, v);
}

static void gauge(out *o, const char *name, const char *help, long long v)
{
    put(o, "# HELP %s %s\n# TYPE %s gauge\n%s %lld\n", name, help, name, name, v);
}

static size_t metrics(observe *ob, char *buf, size_t cap)
{
    const engine_stats *st = ob->src.stats;
    out o = {buf, cap, 0};
    put(&o, "# HELP verdict_decisions_total Decisions stored, by outcome.\n# TYPE verdict_decisions_total counter\n");
    static const char *names[] = {"", "approve", "review", "decline"};
    for (int i = 1; i <= 3; i++)
        put(&o, "verdict_decisions_total{outcome=\"%s\"} %lld\n", names[i], (long long)atomic_load(&st->decided[i]));
    counter(&o, "verdict_duplicates_total", "Deliveries answered from the stored decision (redeliveries, retries).",
            atomic_load(&st->duplicates));
    put(&o, "# HELP verdict_dead_letters_total Messages stored in the dead-letter stream, by reason.\n"
            "# TYPE verdict_dead_letters_total counter\n");
    for (int r = POISON_NONE + 1; r < DEAD_REASONS; r++)
        put(&o, "verdict_dead_letters_total{reason=\"%s\"} %lld\n", poison_reason_str((poison_reason)r),
            (long long)atomic_load(&st->dead_letters_by[r]));
    counter(&o, "verdict_naks_total", "Messages naked for a retry (decision not stored).", atomic_load(&st->naks));
    counter(&o, "verdict_redeliveries_total", "Messages delivered more than once.", atomic_load(&st->redeliveries));
    counter(&o, "verdict_budget_exceeded_total", "Decisions made after the latency budget was spent.",
            atomic_load(&st->budget_exceeded));
    counter(&o, "verdict_features_inexact_total",
            "Redeliveries older than the feature ring (--feature-ring), decided with the state as it is (degraded).",
            atomic_load(&st->features_inexact));
    counter(&o, "verdict_sequence_catch_ups_total",
            "Reads of the transactions stream for sequences the consumer did not hand over (or a new state's).",
            atomic_load(&st->sequence_catch_ups));
    counter(&o, "verdict_sequence_gap_msgs_total", "Transactions counted by those reads (another engine decided them, "
            "or they were delivered out of order).", atomic_load(&st->sequence_gap_msgs));
    counter(&o, "verdict_sequence_gap_failures_total",
            "Such reads that failed: the transactions they were to count are missing from the velocity state.",
            atomic_load(&st->sequence_gap_failures));
    counter(&o, "verdict_sequence_catchup_reader_opens_total",
            "Ordered consumers opened by the catch-up's reader (kept open between catch-ups).",
            atomic_load(&st->sequence_catchup_reader_opens));
    counter(&o, "verdict_snapshots_total", "Velocity checkpoints saved into the verdict_state bucket.",
            atomic_load(&st->snapshots));
    counter(&o, "verdict_snapshot_failures_total", "Velocity checkpoints that could not be taken or saved.",
            atomic_load(&st->snapshot_failures));
    if (atomic_load(&st->snapshots) > 0) {
        gauge(&o, "verdict_snapshot_position", "TXN sequence up to which the last saved checkpoint counts.",
              atomic_load(&st->snapshot_position));
        gauge(&o, "verdict_snapshot_age_seconds", "Seconds since the last checkpoint was saved.",
              (now_ms() - atomic_load(&st->snapshot_unix_ms)) / 1000);
    }
    gauge(&o, "verdict_lease_epoch",
          "Epoch of the consumer's lease this engine holds (--lease-ttl); 0 while it stands by or without a lease.",
          atomic_load(&st->lease_epoch));
    counter(&o, "verdict_lease_losses_total", "Leases another engine took over while this one held them.",
            atomic_load(&st->lease_losses));
    if (ob->cfg.partitions > 0)
        gauge(&o, "verdict_partitions_owned", "Partitions of TXN this engine decides now (--partitions).",
              atomic_load(&st->partitions_owned));
    counter(&o, "verdict_degraded_total", "Decisions made without some input (model, state, replicas).",
            atomic_load(&st->degraded));
    counter(&o, "verdict_requests_total", "Decide requests received on the ingress subject.",
            atomic_load(&st->requests));
    counter(&o, "verdict_request_errors_total", "Decide requests refused with an error reply.",
            atomic_load(&st->request_errors));
    counter(&o, "verdict_reply_to_ignored_total",
            "Verdict-Reply-To headers not honoured (not stored by the ingress, or not an inbox under --reply-prefix).",
            atomic_load(&st->reply_to_ignored));
    counter(&o, "verdict_decisions_restored_total",
            "Duplicate PubAcks with no stored decision behind them; the decision was stored again under a derived id.",
            atomic_load(&st->decisions_restored));
    counter(&o, "verdict_transactions_restored_total",
            "Retried requests confirmed before whose first copy TXN did not hold; stored again under a derived id.",
            atomic_load(&st->transactions_restored));
    counter(&o, "verdict_dead_letters_avoided_total",
            "Transactions at max-deliver whose decision was found stored, so no dead letter was written.",
            ob->src.dlq_decided_late(ob->src.ctx));
    counter(&o, "verdict_sweep_passes_total", "Passes of the sweep for what the server's advisories missed.",
            atomic_load(&st->sweep.passes));
    counter(&o, "verdict_sweep_examined_total", "TXN messages the sweep looked at.", atomic_load(&st->sweep.examined));
    counter(&o, "verdict_sweep_dead_lettered_total",
            "Dead letters the sweep stored for messages finished without a decision or a dead letter (also in "
            "verdict_dead_letters_total).",
            atomic_load(&st->sweep.dead_lettered));
    counter(&o, "verdict_sweep_originals_deleted_total",
            "Originals the sweep deleted because their dead letter was stored already (a lost advisory).",
            atomic_load(&st->sweep.originals_deleted));
    counter(&o, "verdict_sweep_errors_total", "Sweep passes or messages cut short by a failure (retried next pass).",
            atomic_load(&st->sweep.errors));
    counter(&o, "verdict_policy_reloads_total", "Rules/model versions swapped in.", atomic_load(&st->reloads));
    counter(&o, "verdict_policy_reload_failures_total", "Rules/model versions refused (the old stayed).",
            atomic_load(&st->reload_failures));
    /* shadow policy (docs/shadow.md) */
    put(&o, "# HELP verdict_shadow_decisions_total Shadow (candidate policy) decisions published, by outcome.\n"
            "# TYPE verdict_shadow_decisions_total counter\n");
    for (int i = 1; i <= 3; i++)
        put(&o, "verdict_shadow_decisions_total{outcome=\"%s\"} %lld\n", names[i],
            (long long)atomic_load(&st->shadow_decided[i]));
    counter(&o, "verdict_shadow_stored_total", "Shadow decisions stored in the shadow stream.",
            atomic_load(&st->shadow_stored));
    counter(&o, "verdict_shadow_publish_failures_total",
            "Shadow decisions not stored (publish error or no PubAck); live decisions are unaffected.",
            atomic_load(&st->shadow_publish_failures));
    counter(&o, "verdict_shadow_dropped_total", "Shadow decisions not published: too many in flight.",
            atomic_load(&st->shadow_dropped));
    counter(&o, "verdict_shadow_skipped_total",
            "Shadow decisions not made: the live policy lacks a velocity feature the candidate reads.",
            atomic_load(&st->shadow_skipped));
    counter(&o, "verdict_shadow_reload_failures_total", "Candidate policies refused (the one in force stayed).",
            atomic_load(&st->shadow_reload_failures));
    put(&o, "# HELP verdict_shadow_cpu_seconds_total Worker CPU spent on shadow decisions (their cost to the live "
            "path).\n# TYPE verdict_shadow_cpu_seconds_total counter\nverdict_shadow_cpu_seconds_total %.6f\n",
        (double)atomic_load(&st->shadow_cpu_ns) / 1e9);
    gauge(&o, "verdict_shadow_active", "1 when a shadow policy is in force.", atomic_load(&st->shadow_active));
    put(&o, "# HELP verdict_decision_latency_seconds From the engine taking the transaction to its decision "
            "being stored (monotonic clock).\n# TYPE verdict_decision_latency_seconds histogram\n");
    long long cum = 0;
    for (int b = 0; b <= LATENCY_BUCKETS; b++) {
        cum += atomic_load(&st->latency_bucket[b]);
        if (b < LATENCY_BUCKETS)
            put(&o, "verdict_decision_latency_seconds_bucket{le=\"%g\"} %lld\n", (double)latency_bounds_us[b] / 1e6,
                cum);
        else
            put(&o, "verdict_decision_latency_seconds_bucket{le=\"+Inf\"} %lld\n", cum);
    }
    put(&o, "verdict_decision_latency_seconds_sum %.6f\nverdict_decision_latency_seconds_count %lld\n",
        (double)atomic_load(&st->latency_sum_us) / 1e6, cum);
    put(&o, "# HELP verdict_stage_seconds_total Time spent per decision stage, summed.\n"
            "# TYPE verdict_stage_seconds_total counter\n");
    static const char *stages[] = {"features", "model", "rules"};
    for (int i = 0; i < 3; i++)
        put(&o, "verdict_stage_seconds_total{stage=\"%s\"} %.9f\n", stages[i], (double)atomic_load(&st->stage_ns[i]) / 1e9);
    put(&o,
        "# HELP verdict_ready 1 when /readyz says 200: started, connected, and able to decide.\n"
        "# TYPE verdict_ready gauge\nverdict_ready %d\n",
        judge(ob).ready ? 1 : 0);

    velocity_stats_t vs;
    if (ob->src.state_stats(ob->src.ctx, &vs)) {
        gauge(&o, "verdict_state_keys", "Entities (cards, devices, IPs...) held in the velocity state.",
              (long long)vs.keys);
        counter(&o, "verdict_state_evicted_keys_total",
                "Entities evicted from the velocity state to make room (least recently seen first).",
                (long long)vs.evictions);
        gauge(&o, "verdict_state_memory_bytes",
              "Address space reserved by the velocity state up front (virtual: pages count towards the resident "
              "size only once touched); see process_resident_memory_bytes for what the process holds in RAM.",
              (long long)vs.bytes);
    }
    /* the process's resident and virtual size (the standard Prometheus names), so a dashboard can tell the
     * state's reservation from the RAM actually used */
    FILE *statm = fopen("/proc/self/statm", "r");
    if (statm) {
        unsigned long long pages_virt = 0, pages_res = 0;
        long page = sysconf(_SC_PAGESIZE);
        if (fscanf(statm, "%llu %llu", &pages_virt, &pages_res) == 2 && page > 0) {
            gauge(&o, "process_resident_memory_bytes", "Resident memory of the engine process (RSS).",
                  (long long)(pages_res * (unsigned long long)page));
            gauge(&o, "process_virtual_memory_bytes", "Virtual memory of the engine process.",
                  (long long)(pages_virt * (unsigned long long)page));
        }
        fclose(statm);
    }

    char rv[40], mv[40];
    ob->src.versions(ob->src.ctx, rv, mv, sizeof rv);
    put(&o, "# HELP verdict_build_info The engine's version.\n# TYPE verdict_build_info gauge\n"
            "verdict_build_info{version=\"%s\"} 1\n", VERDICT_VERSION);
    put(&o, "# HELP verdict_rules_info The rules version in force (a content hash, as `verdict check` prints it).\n"
            "# TYPE verdict_rules_info gauge\nverdict_rules_info{version=\"%s\"} 1\n", rv);
    put(&o, "# HELP verdict_model_info The model version in force (a content hash, or none).\n"
            "# TYPE verdict_model_info gauge\nverdict_model_info{version=\"%s\"} 1\n", mv);

    if (atomic_load(&ob->polled)) {
        gauge(&o, "verdict_consumer_pending_messages", "Transactions in the stream not yet delivered to the engine.",
              atomic_load(&ob->pending));
        gauge(&o, "verdict_consumer_ack_pending_messages", "Transactions delivered and not yet acknowledged.",
              atomic_load(&ob->ack_pending));
        gauge(&o, "verdict_consumer_redelivered_messages", "Transactions delivered more than once and not yet acked.",
              atomic_load(&ob->redelivered));
        gauge(&o, "verdict_consumer_waiting_pulls", "Pull requests waiting on the consumer.",
              atomic_load(&ob->waiting));
    }
    counter(&o, "verdict_consumer_poll_errors_total", "Consumer info polls that failed.",
                atomic_load(&ob->poll_errors));
    return o.len;
}

/* /readyz: one JSON object naming each condition, 200 when all hold, 503 otherwise. */
static size_t readiness(observe *o, char *buf, size_t cap, bool *ready)
{
    engine_phase ph = o->src.phase(o->src.ctx);
    bool connected = o->src.connected(o->src.ctx);
    readiness_t r = judge(o);
    *ready = r.ready;
    char rv[40], mv[40];
    o->src.versions(o->src.ctx, rv, mv, sizeof rv);
#define TF(b) ((b) ? "true" : "false")
    int n = snprintf(buf, cap,
                     "{\"ready\":%s,\"phase\":\"%s\",\"nats_connected\":%s,\"streams_verified\":%s,"
                     "\"state_rebuilt\":%s,\"consumer_reachable\":%s,\"decisions_stream_available\":%s,"
                     "\"decisions_stored\":%s,\"rules_version\":\"%s\",\"model_version\":\"%s\"}\n",
                     TF(r.ready), engine_phase_str(ph), TF(connected), TF(ph > PHASE_VERIFYING && ph != PHASE_STOPPING),
                     TF(ph > PHASE_REBUILDING && ph != PHASE_STOPPING), TF(r.consumer), TF(r.decisions_stream),
                     TF(r.publishing), rv, mv);
#undef TF
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static enum MHD_Result respond(struct MHD_Connection *c, unsigned code, const char *type, const char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_http(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    (void)upload;
    (void)upload_size;
    (void)con_cls;
    observe *o = cls;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return respond(c, 405, "text/plain", "method not allowed\n", 19);
    if (strcmp(url, "/metrics") == 0) {
        static __thread char buf[65536];
        size_t n = metrics(o, buf, sizeof buf);
        return respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", buf, n);
    }
    if (strcmp(url, "/healthz") == 0)
        return respond(c, 200, "text/plain", "ok\n", 3);
    if (strcmp(url, "/readyz") == 0) {
        char buf[512];
        bool ready;
        size_t n = readiness(o, buf, sizeof buf, &ready);
        return respond(c, ready ? 200 : 503, "application/json", buf, n);
    }
    return respond(c, 404, "text/plain", "not found: try /metrics, /healthz, /readyz\n", 44);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    log_vwarn_line("metrics http server", fmt, ap);
}

static vstatus start_http(observe *o, verror *e)
{
    const char *addr = o->cfg.metrics_addr;
    if (!addr[0] || strcmp(addr, "off") == 0)
        return V_OK;
    const char *colon = strrchr(addr, ':');
    char host[64] = "127.0.0.1";
    if (!colon)
        return verror_set(e, V_EINVAL, "--metrics-addr '%s' is not host:port (or off)", addr);
    if (colon > addr) {
        size_t hl = (size_t)(colon - addr);
        if (hl >= sizeof host)
            return verror_set(e, V_EINVAL, "--metrics-addr host too long");
        memcpy(host, addr, hl);
        host[hl] = 0;
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535)
        return verror_set(e, V_EINVAL, "--metrics-addr '%s': bad port", addr);
    /* a name (localhost, a pod's hostname) is resolved here, once; the listener is IPv4 */
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gai = getaddrinfo(host, NULL, &hints, &ai);
    if (gai != 0 || !ai)
        return verror_set(e, V_EINVAL, "--metrics-addr '%s': cannot resolve '%s' to an IPv4 address: %s", addr,
                          host, gai_strerror(gai));
    struct sockaddr_in sa;
    memcpy(&sa, ai->ai_addr, sizeof sa);
    freeaddrinfo(ai);
    sa.sin_port = htons((uint16_t)port);
    errno = 0;
    /* libmicrohttpd's own messages ("Failed to bind to port ...") go through the JSON log, not bare to stderr */
    o->httpd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, (uint16_t)port, NULL, NULL,
                                on_http, o, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (!o->httpd) {
        int err = errno;
        return verror_set(e, V_ECONFLICT, "cannot listen on %s for metrics: %s", addr,
                          err == EADDRINUSE ? "the port is in use" : err ? strerror(err) : "failed");
    }
    log_info("metrics listening", "\"addr\":\"%s\"", log_esc(addr));
    return V_OK;
}

/* ---------------------------------------------------------------------------------------------- $SRV */

static int srv_common(observe *o, char *buf, size_t cap, const char *type, const char *rv, const char *mv)
{
    return snprintf(buf, cap,
                    "{\"type\":\"io.nats.micro.v1.%s\",\"name\":\"verdict\",\"id\":\"%s\",\"version\":\"%s\","
                    "\"metadata\":{\"rules_version\":\"%s\",\"model_version\":\"%s\"}",
                    type, log_esc(o->cfg.engine_id), VERDICT_VERSION, rv, mv);
}

static void on_srv(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)sub;
    observe *o = closure;
    if (strcmp(o->cfg.fault, "slow_srv") == 0) { /* tests: a responder still running when the engine stops */
        struct timespec ts = {0, 300 * 1000000L};
        nanosleep(&ts, NULL);
    }
    const char *subj = natsMsg_GetSubject(msg);
    const char *reply = natsMsg_GetReply(msg);
    if (!reply) {
        natsMsg_Destroy(msg);
        return;
    }
    char buf[4096];
    int n;
    char rv[40], mv[40];
    o->src.versions(o->src.ctx, rv, mv, sizeof rv);
    const engine_stats *st = o->src.stats;
    const char *ep = "{\"name\":\"decide\",\"subject\":\"%s\",\"queue_group\":\"%s\"";
    if (strncmp(subj, "$SRV.PING", 9) == 0) {
        n = srv_common(o, buf, sizeof buf, "ping_response", rv, mv);
        n += snprintf(buf + n, sizeof buf - (size_t)n, "}");
    } else if (strncmp(subj, "$SRV.INFO", 9) == 0) {
        n = srv_common(o, buf, sizeof buf, "info_response", rv, mv);
        n += snprintf(buf + n, sizeof buf - (size_t)n,
                      ",\"description\":\"Verdict fraud decisions: send a verdict.v1.Transaction, get a "
                      "verdict.v1.Decision\",\"endpoints\":[");
        n += snprintf(buf + n, sizeof buf - (size_t)n, ep, o->cfg.decide_subject, o->cfg.queue_group);
        n += snprintf(buf + n, sizeof buf - (size_t)n, ",\"metadata\":{}}]}");
    } else {
        long long decided = atomic_load(&st->decided[1]) + atomic_load(&st->decided[2]) +
                            atomic_load(&st->decided[3]);
        /* nanoseconds, as the micro protocol wants: saturated, since x1000 overflows after long uptimes */
        long long sum_us = atomic_load(&st->latency_sum_us);
        long long sum_ns = i64_mul_sat(sum_us, 1000);
        long long avg_ns = decided ? i64_mul_sat(sum_us / decided, 1000) : 0;
        char last_error[160];
        o->src.last_error(o->src.ctx, last_error, sizeof last_error);
        n = srv_common(o, buf, sizeof buf, "stats_response", rv, mv);
        n += snprintf(buf + n, sizeof buf - (size_t)n, ",\"started\":\"%s\",\"endpoints\":[", o->started);
        n += snprintf(buf + n, sizeof buf - (size_t)n, ep, o->cfg.decide_subject, o->cfg.queue_group);
        n += snprintf(buf + n, sizeof buf - (size_t)n,
                      ",\"num_requests\":%lld,\"num_errors\":%lld,\"last_error\":\"%s\",\"processing_time\":%lld,"
                      "\"average_processing_time\":%lld,\"data\":{\"decisions\":%lld,\"duplicates\":%lld,"
                      "\"dead_letters\":%lld,\"naks\":%lld,\"budget_exceeded\":%lld,\"degraded\":%lld,"
                      "\"partitions\":%lld}}]}",
                      (long long)atomic_load(&st->requests), (long long)atomic_load(&st->request_errors),
                      log_esc(last_error), sum_ns, avg_ns, decided, (long long)atomic_load(&st->duplicates),
                      (long long)atomic_load(&st->dead_letters), (long long)atomic_load(&st->naks),
                      (long long)atomic_load(&st->budget_exceeded), (long long)atomic_load(&st->degraded),
                      (long long)atomic_load(&st->partitions_owned));
    }
    if (n > 0 && (size_t)n < sizeof buf)
        natsConnection_Publish(nc, reply, buf, n);
    natsMsg_Destroy(msg);
}

/* nats.c calls this once a subscription is closed and its handler has returned for the last time: only then
 * may observe_stop free what on_srv reads. */
static void on_srv_complete(void *closure)
{
    observe *o = closure;
    pthread_mutex_lock(&o->mu);
    o->srv_done++;
    pthread_cond_broadcast(&o->done_cv);
    pthread_mutex_unlock(&o->mu);
}

static vstatus start_srv(observe *o, verror *e)
{
    static const char *verbs[] = {"PING", "INFO", "STATS"};
    for (int v = 0; v < 3; v++) {
        char subj[3][200];
        snprintf(subj[0], sizeof subj[0], "$SRV.%s", verbs[v]);
        snprintf(subj[1], sizeof subj[1], "$SRV.%s.verdict", verbs[v]);
        snprintf(subj[2], sizeof subj[2], "$SRV.%s.verdict.%s", verbs[v], o->cfg.engine_id);
        for (int k = 0; k < 3; k++) {
            natsSubscription *sub = NULL;
            natsStatus s = natsConnection_Subscribe(&sub, o->nc, subj[k], on_srv, o);
            if (s != NATS_OK)
                return verror_set(e, V_ENATS, "cannot subscribe to %s: %s", subj[k], natsStatus_GetText(s));
            s = natsSubscription_SetOnCompleteCB(sub, on_srv_complete, o);
            if (s != NATS_OK) {
                /* closed already (the connection was closed under us): no handler runs once it returns */
                natsSubscription_Unsubscribe(sub);
                natsSubscription_Destroy(sub);
                return verror_set(e, V_ENATS, "cannot subscribe to %s: %s", subj[k], natsStatus_GetText(s));
            }
            o->subs[o->nsubs++] = sub;
        }
    }
    return V_OK;
}

/* ------------------------------------------------------------------------------------- consumer poller */

/* Whether a stream's or consumer's group can commit: its leader and enough replicas heard from lately for a
 * majority. A leader cut off from its followers keeps answering info requests from its own state until it
 * notices the lost quorum and steps down (about 20 s measured on 2.10.27), while every write it takes waits. */
static bool has_quorum(const jsClusterInfo *ci, int64_t replicas)
{
    if (!ci)
        return true; /* not clustered */
    int64_t total = replicas > 0 ? replicas : 1 + ci->ReplicasLen;
    if (total <= 1)
        return true;
    if (!ci->Leader || !ci->Leader[0])
        return false;
    int64_t up = 1;
    for (int i = 0; i < ci->ReplicasLen; i++) {
        const jsPeerInfo *p = ci->Replicas[i];
        if (p && !p->Offline && p->Active <= UNAVAILABLE_MS * 1000000LL)
            up++;
    }
    return 2 * up > total;
}

static void poll_once(observe *o)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    /* Stream info is answered by the stream's leader: no answer means no leader, or none reachable */
    jsStreamInfo *si = NULL;
    if (js_GetStreamInfo(&si, o->js, o->cfg.decisions_stream, NULL, &jerr) == NATS_OK) {
        bool q = has_quorum(si->Cluster, si->Config ? si->Config->Replicas : 0);
        atomic_store(&o->decisions_no_quorum, !q);
        if (q)
            atomic_store(&o->decisions_ok_ns, mono_ns());
    }
    jsStreamInfo_Destroy(si);
    consumer_positions cp; /* partitioned: all partition consumers summed, the first one's placement */
    verror pe = {0};
    if (broker_consumer_positions(&o->cfg, o->js, &cp, &ci, &pe) != V_OK) {
        atomic_fetch_add(&o->poll_errors, 1);
        return;
    }
    bool q = has_quorum(ci->Cluster, ci->Config ? ci->Config->Replicas : 0);
    atomic_store(&o->consumer_no_quorum, !q);
    if (q)
        atomic_store(&o->consumer_ok_ns, mono_ns());
    atomic_store(&o->pending, (long long)cp.pending);
    atomic_store(&o->ack_pending, (long long)cp.ack_pending);
    atomic_store(&o->redelivered, (long long)cp.redelivered);
    atomic_store(&o->waiting, (long long)cp.waiting);
    atomic_store(&o->polled, true);
    jsConsumerInfo_Destroy(ci);
}

static void *poller_main(void *arg)
{
    observe *o = arg;
    pthread_mutex_lock(&o->mu);
    while (!o->stopping) {
        pthread_mutex_unlock(&o->mu);
        poll_once(o);
        pthread_mutex_lock(&o->mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += POLL_MS / 1000;
        until.tv_nsec += (long)(POLL_MS % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!o->stopping && pthread_cond_timedwait(&o->cv, &o->mu, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&o->mu);
    return NULL;
}

/* -------------------------------------------------------------------------------------------- lifecycle */

vstatus observe_start(const observe_source *src, const config *c, observe **out, verror *e)
{
    observe *o = calloc(1, sizeof *o);
    if (!o)
        return verror_set(e, V_ENOMEM, "out of memory");
    o->src = *src;
    o->cfg = *c;
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    pthread_cond_init(&o->done_cv, NULL);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(o->started, sizeof o->started, "%Y-%m-%dT%H:%M:%SZ", &tm);
    vstatus rc = start_http(o, e);
    if (rc != V_OK) {
        observe_stop(o);
        return rc;
    }
    *out = o;
    return V_OK;
}

vstatus observe_attach(observe *o, natsConnection *nc, verror *e)
{
    o->nc = nc;
    vstatus rc = start_srv(o, e);
    if (rc != V_OK)
        return rc;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = POLL_MS; /* a poll in progress never holds up a stop for long */
    natsStatus s = natsConnection_JetStream(&o->js, nc, &jo);
    if (s != NATS_OK)
        return verror_set(e, V_ENATS, "cannot get a JetStream context: %s", natsStatus_GetText(s));
    atomic_store(&o->consumer_ok_ns, mono_ns());
    atomic_store(&o->decisions_ok_ns, mono_ns());
    atomic_store(&o->consumer_no_quorum, false);
    atomic_store(&o->decisions_no_quorum, false);
    atomic_store(&o->attached, true);
    if (pthread_create(&o->poller, NULL, poller_main, o) != 0)
        return verror_set(e, V_ENOMEM, "cannot start the consumer poller");
    o->poller_running = true;
    return V_OK;
}

void observe_stop(observe *o)
{
    if (!o)
        return;
    if (o->poller_running) {
        pthread_mutex_lock(&o->mu);
        o->stopping = true;
        pthread_cond_signal(&o->cv);
        pthread_mutex_unlock(&o->mu);
        pthread_join(o->poller, NULL);
    }
    if (o->httpd)
        MHD_stop_daemon(o->httpd);
    /* Unsubscribing does not wait for a handler that is running: wait for each subscription's completion
     * before freeing what the handlers read. A failed Unsubscribe means the subscription is closed already
     * (the connection was closed), and its completion comes all the same. */
    for (int i = 0; i < o->nsubs; i++)
        natsSubscription_Unsubscribe(o->subs[i]);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += SRV_DONE_WAIT_S;
    pthread_mutex_lock(&o->mu);
    while (o->srv_done < o->nsubs && pthread_cond_timedwait(&o->done_cv, &o->mu, &until) == 0)
        ;
    bool done = o->srv_done >= o->nsubs;
    pthread_mutex_unlock(&o->mu);
    for (int i = 0; i < o->nsubs; i++)
        natsSubscription_Destroy(o->subs[i]);
    jsCtx_Destroy(o->js);
    if (!done) {
        /* a handler is stuck (in a publish to a frozen server): leaking beats freeing under it */
        log_warn("discovery responders did not finish; their state is not freed", NULL);
        return;
    }
    pthread_cond_destroy(&o->done_cv);
    pthread_cond_destroy(&o->cv);
    pthread_mutex_destroy(&o->mu);
    free(o);
}

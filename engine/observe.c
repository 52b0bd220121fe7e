/* observe.c - metrics, health and $SRV discovery (see observe.h). */
#include "observe.h"

#include "log.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef VERDICT_VERSION
#define VERDICT_VERSION "0.1.0"
#endif

struct observe {
    engine *en;
    config cfg;
    natsConnection *nc;
    natsSubscription *subs[9];
    int nsubs;
    struct MHD_Daemon *httpd;
    char started[40]; /* RFC 3339 */
    observe_extra_fn extra;
    void *extra_arg;
};

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

size_t observe_metrics(engine *en, char *buf, size_t cap)
{
    const engine_stats *st = engine_get_stats(en);
    out o = {buf, cap, 0};
    put(&o, "# HELP verdict_decisions_total Decisions stored, by outcome.\n# TYPE verdict_decisions_total counter\n");
    static const char *names[] = {"", "approve", "review", "decline"};
    for (int i = 1; i <= 3; i++)
        put(&o, "verdict_decisions_total{outcome=\"%s\"} %lld\n", names[i], (long long)atomic_load(&st->decided[i]));
    counter(&o, "verdict_duplicates_total", "Deliveries answered from the stored decision (redeliveries, retries).",
            atomic_load(&st->duplicates));
    counter(&o, "verdict_dead_letters_total", "Messages dead-lettered (poison and max deliveries).",
            atomic_load(&st->dead_letters));
    counter(&o, "verdict_naks_total", "Messages naked for a retry (decision not stored).", atomic_load(&st->naks));
    counter(&o, "verdict_redeliveries_total", "Messages delivered more than once.", atomic_load(&st->redeliveries));
    counter(&o, "verdict_budget_exceeded_total", "Decisions made after the latency budget was spent.",
            atomic_load(&st->budget_exceeded));
    counter(&o, "verdict_degraded_total", "Decisions made without some input (model, state, replicas).",
            atomic_load(&st->degraded));
    counter(&o, "verdict_requests_total", "Decide requests received on the ingress subject.",
            atomic_load(&st->requests));
    counter(&o, "verdict_request_errors_total", "Decide requests refused with an error reply.",
            atomic_load(&st->request_errors));
    counter(&o, "verdict_policy_reloads_total", "Rules/model versions swapped in.", atomic_load(&st->reloads));
    counter(&o, "verdict_policy_reload_failures_total", "Rules/model versions refused (the old stayed).",
            atomic_load(&st->reload_failures));
    put(&o, "# HELP verdict_decision_latency_seconds From the transaction's JetStream store time to its decision "
            "being stored.\n# TYPE verdict_decision_latency_seconds histogram\n");
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
    put(&o, "# HELP verdict_ready 1 when the engine is connected and taking work.\n# TYPE verdict_ready gauge\n"
            "verdict_ready %d\n", engine_ready(en) ? 1 : 0);
    return o.len;
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
        size_t n = observe_metrics(o->en, buf, sizeof buf);
        if (o->extra)
            n += o->extra(o->extra_arg, buf + n, sizeof buf - n);
        return respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", buf, n);
    }
    if (strcmp(url, "/healthz") == 0)
        return respond(c, 200, "text/plain", "ok\n", 3);
    if (strcmp(url, "/readyz") == 0) {
        if (engine_ready(o->en))
            return respond(c, 200, "text/plain", "ready\n", 6);
        return respond(c, 503, "text/plain", "not ready: not connected to NATS or stopping\n", 46);
    }
    return respond(c, 404, "text/plain", "not found: try /metrics, /healthz, /readyz\n", 44);
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
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return verror_set(e, V_EINVAL, "--metrics-addr '%s': the host must be an IPv4 address", addr);
    o->httpd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, (uint16_t)port, NULL, NULL,
                                on_http, o, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (!o->httpd)
        return verror_set(e, V_EIO, "cannot listen on %s for metrics (in use?)", addr);
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
    const char *subj = natsMsg_GetSubject(msg);
    const char *reply = natsMsg_GetReply(msg);
    if (!reply) {
        natsMsg_Destroy(msg);
        return;
    }
    char buf[4096];
    int n;
    char rv[40], mv[40];
    engine_current_versions(o->en, rv, mv, sizeof rv);
    const engine_stats *st = engine_get_stats(o->en);
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
        long long sum_ns = atomic_load(&st->latency_sum_us) * 1000;
        n = srv_common(o, buf, sizeof buf, "stats_response", rv, mv);
        n += snprintf(buf + n, sizeof buf - (size_t)n, ",\"started\":\"%s\",\"endpoints\":[", o->started);
        n += snprintf(buf + n, sizeof buf - (size_t)n, ep, o->cfg.decide_subject, o->cfg.queue_group);
        n += snprintf(buf + n, sizeof buf - (size_t)n,
                      ",\"num_requests\":%lld,\"num_errors\":%lld,\"last_error\":\"\",\"processing_time\":%lld,"
                      "\"average_processing_time\":%lld,\"data\":{\"decisions\":%lld,\"duplicates\":%lld,"
                      "\"dead_letters\":%lld,\"naks\":%lld,\"budget_exceeded\":%lld,\"degraded\":%lld}}]}",
                      (long long)atomic_load(&st->requests), (long long)atomic_load(&st->request_errors), sum_ns,
                      decided ? sum_ns / decided : 0, decided, (long long)atomic_load(&st->duplicates),
                      (long long)atomic_load(&st->dead_letters), (long long)atomic_load(&st->naks),
                      (long long)atomic_load(&st->budget_exceeded), (long long)atomic_load(&st->degraded));
    }
    if (n > 0 && (size_t)n < sizeof buf)
        natsConnection_Publish(nc, reply, buf, n);
    natsMsg_Destroy(msg);
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
            natsStatus s = natsConnection_Subscribe(&o->subs[o->nsubs], o->nc, subj[k], on_srv, o);
            if (s != NATS_OK)
                return verror_set(e, V_ENATS, "cannot subscribe to %s: %s", subj[k], natsStatus_GetText(s));
            o->nsubs++;
        }
    }
    return V_OK;
}

vstatus observe_start(engine *en, const config *c, natsConnection *nc, observe **out, verror *e)
{
    observe *o = calloc(1, sizeof *o);
    if (!o)
        return verror_set(e, V_ENOMEM, "out of memory");
    o->en = en;
    o->cfg = *c;
    o->nc = nc;
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(o->started, sizeof o->started, "%Y-%m-%dT%H:%M:%SZ", &tm);
    vstatus rc = start_srv(o, e);
    if (rc == V_OK)
        rc = start_http(o, e);
    if (rc != V_OK) {
        observe_stop(o);
        return rc;
    }
    *out = o;
    return V_OK;
}

void observe_set_extra(observe *o, observe_extra_fn fn, void *arg)
{
    if (!o)
        return;
    o->extra = fn;
    o->extra_arg = arg;
}

void observe_stop(observe *o)
{
    if (!o)
        return;
    if (o->httpd)
        MHD_stop_daemon(o->httpd);
    for (int i = 0; i < o->nsubs; i++) {
        natsSubscription_Unsubscribe(o->subs[i]);
        natsSubscription_Destroy(o->subs[i]);
    }
    free(o);
}

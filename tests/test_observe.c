/* test_observe.c - what operators see: /metrics in Prometheus format counting real decisions, /healthz,
 * /readyz, and the $SRV discovery responders that `nats micro ls|info|stats` use. */
#include "client.h"
#include "harness.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static test_server srv;
static natsConnection *nc;
static char logp[256];

static void setup(void)
{
    cr_assert(server_start(&srv, NULL), "nats-server did not start");
    nc = tc_connect(srv.url);
    temp_path(logp, sizeof logp, ".log");
}

static void teardown(void)
{
    natsConnection_Destroy(nc);
    server_stop(&srv);
    unlink(logp);
}

TestSuite(observe, .init = setup, .fini = teardown, .timeout = 60);

/* A plain HTTP/1.0 GET on 127.0.0.1:port; returns the status code and the body in body. */
static int http_get(int port, const char *path, char *body, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
    cr_assert_eq(write(fd, req, (size_t)n), n);
    static char resp[131072];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof resp - 1 && (r = read(fd, resp + len, sizeof resp - 1 - len)) > 0)
        len += (size_t)r;
    resp[len] = 0;
    close(fd);
    int code = 0;
    sscanf(resp, "HTTP/1.%*d %d", &code);
    const char *b = strstr(resp, "\r\n\r\n");
    snprintf(body, cap, "%s", b ? b + 4 : "");
    return code;
}

/* Runs a command line with text on its standard input; returns its exit status (-1 if it did not run). */
static int run_with_input(const char *cmd, const char *text, size_t len)
{
    FILE *p = popen(cmd, "w");
    if (!p)
        return -1;
    fwrite(text, 1, len, p);
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Validates a reply against tests/schemas/micro-v1.json#/definitions/<def> with python3-jsonschema. */
static int schema_check(const char *def, const char *json, size_t len)
{
    char path[256];
    temp_path(path, sizeof path, ".json");
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fwrite(json, 1, len, f);
    fclose(f);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/support/validate_json.py %s/tests/schemas/micro-v1.json %s %s",
             VERDICT_SOURCE_DIR, VERDICT_SOURCE_DIR, def, path);
    int st = system(cmd);
    unlink(path);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A $SRV reply, checked against the ADR-32 schema for def, parsed. */
static json_t *srv_request(const char *subject, const char *def)
{
    natsMsg *r = NULL;
    cr_assert_eq(natsConnection_RequestString(&r, nc, subject, "", 3000), NATS_OK, "no reply on %s", subject);
    cr_assert_eq(schema_check(def, natsMsg_GetData(r), (size_t)natsMsg_GetDataLength(r)), 0,
                 "%s: the reply does not follow the micro v1 schema: %.*s", subject, natsMsg_GetDataLength(r),
                 natsMsg_GetData(r));
    json_error_t je;
    json_t *j = json_loadb(natsMsg_GetData(r), (size_t)natsMsg_GetDataLength(r), 0, &je);
    cr_assert_not_null(j, "%s: not JSON: %.*s", subject, natsMsg_GetDataLength(r), natsMsg_GetData(r));
    natsMsg_Destroy(r);
    return j;
}

/* The value of an unlabelled or labelled sample line "name value" in a Prometheus exposition (-1 if absent). */
static long long metric(const char *body, const char *series)
{
    char key[256];
    snprintf(key, sizeof key, "\n%s ", series);
    const char *p = strstr(body, key);
    return p ? atoll(p + strlen(key)) : -1;
}

Test(observe, metrics_health_and_service_discovery)
{
    int port = free_port();
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    char rules[512];
    snprintf(rules, sizeof rules, "%s/rules/default.rules", VERDICT_SOURCE_DIR);
    pid_t pid = tc_start_engine(srv.url, logp,
                                (const char *const[]){"--metrics-addr", addr, "--engine-id", "e1", "--rules", rules, NULL});
    /* the versions in force, as discovery reports them; /readyz and /metrics must agree */
    json_t *ping = srv_request("$SRV.PING.verdict", "ping");
    cr_assert_str_eq(json_string_value(json_object_get(ping, "type")), "io.nats.micro.v1.ping_response");
    cr_assert_str_eq(json_string_value(json_object_get(ping, "name")), "verdict");
    cr_assert_str_eq(json_string_value(json_object_get(ping, "id")), "e1");
    char rv[64], series[128];
    snprintf(rv, sizeof rv, "%s", json_string_value(json_object_get(json_object_get(ping, "metadata"), "rules_version")));
    json_decref(ping);
    cr_assert_eq(strlen(rv), 16, "a content hash: %s", rv);
    Transaction t;
    tc_txn(&t, "obs-1", 250000);
    unsigned char buf[2048];
    int n = tc_pack(&t, buf);
    natsMsg *r = NULL;
    cr_assert_eq(natsConnection_Request(&r, nc, "verdict.v1.decide", buf, n, 5000), NATS_OK);
    natsMsg_Destroy(r);

    /* a poison pill, dead-lettered at once under its reason */
    jsCtx *js = NULL;
    cr_assert_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    jsPubAck *pa = NULL;
    cr_assert_eq(js_Publish(&pa, js, "txn.obs", "\xff\xff not protobuf", 14, NULL, NULL), NATS_OK);
    jsPubAck_Destroy(pa);
    jsCtx_Destroy(js);
    cr_assert(file_wait_for(logp, "dead-lettered", 10000));

    static char body[131072];
    cr_assert_eq(http_get(port, "/healthz", body, sizeof body), 200);
    cr_assert_eq(http_get(port, "/readyz", body, sizeof body), 200);
    cr_assert(strstr(body, "\"ready\":true") && strstr(body, "\"phase\":\"ready\"") &&
                  strstr(body, "\"streams_verified\":true") && strstr(body, "\"state_rebuilt\":true") &&
                  strstr(body, rv),
              "%s", body);
    cr_assert_eq(http_get(port, "/nope", body, sizeof body), 404);
    cr_assert_eq(http_get(port, "/metrics", body, sizeof body), 200);
    cr_assert(strstr(body, "verdict_decisions_total{outcome=\"approve\"} 1\n"), "%s", body);
    cr_assert(strstr(body, "verdict_decisions_total{outcome=\"review\"} 0\n"), "%s", body);
    cr_assert(strstr(body, "verdict_requests_total 1\n"), "%s", body);
    cr_assert(strstr(body, "verdict_decision_latency_seconds_count 1\n"), "%s", body);
    cr_assert(strstr(body, "verdict_decision_latency_seconds_bucket{le=\"+Inf\"} 1\n"), "%s", body);
    cr_assert(strstr(body, "verdict_ready 1\n"), "%s", body);
    cr_assert_eq(metric(body, "verdict_dead_letters_total{reason=\"decode_error\"}"), 1, "%s", body);
    cr_assert_eq(metric(body, "verdict_dead_letters_total{reason=\"max_deliveries\"}"), 0, "%s", body);
    snprintf(series, sizeof series, "verdict_rules_info{version=\"%s\"}", rv);
    cr_assert_eq(metric(body, series), 1, "%s", body);
    cr_assert_eq(metric(body, "verdict_model_info{version=\"none\"}"), 1, "%s", body);
    cr_assert_gt(metric(body, "verdict_state_keys"), 0, "the decided transaction's card is tracked: %s", body);
    cr_assert_eq(metric(body, "verdict_state_evicted_keys_total"), 0, "%s", body);
    cr_assert_null(strstr(body, "obs-1"), "metrics never carry transaction data");
    cr_assert_null(strstr(body, "card-"), "metrics never carry card data");
    /* the exposition is valid for Prometheus (promtool comes with Debian's prometheus package) */
    cr_assert_eq(system("command -v promtool >/dev/null"), 0, "promtool missing: run tools/install-deps");
    cr_assert_eq(run_with_input("promtool check metrics", body, strlen(body)), 0, "promtool rejects:\n%s", body);

    json_t *info = srv_request("$SRV.INFO.verdict.e1", "info");
    json_t *ep = json_array_get(json_object_get(info, "endpoints"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(ep, "subject")), "verdict.v1.decide");
    cr_assert_str_eq(json_string_value(json_object_get(ep, "queue_group")), "q");
    json_decref(info);
    /* a request that is not a Transaction: an error reply, counted, and named in last_error */
    cr_assert_eq(natsConnection_Request(&r, nc, "verdict.v1.decide", "\x0a\xff\xff", 3, 5000), NATS_OK);
    const char *code = NULL;
    cr_assert_eq(natsMsgHeader_Get(r, "Nats-Service-Error-Code", &code), NATS_OK);
    cr_assert_str_eq(code, "400");
    natsMsg_Destroy(r);
    json_t *stats = srv_request("$SRV.STATS", "stats");
    ep = json_array_get(json_object_get(stats, "endpoints"), 0);
    cr_assert_eq(json_integer_value(json_object_get(ep, "num_requests")), 2);
    cr_assert_eq(json_integer_value(json_object_get(ep, "num_errors")), 1);
    const char *last_error = json_string_value(json_object_get(ep, "last_error"));
    cr_assert(last_error && strncmp(last_error, "400: ", 5) == 0, "last_error: %s", last_error);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(stats, "metadata"), "rules_version")), rv);
    json_decref(stats);

    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0);
}

/* The schema check is strict enough to fail: a float processing time, a missing field, a bad version. */
Test(observe, the_micro_schema_check_rejects_what_nats_micro_would)
{
    const char *good = "{\"type\":\"io.nats.micro.v1.stats_response\",\"name\":\"verdict\",\"id\":\"e1\","
                       "\"version\":\"0.1.0\",\"started\":\"2026-11-25T10:00:00Z\",\"endpoints\":[{\"name\":"
                       "\"decide\",\"subject\":\"s\",\"num_requests\":1,\"num_errors\":0,\"last_error\":\"\","
                       "\"processing_time\":5,\"average_processing_time\":5}]}";
    cr_assert_eq(schema_check("stats", good, strlen(good)), 0);
    const char *bad[] = {
        "{\"type\":\"io.nats.micro.v1.stats_response\",\"name\":\"verdict\",\"id\":\"e1\",\"version\":\"0.1.0\","
        "\"started\":\"2026-11-25T10:00:00Z\",\"endpoints\":[{\"name\":\"decide\",\"subject\":\"s\","
        "\"num_requests\":1,\"num_errors\":0,\"last_error\":\"\",\"processing_time\":5.5,"
        "\"average_processing_time\":5}]}",
        "{\"type\":\"io.nats.micro.v1.stats_response\",\"name\":\"verdict\",\"id\":\"e1\",\"version\":\"0.1.0\","
        "\"started\":\"yesterday\",\"endpoints\":[]}",
        "{\"type\":\"io.nats.micro.v1.ping_response\",\"name\":\"verdict\",\"id\":\"e1\",\"version\":\"v1\"}",
        "{\"type\":\"io.nats.micro.v1.info_response\",\"name\":\"ver dict\",\"id\":\"e1\",\"version\":\"0.1.0\","
        "\"description\":\"\",\"endpoints\":[]}",
    };
    const char *defs[] = {"stats", "stats", "ping", "info"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(schema_check(defs[i], bad[i], strlen(bad[i])), 1, "accepted: %s", bad[i]);
}

/* While a start is held in the state rebuild, /healthz answers, /readyz says 503 and why; then it turns ready. */
Test(observe, readyz_reports_the_start_phase)
{
    int port = free_port();
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    setenv("VERDICT_TEST_FAULT", "slow_rebuild", 1);
    const char *argv[] = {"verdict", "serve", "--nats-url", srv.url, "--metrics-addr", addr, NULL};
    pid_t pid = verdict_spawn(argv, logp);
    unsetenv("VERDICT_TEST_FAULT");
    static char body[4096];
    bool seen_rebuilding = false;
    for (int i = 0; i < 250 && !seen_rebuilding; i++) { /* 2.5 s at most: the fault holds the phase for 3 s */
        int code = http_get(port, "/readyz", body, sizeof body);
        if (code == 503 && strstr(body, "\"phase\":\"rebuilding_state\"")) {
            seen_rebuilding = true;
            cr_assert(strstr(body, "\"ready\":false") && strstr(body, "\"streams_verified\":true") &&
                          strstr(body, "\"state_rebuilt\":false"),
                      "%s", body);
            cr_assert_eq(http_get(port, "/healthz", body, sizeof body), 200, "alive while not ready");
        } else {
            usleep(10000);
        }
    }
    cr_assert(seen_rebuilding, "never saw the rebuilding phase; last /readyz: %s", body);
    cr_assert(file_wait_for(logp, "engine started", 15000));
    cr_assert_eq(http_get(port, "/readyz", body, sizeof body), 200, "%s", body);
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0);
}

/* Consumer figures are polled from the server: with decisions failing, the transactions stay pending. */
Test(observe, consumer_pending_is_polled)
{
    int port = free_port();
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    setenv("VERDICT_TEST_FAULT", "publish_fail", 1);
    pid_t pid = tc_start_engine(srv.url, logp, (const char *const[]){"--metrics-addr", addr, NULL});
    unsetenv("VERDICT_TEST_FAULT");
    jsCtx *js = NULL;
    cr_assert_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    for (int i = 0; i < 5; i++) {
        Transaction t;
        char id[32];
        snprintf(id, sizeof id, "pend-%d", i);
        tc_txn(&t, id, 1000);
        cr_assert(tc_publish(js, "txn.obs", &t));
    }
    jsCtx_Destroy(js);
    static char body[131072];
    long long pending = -1, ack_pending = -1;
    for (int i = 0; i < 60; i++) { /* the poller runs every second */
        cr_assert_eq(http_get(port, "/metrics", body, sizeof body), 200);
        pending = metric(body, "verdict_consumer_pending_messages");
        ack_pending = metric(body, "verdict_consumer_ack_pending_messages");
        if (pending >= 0 && pending + ack_pending == 5)
            break;
        usleep(100000);
    }
    cr_assert_eq(pending + ack_pending, 5, "pending %lld + ack pending %lld: %s", pending, ack_pending, body);
    cr_assert_eq(metric(body, "verdict_consumer_poll_errors_total"), 0);
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0);
}

Test(observe, a_busy_metrics_port_is_a_clear_refusal)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    listen(fd, 1);
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));
    const char *argv[] = {"verdict", "serve", "--nats-url", srv.url, "--metrics-addr", addr, NULL};
    pid_t pid = verdict_spawn(argv, logp);
    cr_assert_eq(child_wait(pid, 15000), 1);
    cr_assert(file_wait_for(logp, "cannot listen on", 1000));
    close(fd);
}

/* A discovery request still being answered when the engine stops: the responders' state is freed only after the
 * handler has returned (it was freed right after Unsubscribe, under the running handler). The slow_srv fault
 * holds each $SRV handler 300 ms. */
Test(observe, a_responder_running_at_shutdown_finishes_before_its_state_is_freed)
{
    setenv("VERDICT_TEST_FAULT", "slow_srv", 1);
    pid_t pid = tc_start_engine(srv.url, logp, (const char *const[]){"--engine-id", "e1", NULL});
    unsetenv("VERDICT_TEST_FAULT");
    natsInbox *inbox = NULL;
    natsSubscription *sub = NULL;
    cr_assert_eq(natsInbox_Create(&inbox), NATS_OK);
    cr_assert_eq(natsConnection_SubscribeSync(&sub, nc, inbox), NATS_OK);
    cr_assert_eq(natsConnection_PublishRequestString(nc, "$SRV.PING.verdict.e1", inbox, ""), NATS_OK);
    cr_assert_eq(natsConnection_Flush(nc), NATS_OK);
    usleep(100000); /* the handler is inside its 300 ms */
    kill(pid, SIGTERM);
    int st = child_wait(pid, 10000);
    if (st < 0)
        kill(pid, SIGKILL);
    cr_assert_eq(st, 0, "engine did not exit 0 (%d); see %s", st, logp);
    natsMsg *r = NULL;
    cr_assert_eq(natsSubscription_NextMsg(&r, sub, 1000), NATS_OK, "the running handler's reply was lost");
    cr_assert(strstr(natsMsg_GetData(r), "ping_response"), "%s", natsMsg_GetData(r));
    natsMsg_Destroy(r);
    natsSubscription_Destroy(sub);
    natsInbox_Destroy(inbox);
}

/* Polls /readyz every 100 ms until it answers want (bounded); returns the ms it took, or -1. */
static long long readyz_until(int port, int want, int timeout_ms, char *body, size_t cap)
{
    for (int waited = 0; waited <= timeout_ms; waited += 100) {
        if (http_get(port, "/readyz", body, cap) == want)
            return waited;
        usleep(100000);
    }
    return -1;
}

/* Issue 21: connected is not enough. With the decisions stream gone (as with no leader for it on a cluster),
 * the engine cannot store a decision: /readyz says 503 within seconds, naming the condition, and 200 again once
 * the stream is back. A transaction taken meanwhile is decided after. */
Test(observe, readyz_says_503_while_the_decisions_stream_is_unavailable)
{
    int port = free_port();
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    pid_t pid = tc_start_engine(srv.url, logp, (const char *const[]){"--metrics-addr", addr, NULL});
    jsCtx *js = NULL;
    cr_assert_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    static char body[4096];
    cr_assert_eq(readyz_until(port, 200, 5000, body, sizeof body), 0, "%s", body);
    jsStreamInfo *si = NULL;
    cr_assert_eq(js_GetStreamInfo(&si, js, "DECISIONS", NULL, NULL), NATS_OK);
    cr_assert_eq(js_DeleteStream(js, "DECISIONS", NULL, NULL), NATS_OK);
    Transaction t;
    tc_txn(&t, "while-gone", 1000);
    cr_assert(tc_publish(js, "txn.obs", &t));
    long long took = readyz_until(port, 503, 8000, body, sizeof body);
    cr_assert(took >= 0, "/readyz still 200 8 s after the decisions stream went: %s", body);
    cr_assert(strstr(body, "\"decisions_stream_available\":false") && strstr(body, "\"nats_connected\":true"), "%s",
              body);
    fprintf(stderr, "observe: /readyz 503 %lld ms after the decisions stream went\n", took);
    cr_assert_lt(took, 5000);
    jsStreamInfo *back = NULL;
    cr_assert_eq(js_AddStream(&back, js, si->Config, NULL, NULL), NATS_OK);
    jsStreamInfo_Destroy(back);
    jsStreamInfo_Destroy(si);
    took = readyz_until(port, 200, 5000, body, sizeof body);
    cr_assert(took >= 0, "not ready 5 s after the stream came back: %s", body);
    fprintf(stderr, "observe: /readyz 200 %lld ms after the decisions stream came back\n", took);
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", 1, 40000), 1, "the transaction taken meanwhile is decided");
    jsCtx_Destroy(js);
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0);
}

/* Decisions that cannot be stored (every publish fails: the fault publish_fail) while work is pending: 503
 * with "decisions_stored":false within seconds, though the connection and the streams answer. */
Test(observe, readyz_says_503_while_decisions_are_not_stored)
{
    int port = free_port();
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    setenv("VERDICT_TEST_FAULT", "publish_fail", 1);
    pid_t pid = tc_start_engine(srv.url, logp, (const char *const[]){"--metrics-addr", addr, NULL});
    unsetenv("VERDICT_TEST_FAULT");
    static char body[131072];
    cr_assert_eq(readyz_until(port, 200, 5000, body, sizeof body), 0, "idle, nothing failed yet: %s", body);
    jsCtx *js = NULL;
    cr_assert_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    Transaction t;
    tc_txn(&t, "not-stored", 1000);
    cr_assert(tc_publish(js, "txn.obs", &t));
    jsCtx_Destroy(js);
    long long took = readyz_until(port, 503, 8000, body, sizeof body);
    cr_assert(took >= 0, "/readyz still 200 8 s into failing publishes: %s", body);
    cr_assert(strstr(body, "\"decisions_stored\":false") && strstr(body, "\"decisions_stream_available\":true") &&
                  strstr(body, "\"consumer_reachable\":true"),
              "%s", body);
    fprintf(stderr, "observe: /readyz 503 %lld ms after the first failing publish\n", took);
    cr_assert_eq(http_get(port, "/metrics", body, sizeof body), 200);
    cr_assert_eq(metric(body, "verdict_ready"), 0, "the gauge agrees with /readyz");
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0);
}

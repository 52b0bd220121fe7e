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
#include <string.h>
#include <sys/socket.h>
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

static json_t *srv_request(const char *subject)
{
    natsMsg *r = NULL;
    cr_assert_eq(natsConnection_RequestString(&r, nc, subject, "", 3000), NATS_OK, "no reply on %s", subject);
    json_error_t je;
    json_t *j = json_loadb(natsMsg_GetData(r), (size_t)natsMsg_GetDataLength(r), 0, &je);
    cr_assert_not_null(j, "%s: not JSON: %.*s", subject, natsMsg_GetDataLength(r), natsMsg_GetData(r));
    natsMsg_Destroy(r);
    return j;
}

Test(observe, metrics_health_and_service_discovery)
{
    int port = free_port();
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    pid_t pid = tc_start_engine(srv.url, logp, (const char *const[]){"--metrics-addr", addr, "--engine-id", "e1", NULL});
    Transaction t;
    tc_txn(&t, "obs-1", 250000);
    unsigned char buf[2048];
    int n = tc_pack(&t, buf);
    natsMsg *r = NULL;
    cr_assert_eq(natsConnection_Request(&r, nc, "verdict.v1.decide", buf, n, 5000), NATS_OK);
    natsMsg_Destroy(r);

    static char body[131072];
    cr_assert_eq(http_get(port, "/healthz", body, sizeof body), 200);
    cr_assert_eq(http_get(port, "/readyz", body, sizeof body), 200);
    cr_assert_eq(http_get(port, "/nope", body, sizeof body), 404);
    cr_assert_eq(http_get(port, "/metrics", body, sizeof body), 200);
    cr_assert(strstr(body, "verdict_decisions_total{outcome=\"review\"} 1\n"), "%s", body);
    cr_assert(strstr(body, "verdict_decisions_total{outcome=\"approve\"} 0\n"), "%s", body);
    cr_assert(strstr(body, "verdict_requests_total 1\n"), "%s", body);
    cr_assert(strstr(body, "verdict_decision_latency_seconds_count 1\n"), "%s", body);
    cr_assert(strstr(body, "verdict_decision_latency_seconds_bucket{le=\"+Inf\"} 1\n"), "%s", body);
    cr_assert(strstr(body, "verdict_ready 1\n"), "%s", body);
    cr_assert_null(strstr(body, "obs-1"), "metrics never carry transaction data");

    json_t *ping = srv_request("$SRV.PING.verdict");
    cr_assert_str_eq(json_string_value(json_object_get(ping, "type")), "io.nats.micro.v1.ping_response");
    cr_assert_str_eq(json_string_value(json_object_get(ping, "name")), "verdict");
    cr_assert_str_eq(json_string_value(json_object_get(ping, "id")), "e1");
    json_decref(ping);
    json_t *info = srv_request("$SRV.INFO.verdict.e1");
    json_t *ep = json_array_get(json_object_get(info, "endpoints"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(ep, "subject")), "verdict.v1.decide");
    cr_assert_str_eq(json_string_value(json_object_get(ep, "queue_group")), "q");
    json_decref(info);
    json_t *stats = srv_request("$SRV.STATS");
    ep = json_array_get(json_object_get(stats, "endpoints"), 0);
    cr_assert_eq(json_integer_value(json_object_get(ep, "num_requests")), 1);
    cr_assert_eq(json_integer_value(json_object_get(ep, "num_errors")), 0);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(stats, "metadata"), "rules_version")),
                     "builtin-1");
    json_decref(stats);

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

/* test_lifecycle.c - stopping and health in the states where NATS cannot help: SIGTERM with the server frozen,
 * SIGTERM during a start, /readyz while the engine reconnects to a server that does not answer, and the bounds
 * every operator-given number must respect. Real nats-server, real `verdict serve` processes. */
#include "client.h"
#include "config.h"
#include "harness.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The wanted bound on a stop (Docker's default stop timeout is 10 s; the engine's target is 5 s). */
#define STOP_BOUND_MS 5000

static test_server srv;
static bool srv_frozen;
static pid_t engine_pid;
static char logp[256];

static void setup(void)
{
    cr_assert(server_start(&srv, NULL), "nats-server did not start");
    temp_path(logp, sizeof logp, ".log");
    srv_frozen = false;
    engine_pid = 0;
}

static void teardown(void)
{
    if (engine_pid > 0) { /* never leave an engine behind, whatever failed */
        kill(engine_pid, SIGKILL);
        waitpid(engine_pid, NULL, 0);
    }
    if (srv_frozen)
        kill(srv.pid, SIGCONT);
    server_stop(&srv);
    unlink(logp);
}

TestSuite(lifecycle, .init = setup, .fini = teardown, .timeout = 120);

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* SIGTERM, then the exit status if the engine exited within bound_ms (-1 otherwise); *took_ms = time to exit. */
static int sigterm_and_wait(int bound_ms, int64_t *took_ms)
{
    int64_t t0 = mono_ms();
    kill(engine_pid, SIGTERM);
    int st = child_wait(engine_pid, bound_ms);
    *took_ms = mono_ms() - t0;
    if (st >= 0)
        engine_pid = 0;
    if (st != 0) /* what the stop was doing: the log goes with the test */
        tc_print_log_tail(logp, 30, "lifecycle: engine log");
    return st;
}

/* A plain HTTP/1.0 GET on 127.0.0.1:port: the status code (-1 if none), the body in body. */
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
    char resp[8192];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof resp - 1 && (r = read(fd, resp + len, sizeof resp - 1 - len)) > 0)
        len += (size_t)r;
    resp[len] = 0;
    close(fd);
    int code = -1;
    sscanf(resp, "HTTP/1.%*d %d", &code);
    const char *b = strstr(resp, "\r\n\r\n");
    snprintf(body, cap, "%s", b ? b + 4 : "");
    return code;
}

static void publish_txns(jsCtx *js, const char *prefix, int n)
{
    for (int i = 0; i < n; i++) {
        Transaction t;
        char id[48];
        snprintf(id, sizeof id, "%s-%d", prefix, i);
        tc_txn(&t, id, 1000 + i);
        cr_assert(tc_publish(js, "txn.life", &t));
    }
}

/* With the server frozen (SIGSTOP: the TCP connections stay up, nothing answers), every step of a graceful stop
 * would wait for its own timeout: 19-24 s before. One deadline bounds them all; afterwards, with the server
 * back, nothing is lost or decided twice. */
Test(lifecycle, sigterm_with_the_server_frozen_exits_within_the_bound)
{
    natsConnection *nc = tc_connect(srv.url);
    jsCtx *js = NULL;
    cr_assert_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    engine_pid = tc_start_engine(srv.url, logp, NULL);
    publish_txns(js, "frozen-a", 20);
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", 20, 15000), 20);
    publish_txns(js, "frozen-b", 30); /* some of these are in flight at the freeze */
    cr_assert_eq(kill(srv.pid, SIGSTOP), 0);
    srv_frozen = true;
    tc_sleep_ms(300);
    int64_t took = 0;
    int st = sigterm_and_wait(STOP_BOUND_MS, &took);
    cr_assert_eq(st, 0, "engine did not exit 0 within %d ms of SIGTERM (status %d, %lld ms); see %s", STOP_BOUND_MS,
                 st, (long long)took, logp);
    fprintf(stderr, "lifecycle: SIGTERM with the server frozen: exit after %lld ms\n", (long long)took);
    kill(srv.pid, SIGCONT);
    srv_frozen = false;
    /* the commit protocol held: a new engine decides what was cut short, each transaction exactly once */
    engine_pid = tc_start_engine(srv.url, logp, NULL);
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", 50, 20000), 50, "every transaction decided after the restart");
    tc_sleep_ms(500);
    cr_assert_eq(tc_stream_msgs(js, "DECISIONS"), 50, "one decision per transaction");
    int64_t took2 = 0;
    cr_assert_eq(sigterm_and_wait(STOP_BOUND_MS, &took2), 0);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
}

/* A reload that needs a velocity rebuild, started (SIGHUP) while the server is frozen, blocks on NATS; a SIGTERM
 * then does not wait for it (before: the signal was not even seen until the reload had timed out). */
Test(lifecycle, sigterm_during_a_reload_waiting_on_nats_exits_within_the_bound)
{
    char rulesp[256];
    temp_path(rulesp, sizeof rulesp, ".rules");
    tc_write_file(rulesp, "rule a review \"a\" when amount >= 100\n");
    natsConnection *nc = tc_connect(srv.url);
    jsCtx *js = NULL;
    cr_assert_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    engine_pid = tc_start_engine(srv.url, logp, (const char *const[]){"--rules", rulesp, NULL});
    publish_txns(js, "reload", 10);
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", 10, 15000), 10);
    /* new rules read a velocity feature the running state does not keep: the reload rebuilds it from TXN */
    tc_write_file(rulesp, "rule v review \"v\" when count(card_id, 10m) > 5\n");
    cr_assert_eq(kill(srv.pid, SIGSTOP), 0);
    srv_frozen = true;
    kill(engine_pid, SIGHUP);
    tc_sleep_ms(500);
    int64_t took = 0;
    int st = sigterm_and_wait(STOP_BOUND_MS, &took);
    cr_assert_eq(st, 0, "engine did not exit 0 within %d ms (status %d, %lld ms); see %s", STOP_BOUND_MS, st,
                 (long long)took, logp);
    fprintf(stderr, "lifecycle: SIGTERM during a reload waiting on NATS: exit after %lld ms\n", (long long)took);
    kill(srv.pid, SIGCONT);
    srv_frozen = false;
    unlink(rulesp);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
}

/* A start held in its rebuild phase is abandoned on SIGTERM: the engine never reports started, and exits 0. */
Test(lifecycle, sigterm_during_a_slow_rebuild_abandons_the_start)
{
    setenv("VERDICT_TEST_FAULT", "slow_rebuild", 1);
    const char *argv[] = {"verdict", "serve", "--nats-url", srv.url, "--workers", "2", NULL};
    engine_pid = verdict_spawn(argv, logp);
    unsetenv("VERDICT_TEST_FAULT");
    cr_assert(engine_pid > 0);
    cr_assert(file_wait_for(logp, "consumer created", 15000), "the start did not reach the rebuild; see %s", logp);
    tc_sleep_ms(200); /* inside the 3 s the fault holds the rebuild phase */
    int64_t took = 0;
    int st = sigterm_and_wait(STOP_BOUND_MS, &took);
    cr_assert_eq(st, 0, "engine did not exit 0 within %d ms (status %d); see %s", STOP_BOUND_MS, st, logp);
    fprintf(stderr, "lifecycle: SIGTERM during the rebuild: exit after %lld ms\n", (long long)took);
    cr_assert(file_wait_for(logp, "stopped before the start completed", 0), "see %s", logp);
    cr_assert_not(file_wait_for(logp, "engine started", 0), "the start went on after SIGTERM; see %s", logp);
    /* the connection closed under the KV replicas' watchers is the end of them, not an outage to warn about */
    cr_assert_not(file_wait_for(logp, "watcher error", 0), "a warning at the stop; see %s", logp);
    cr_assert_not(file_wait_for(logp, "watch failed", 0), "a warning at the stop; see %s", logp);
}

/* Starts an engine with the one-shot fault named and waits until it has started; the log must then say each of
 * the lines in said (NULL-terminated) and not "cannot start". */
static void start_through_fault(const char *fault, const char *const said[])
{
    setenv("VERDICT_TEST_FAULT", fault, 1);
    const char *argv[] = {"verdict", "serve", "--nats-url", srv.url, "--workers", "2", NULL};
    engine_pid = verdict_spawn(argv, logp);
    unsetenv("VERDICT_TEST_FAULT");
    cr_assert(engine_pid > 0);
    cr_assert(file_wait_for(logp, "engine started", 15000), "the engine did not start (fault %s); see %s", fault, logp);
    for (int i = 0; said[i]; i++)
        cr_assert(file_wait_for(logp, said[i], 0), "the log lacks \"%s\"; see %s", said[i], logp);
    cr_assert_not(file_wait_for(logp, "cannot start", 0), "see %s", logp);
}

/* After a start step that failed once and was asked again, the engine works: it decides, and poison is
 * dead-lettered by the DLQ worker; then it stops within the bound. */
static void decides_and_dead_letters(void)
{
    natsConnection *nc = tc_connect(srv.url);
    jsCtx *js = NULL;
    cr_assert_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    Transaction t;
    tc_txn(&t, "retried-1", 1000);
    cr_assert(tc_publish(js, "txn.lifecycle.1", &t));
    cr_assert_eq(js_Publish(NULL, js, "txn.lifecycle.2", "\xff\xff\xff", 3, NULL, NULL), NATS_OK);
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", 1, 15000), 1, "the started engine did not decide; see %s", logp);
    cr_assert_eq(tc_wait_msgs(js, "DLQ", 1, 15000), 1, "the poison was not dead-lettered; see %s", logp);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    int64_t took = 0;
    cr_assert_eq(sigterm_and_wait(STOP_BOUND_MS, &took), 0, "see %s", logp);
}

/* The last step of a start asks the server to confirm the engine's subscriptions. A node lost at that moment (in
 * test_cluster, the standby taking over while the lease bucket's leader is killed) answered with a disconnect
 * and the engine exited "cannot start", although nats.c reconnects and subscribes again by itself: it asks again
 * and starts. The fault stands in for the disconnect. */
Test(lifecycle, a_disconnect_while_the_start_confirms_its_subscriptions_is_asked_again)
{
    start_through_fault("confirm_disconnect_once",
                        (const char *const[]){"did not confirm the engine's subscriptions yet; asking again", NULL});
    decides_and_dead_letters();
}

/* A cluster that has just formed may not answer the engine's stream set-up in time (test_partition on nats-server 2.15.1 in CI:
 * "cannot create stream TXN: Timeout", exit 1). The set-up is tried again and the engine starts. */
Test(lifecycle, a_stream_setup_that_times_out_is_tried_again)
{
    start_through_fault("setup_timeout_once",
                        (const char *const[]){"a start step failed in the broker; trying again", "JetStream set-up", NULL});
    int64_t took = 0;
    cr_assert_eq(sigterm_and_wait(STOP_BOUND_MS, &took), 0, "see %s", logp);
}

/* The same for the rules bucket's watcher (test_cluster under ASan: a standby that had just taken the lease
 * watched the rules bucket as its node went down, "cannot watch the rules KV bucket: Timeout", and exited). */
Test(lifecycle, a_rules_bucket_watch_that_times_out_is_tried_again)
{
    start_through_fault("reloader_timeout_once", (const char *const[]){"rules bucket watch", NULL});
    int64_t took = 0;
    cr_assert_eq(sigterm_and_wait(STOP_BOUND_MS, &took), 0, "see %s", logp);
}

/* The start steps after a standby takes the lease, each failing once as a timeout, are tried again (test_cluster
 * in CI: "cannot create the DLQ worker's consumer: Timeout" as the lease bucket's leader node was killed under a
 * standby that had just taken over, and it exited). */
Test(lifecycle, a_dlq_worker_consumer_that_times_out_is_tried_again)
{
    start_through_fault("dlq_timeout_once",
                        (const char *const[]){"a start step failed in the broker; trying again", "DLQ worker", NULL});
    decides_and_dead_letters();
}

Test(lifecycle, a_consumer_bind_that_times_out_is_tried_again)
{
    start_through_fault("bind_timeout_once",
                        (const char *const[]){"a start step failed in the broker; trying again", "consumer bind", NULL});
    decides_and_dead_letters();
}

Test(lifecycle, a_consumer_configuration_read_that_times_out_is_tried_again)
{
    start_through_fault("ack_wait_timeout_once", (const char *const[]){"a start step failed in the broker; trying again",
                                                                      "consumer configuration", NULL});
    decides_and_dead_letters();
}

/* Listens on port without ever accepting: connections complete in the kernel and then hear nothing, which is
 * what a client sees of a frozen server it connects to. */
static int frozen_listener(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    for (int i = 0; i < 100; i++) {
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 64) == 0)
            return fd;
        tc_sleep_ms(50);
    }
    close(fd);
    return -1;
}

/* While the engine reconnects to a server that does not answer, nats.c holds the connection's lock for each
 * attempt, and a health check that asked nats.c for the status waited with it (4-5 s an answer before).
 * /readyz answers 503 at once from the engine's own state, and a SIGTERM still ends within the bound. */
Test(lifecycle, readyz_answers_at_once_while_nats_does_not)
{
    int port = free_port();
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    engine_pid = tc_start_engine(srv.url, logp, (const char *const[]){"--metrics-addr", addr, NULL});
    char body[1024];
    cr_assert_eq(http_get(port, "/readyz", body, sizeof body), 200, "%s", body);
    server_kill(&srv, SIGKILL);
    int fd = frozen_listener(srv.port);
    cr_assert(fd >= 0, "could not listen on the server's port");
    cr_assert(file_wait_for(logp, "disconnected from NATS", 5000), "see %s", logp);
    tc_sleep_ms(600); /* reconnect attempts are under way (250 ms apart) */
    int64_t worst = 0;
    for (int i = 0; i < 10; i++) {
        int64_t t0 = mono_ms();
        int code = http_get(port, "/readyz", body, sizeof body);
        int64_t took = mono_ms() - t0;
        worst = took > worst ? took : worst;
        cr_assert_eq(code, 503, "%s", body);
        cr_assert(strstr(body, "\"nats_connected\":false"), "%s", body);
        cr_assert_lt(took, 1000, "/readyz took %lld ms while NATS was down", (long long)took);
        tc_sleep_ms(150);
    }
    fprintf(stderr, "lifecycle: /readyz while reconnecting to a frozen server: worst %lld ms\n", (long long)worst);
    cr_assert_eq(http_get(port, "/healthz", body, sizeof body), 200);
    int64_t took = 0;
    int st = sigterm_and_wait(STOP_BOUND_MS, &took);
    cr_assert_eq(st, 0, "engine did not exit 0 within %d ms (status %d); see %s", STOP_BOUND_MS, st, logp);
    fprintf(stderr, "lifecycle: SIGTERM while reconnecting: exit after %lld ms\n", (long long)took);
    close(fd);
}

/* A server that freezes keeps its TCP connections open: only unanswered pings tell. The engine declares the
 * connection stale within seconds (nats.c's default took 4-6 minutes, /readyz saying ready all along), says
 * 503 meanwhile, every answer immediate, and is ready again once the server answers. */
Test(lifecycle, readyz_says_503_soon_after_the_server_freezes)
{
    int port = free_port();
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    engine_pid = tc_start_engine(srv.url, logp, (const char *const[]){"--metrics-addr", addr, NULL});
    char body[1024];
    cr_assert_eq(http_get(port, "/readyz", body, sizeof body), 200, "%s", body);
    cr_assert_eq(kill(srv.pid, SIGSTOP), 0);
    srv_frozen = true;
    int64_t t0 = mono_ms(), worst = 0;
    int code = 200;
    while (code == 200 && mono_ms() - t0 < 25000) {
        int64_t t = mono_ms();
        code = http_get(port, "/readyz", body, sizeof body);
        worst = mono_ms() - t > worst ? mono_ms() - t : worst;
        cr_assert_lt(mono_ms() - t, 1000, "/readyz took %lld ms", (long long)(mono_ms() - t));
        tc_sleep_ms(200);
    }
    cr_assert_eq(code, 503, "still %d %lld ms after the server froze: %s", code, (long long)(mono_ms() - t0), body);
    fprintf(stderr, "lifecycle: /readyz 503 %lld ms after the server froze (slowest answer %lld ms)\n",
            (long long)(mono_ms() - t0), (long long)worst);
    kill(srv.pid, SIGCONT);
    srv_frozen = false;
    for (int i = 0; i < 100 && code != 200; i++) {
        tc_sleep_ms(100);
        code = http_get(port, "/readyz", body, sizeof body);
    }
    cr_assert_eq(code, 200, "not ready again after the server came back: %s", body);
    int64_t took = 0;
    cr_assert_eq(sigterm_and_wait(STOP_BOUND_MS, &took), 0);
}

/* A SIGTERM while the first connection attempt waits on a server that says nothing: the attempt is bounded (2 s
 * connect timeout) and the start is abandoned after it, exit 0 (before: 5 s, then "cannot start", exit 1). */
Test(lifecycle, sigterm_while_connecting_to_a_frozen_server)
{
    int port = free_port();
    int fd = frozen_listener(port);
    cr_assert(fd >= 0);
    char url[64];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
    const char *argv[] = {"verdict", "serve", "--nats-url", url, "--workers", "2", NULL};
    engine_pid = verdict_spawn(argv, logp);
    cr_assert(engine_pid > 0);
    tc_sleep_ms(300);
    int64_t took = 0;
    int st = sigterm_and_wait(STOP_BOUND_MS, &took);
    cr_assert_eq(st, 0, "engine did not exit 0 within %d ms (status %d); see %s", STOP_BOUND_MS, st, logp);
    fprintf(stderr, "lifecycle: SIGTERM while connecting: exit after %lld ms\n", (long long)took);
    cr_assert(file_wait_for(logp, "stopped before the start completed", 0), "see %s", logp);
    close(fd);
}

/* --- operator input --------------------------------------------------------------------------------------- */

static vstatus parse(const char *const *args, verror *e)
{
    char *argv[16] = {"serve"};
    int argc = 1;
    for (; args[argc - 1]; argc++)
        argv[argc] = (char *)args[argc - 1];
    config c;
    config_defaults(&c);
    bool help;
    return config_parse(&c, argc, argv, &help, NULL, NULL, e);
}

Test(lifecycle, durations_and_counts_are_bounded)
{
    /* each of these parsed before and overflowed on its way to the server (ms * 1e6 ns) or made no sense */
    const char *const refused[][3] = {
        {"--budget", "0ms"},         {"--budget", "0s"},           {"--budget", "3000000000000000ms"},
        {"--ack-wait", "200000d"},   {"--dup-window", "200000d"},  {"--txn-max-age", "200000d"},
        {"--backoff", "1s,200000d"}, {"--publish-timeout", "9223372036854775000ms"},
        {"--max-keys", "1000000000"}, {"--replicas", "9"},         {"--max-deliver", "100000"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        verror e = {0};
        cr_assert_eq(parse(refused[i], &e), V_EINVAL, "%s %s accepted", refused[i][0], refused[i][1]);
        cr_assert(strstr(e.msg, refused[i][0]) && strstr(e.msg, "out of range"), "unclear refusal: %s", e.msg);
    }
    /* the limits themselves are accepted */
    const char *const accepted[][3] = {
        {"--budget", "1ms"},   {"--budget", "60s"},        {"--ack-wait", "24h"},  {"--backoff", "1s,1d"},
        {"--dup-window", "7d"}, {"--txn-max-age", "3650d"}, {"--replicas", "5"},   {"--publish-timeout", "5m"},
    };
    for (size_t i = 0; i < sizeof accepted / sizeof accepted[0]; i++) {
        verror e = {0};
        cr_assert_eq(parse(accepted[i], &e), V_OK, "%s %s: %s", accepted[i][0], accepted[i][1], e.msg);
    }
    /* the environment is held to the same bounds */
    verror e = {0};
    setenv("VERDICT_BUDGET", "0ms", 1);
    vstatus rc = parse((const char *const[]){NULL}, &e);
    unsetenv("VERDICT_BUDGET");
    cr_assert_eq(rc, V_EINVAL);
    cr_assert(strstr(e.msg, "VERDICT_BUDGET"), "%s", e.msg);
    /* a duplicate window longer than the retention cannot be created by the server: said up front */
    cr_assert_eq(parse((const char *const[]){"--dup-window", "2d", "--txn-max-age", "1d", NULL}, &e), V_EINVAL);
    cr_assert(strstr(e.msg, "--dup-window"), "%s", e.msg);
}

Test(lifecycle, the_binary_refuses_a_zero_budget)
{
    const char *argv[] = {"verdict", "serve", "--nats-url", srv.url, "--budget", "0ms", NULL};
    engine_pid = verdict_spawn(argv, logp);
    int st = child_wait(engine_pid, 5000);
    engine_pid = st >= 0 ? 0 : engine_pid;
    cr_assert_eq(st, 2, "a zero budget must be a usage error; see %s", logp);
    cr_assert(file_wait_for(logp, "--budget", 0));
}

/* Counters summed over a long uptime: the exposition converts microseconds to nanoseconds without overflow. */
Test(lifecycle, saturating_multiplication)
{
    cr_assert_eq(i64_mul_sat(123456, 1000), 123456000);
    cr_assert_eq(i64_mul_sat(INT64_MAX / 999, 1000), INT64_MAX);
    cr_assert_eq(i64_mul_sat(-(INT64_MAX / 999), 1000), INT64_MIN);
    cr_assert_eq(i64_mul_sat(0, INT64_MAX), 0);
}

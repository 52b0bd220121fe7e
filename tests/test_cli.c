/* test_cli.c - the `verdict` binary as a new user meets it: usage errors exit 2 and name what was wrong,
 * runtime failures exit 1 and say why (an unreachable server in its own words), read-only commands create
 * nothing, and `verdict decision` prints a stored decision. Runs the built binary; where a server is needed,
 * a real nats-server from the harness. */

#include "client.h"
#include "harness.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static char outp[256];
static char out[65536];

/* Runs verdict with argv (NULL-terminated; argv[0] ignored), stdout and stderr into out; its exit status. */
static int run(const char *const argv[], int timeout_ms)
{
    if (!outp[0])
        temp_path(outp, sizeof outp, ".out");
    unlink(outp);
    pid_t pid = verdict_spawn(argv, outp);
    int rc = child_wait(pid, timeout_ms);
    if (rc == -1) {
        kill(pid, SIGKILL);
        child_wait(pid, 5000);
    }
    out[0] = 0;
    FILE *f = fopen(outp, "r");
    if (f) {
        size_t n = fread(out, 1, sizeof out - 1, f);
        out[n] = 0;
        fclose(f);
    }
    unlink(outp);
    return rc;
}

#define EXPECT(rc_, needle, ...)                                                                                  \
    do {                                                                                                          \
        const char *const a_[] = {"verdict", __VA_ARGS__, NULL};                                                  \
        int r_ = run(a_, 20000);                                                                                  \
        cr_expect_eq(r_, (rc_), "`%s %s`: exit %d, want %d; output:\n%s", a_[1], a_[2] ? a_[2] : "", r_, (rc_),   \
                     out);                                                                                        \
        cr_expect(strstr(out, (needle)) != NULL, "`%s %s`: output lacks \"%s\":\n%s", a_[1], a_[2] ? a_[2] : "", \
                  (needle), out);                                                                                 \
    } while (0)

/* --- usage errors: exit 2, the bad word named, nothing connected or started ------------------------------ */

Test(cli, usage_errors_exit_2_and_name_the_mistake)
{
    EXPECT(2, "unknown option '--frob'", "check", "--frob");
    EXPECT(2, "unknown subcommand 'bogus'", "rules", "bogus");
    EXPECT(2, "needs a FILE", "rules", "push");
    EXPECT(2, "'abc' is not a sequence number", "dlq", "show", "abc");
    EXPECT(2, "unknown reason 'bogus'", "dlq", "ls", "--reason", "bogus");
    EXPECT(2, "unknown subcommand 'frob'", "dlq", "frob");
    EXPECT(2, "is not a transaction id", "decision", "no.dots");
    EXPECT(2, "usage: verdict decision", "decision");
    EXPECT(2, "unknown option '--frob'", "decision", "t1", "--frob");
    EXPECT(2, "is not HOST:PORT", "serve", "--metrics-addr", "localhost");
    EXPECT(2, "is not HOST:PORT", "serve", "--metrics-addr", "localhost:99999");
    /* found before connecting: the URL names a port nothing listens on */
    char closed[64];
    snprintf(closed, sizeof closed, "nats://127.0.0.1:%d", free_port());
    EXPECT(2, "unknown subcommand 'bogus'", "lists", "bogus", "--nats-url", closed);
    EXPECT(2, "unknown subcommand 'bogus'", "profiles", "bogus", "--nats-url", closed);
    EXPECT(2, "unknown argument '--frob'", "replay", "--frob", "--nats-url", closed);
    EXPECT(2, "unknown subcommand 'bogus'", "rules", "bogus", "--nats-url", closed);
}

/* A usage error is found before anything is started: no private nats-server for a demo that cannot run. */
Test(cli, demo_no_engine_without_a_url_refuses_before_starting_a_server)
{
    unsetenv("VERDICT_NATS_URL");
    EXPECT(2, "--no-engine needs --nats-url", "demo", "--no-engine");
    cr_expect(strstr(out, "starting a private nats-server") == NULL, "a server was started first:\n%s", out);
}

/* count()'s key must be a transaction field: `amount` is one the engine computes, and the message must not
 * suggest the very word typed. */
Test(cli, check_count_of_a_derived_feature_names_the_fields_it_takes)
{
    char p[256];
    temp_path(p, sizeof p, ".rules");
    tc_write_file(p, "rule r1 decline \"x\" when count(amount, 1h) > 3\n");
    EXPECT(1, "computed by the engine", "check", p);
    cr_expect(strstr(out, "did you mean 'amount'") == NULL, "%s", out);
    cr_expect(strstr(out, "card_id") != NULL, "the message lists the fields count() takes:\n%s", out);
    tc_write_file(p, "rule r1 decline \"x\" when count(card_idd, 1h) > 3\n");
    EXPECT(1, "did you mean 'card_id'?", "check", p);
    unlink(p);
}

Test(cli, a_directory_given_as_a_rules_file_says_so)
{
    char d[256];
    temp_path(d, sizeof d, ".dir");
    cr_assert_eq(mkdir(d, 0700), 0);
    EXPECT(1, "is a directory", "check", d);
    rmdir(d);
}

/* --- connection failures: exit 1, in the operator's words ----------------------------------------------- */

Test(cli, connection_failures_say_which_url_and_why)
{
    char closed[64];
    snprintf(closed, sizeof closed, "nats://127.0.0.1:%d", free_port());
    EXPECT(1, "connection refused", "decision", "t1", "--nats-url", closed);
    EXPECT(1, "unknown host 'no-such-host.invalid'", "decision", "t1", "--nats-url", "nats://no-such-host.invalid:4222");
    /* refused before any connection: with something listening on the port (CI found a NATS server with users on
     * 4222), nats.c would connect to an http:// URL's host and port all the same and report what answered */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t ll = sizeof la;
    cr_assert(lfd >= 0 && bind(lfd, (struct sockaddr *)&la, sizeof la) == 0 && listen(lfd, 4) == 0 &&
              getsockname(lfd, (struct sockaddr *)&la, &ll) == 0);
    char http[64];
    snprintf(http, sizeof http, "http://127.0.0.1:%d", ntohs(la.sin_port));
    EXPECT(1, "is not a NATS URL scheme", "rules", "show", "--nats-url", http);
    close(lfd);
    EXPECT(1, "is not a number", "dlq", "ls", "--nats-url", "nats://u:s3cret@127.0.0.1:abc");
    cr_expect(strstr(out, "s3cret") == NULL, "a password in the URL is printed:\n%s", out);
}

/* --- against a server ------------------------------------------------------------------------------------- */

static test_server srv;
static natsConnection *nc;
static jsCtx *js;
static char logp[256];

static void setup(void)
{
    tc_fixture_up(&srv, &nc, &js, logp, sizeof logp);
}

static void teardown(void)
{
    tc_fixture_down(&srv, nc, js, logp);
}

static void stop_engine(pid_t pid)
{
    kill(pid, SIGTERM);
    if (child_wait(pid, 15000) == -1) {
        kill(pid, SIGKILL);
        child_wait(pid, 5000);
    }
}

static bool bucket_exists(const char *name)
{
    kvStore *kv = NULL;
    natsStatus s = js_KeyValue(&kv, js, name);
    kvStore_Destroy(kv);
    return s == NATS_OK;
}

Test(cli, read_only_commands_create_no_bucket, .init = setup, .fini = teardown)
{
    EXPECT(1, "stream DECISIONS not found", "decision", "t1", "--nats-url", srv.url);
    EXPECT(0, "no rules bucket verdict_rules", "rules", "show", "--nats-url", srv.url);
    EXPECT(0, "nothing to clear", "rules", "clear", "--nats-url", srv.url);
    EXPECT(0, "no bucket verdict_lists yet", "lists", "ls", "--nats-url", srv.url);
    cr_expect(!bucket_exists("verdict_rules"), "rules show/clear created the rules bucket");
    cr_expect(!bucket_exists("verdict_lists"), "lists ls created the lists bucket");
}

Test(cli, rules_push_to_a_prefix_no_engine_uses_warns, .init = setup, .fini = teardown)
{
    char p[256];
    temp_path(p, sizeof p, ".rules");
    tc_write_file(p, "rule big decline \"amount over 100\" when amount > 100\n");
    EXPECT(0, "no engine has run with --prefix 'acme'", "rules", "push", p, "--prefix", "acme", "--nats-url", srv.url);
    unlink(p);
}

Test(cli, decision_prints_the_stored_decision_readably_and_as_json, .init = setup, .fini = teardown)
{
    char rp[256];
    temp_path(rp, sizeof rp, ".rules");
    tc_write_file(rp, "rule big decline \"amount over 100\" when amount > 100\n");
    pid_t pid = tc_start_engine(srv.url, logp, (const char *const[]){"--rules", rp, "--engine-id", "eng-cli-1", NULL});
    Transaction t;
    tc_txn(&t, "cli-dec-1", 50000);
    cr_assert(tc_publish(js, "txn.ecom.x", &t));
    natsMsg *m = NULL;
    for (int i = 0; i < 500 && !(m = tc_find_decision(js, "cli-dec-1")); i++)
        tc_sleep_ms(20);
    cr_assert(m, "no decision within 10 s; see %s", logp);
    natsMsg_Destroy(m);

    EXPECT(0, "DECLINE", "decision", "cli-dec-1", "--nats-url", srv.url);
    cr_expect(strstr(out, "big: amount over 100"), "reason with its text:\n%s", out);
    cr_expect(strstr(out, "eng-cli-1"), "engine id:\n%s", out);
    cr_expect(strstr(out, "queued") && strstr(out, "latency") && strstr(out, "decided_at") &&
                  strstr(out, "rules_version") && strstr(out, "budget_exceeded") && strstr(out, "degraded"),
              "%s", out);

    EXPECT(0, "\"outcome\":\"decline\"", "decision", "cli-dec-1", "--json", "--nats-url", srv.url);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    cr_assert(j, "not JSON (%s): %s", je.text, out);
    cr_expect_str_eq(json_string_value(json_object_get(j, "txn_id")), "cli-dec-1");
    cr_expect_str_eq(json_string_value(json_object_get(j, "engine_id")), "eng-cli-1");
    json_t *r0 = json_array_get(json_object_get(j, "reasons"), 0);
    cr_expect_str_eq(json_string_value(json_object_get(r0, "rule_id")), "big");
    cr_expect_str_eq(json_string_value(json_object_get(r0, "text")), "amount over 100");
    cr_expect(json_is_integer(json_object_get(j, "latency_us")) && json_is_integer(json_object_get(j, "queued_us")));
    cr_expect(json_is_boolean(json_object_get(j, "budget_exceeded")) && json_is_boolean(json_object_get(j, "degraded")));
    json_decref(j);

    EXPECT(3, "unknown: no decision stored for cli-nope", "decision", "cli-nope", "--nats-url", srv.url);
    stop_engine(pid);
    unlink(rp);
}

/* Issue 21: a payment service asks where its transaction stands. Each answer has its own exit status: decided
 * 0, unknown 3, pending 4 (in TXN, the engine has not finished with it), dead-lettered 5; a backlog larger than
 * --scan-max cannot be told (1). */
Test(cli, decision_tells_pending_dead_lettered_and_unknown_apart, .init = setup, .fini = teardown)
{
    pid_t pid = tc_start_engine(srv.url, logp, NULL);
    Transaction t;
    tc_txn(&t, "cli-done", 1000);
    cr_assert(tc_publish(js, "txn.ecom.x", &t));
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = "cli-dead";
    jsPubAck *pa = NULL;
    cr_assert_eq(js_Publish(&pa, js, "txn.ecom.x", "\xff\xfe", 2, &po, NULL), NATS_OK);
    jsPubAck_Destroy(pa);
    cr_assert(tc_wait_consumer_idle(js, 10000), "see %s", logp);
    cr_assert_eq(tc_wait_msgs(js, "DLQ", 1, 5000), 1, "see %s", logp);
    stop_engine(pid);
    /* the engine is down: these stay pending */
    tc_txn(&t, "cli-pend-0", 1000);
    cr_assert(tc_publish(js, "txn.ecom.x", &t));
    tc_txn(&t, "cli-pend-1", 1000);
    cr_assert(tc_publish(js, "txn.ecom.y", &t));

    EXPECT(0, "APPROVE", "decision", "cli-done", "--nats-url", srv.url);
    EXPECT(4, "pending: cli-pend-1 is in TXN at sequence 4", "decision", "cli-pend-1", "--nats-url", srv.url);
    EXPECT(4, "\"status\":\"pending\"", "decision", "cli-pend-0", "--json", "--nats-url", srv.url);
    EXPECT(5, "dead-lettered: cli-dead is in DLQ at sequence 1 (decode_error)", "decision", "cli-dead", "--nats-url",
           srv.url);
    EXPECT(5, "\"status\":\"dead_lettered\"", "decision", "cli-dead", "--json", "--nats-url", srv.url);
    EXPECT(3, "unknown: no decision stored for cli-nope", "decision", "cli-nope", "--nats-url", srv.url);
    EXPECT(3, "\"status\":\"unknown\"", "decision", "cli-nope", "--json", "--nats-url", srv.url);
    EXPECT(1, "more than --scan-max 1 messages", "decision", "cli-pend-1", "--scan-max", "1", "--nats-url", srv.url);
    EXPECT(2, "--scan-max needs a count", "decision", "cli-pend-1", "--scan-max", "0", "--nats-url", srv.url);
}

/* A transaction without a card_id is dead-lettered as missing_field: its bytes decode, and `dlq show` shows
 * the transaction beside what is missing instead of calling the payload undecodable. */
Test(cli, dlq_show_of_a_missing_field_letter_shows_the_transaction, .init = setup, .fini = teardown)
{
    pid_t pid = tc_start_engine(srv.url, logp, NULL);
    Transaction t;
    tc_txn(&t, "cli-nocard", 1000);
    t.card_id = "";
    cr_assert(tc_publish(js, "txn.ecom.x", &t));
    cr_assert(tc_wait_msgs(js, "DLQ", 1, 10000) >= 1, "no dead letter; see %s", logp);
    EXPECT(0, "card_id is required", "dlq", "show", "1", "--nats-url", srv.url);
    cr_expect(strstr(out, "does not decode") == NULL, "%s", out);
    cr_expect(strstr(out, "cli-nocard"), "the decoded transaction is shown:\n%s", out);
    EXPECT(1, "no dead letter at sequence 99", "dlq", "show", "99", "--nats-url", srv.url);
    /* card data is masked as `decision --txn` masks it (log_mask), never shown in clear */
    tc_txn(&t, "cli-lowercur", 1000);
    t.currency = "eur";
    cr_assert(tc_publish(js, "txn.ecom.x", &t));
    cr_assert(tc_wait_msgs(js, "DLQ", 2, 10000) >= 2, "no dead letter; see %s", logp);
    EXPECT(0, "cli-lowercur", "dlq", "show", "2", "--nats-url", srv.url);
    cr_expect(!strstr(out, "tok_card_1") && !strstr(out, "dev_1"), "card data in clear:\n%s", out);
    cr_expect(strstr(out, "******rd_1"), "the card id masked to its last four:\n%s", out);
    stop_engine(pid);
}

/* --metrics-addr takes a host name as the docs' examples do, and /metrics tells the process's resident size
 * from the state's reservation. */
Test(cli, metrics_addr_accepts_localhost_and_exports_resident_memory, .init = setup, .fini = teardown)
{
    int port = free_port();
    char addr[64];
    snprintf(addr, sizeof addr, "localhost:%d", port);
    pid_t pid = tc_start_engine(srv.url, logp, (const char *const[]){"--metrics-addr", addr, NULL});
    static char body[65536];
    cr_assert(http_get_local(port, "/metrics", body, sizeof body), "no /metrics on %s; see %s", addr, logp);
    cr_expect(strstr(body, "\nprocess_resident_memory_bytes "), "%s", body);
    cr_expect(strstr(body, "\nverdict_state_memory_bytes "), "%s", body);
    stop_engine(pid);
}

/* A metrics port in use: exit 1, and every line on the engine's output is JSON (libmicrohttpd's own message
 * "Failed to bind to port" used to come first, bare). */
Test(cli, a_metrics_port_in_use_fails_with_json_lines_only, .init = setup, .fini = teardown)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(fd, 1), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));
    const char *const a[] = {"verdict", "serve", "--nats-url", srv.url, "--metrics-addr", addr, NULL};
    int rc = run(a, 20000);
    close(fd);
    cr_expect_eq(rc, 1, "exit %d:\n%s", rc, out);
    cr_expect(strstr(out, "in use"), "%s", out);
    for (char *line = out; *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : line + strlen(line))
        if (*line != '\n')
            cr_expect_eq(*line, '{', "a line that is not JSON:\n%s", out);
}

/* The bucket holds what was pushed; an engine that refused it runs the previous version, and `rules show`
 * says so instead of presenting the refused text as what is in force. */
Test(cli, rules_show_says_which_version_each_engine_runs, .init = setup, .fini = teardown)
{
    char rp[256];
    temp_path(rp, sizeof rp, ".rules");
    tc_write_file(rp, "rule big decline \"amount over 100\" when amount > 100\n");
    pid_t pid = tc_start_engine(srv.url, logp, (const char *const[]){"--rules", rp, "--engine-id", "eng-show", NULL});
    /* a text that does not compile, put past `rules push`'s check: the engine refuses it */
    kvStore *kv = NULL;
    cr_assert_eq(js_KeyValue(&kv, js, "verdict_rules"), NATS_OK);
    cr_assert_eq(kvStore_PutString(NULL, kv, "rules", "rule x decline \"x\" when amount >\n"), NATS_OK);
    kvStore_Destroy(kv);
    cr_assert(file_wait_for(logp, "refused", 10000), "the engine did not refuse; see %s", logp);
    EXPECT(0, "engine eng-show runs rules version", "rules", "show", "--nats-url", srv.url);
    cr_expect(strstr(out, "NOT this one"), "%s", out);
    stop_engine(pid);
    unlink(rp);
}

/* --- the operator's toolbox without the nats CLI: status, watch, decision --txn, rules history ---------- */

Test(cli, toolbox_usage_errors_exit_2_before_connecting)
{
    char closed[64];
    snprintf(closed, sizeof closed, "nats://127.0.0.1:%d", free_port());
    EXPECT(2, "unknown option '--frob'", "status", "--frob", "--nats-url", closed);
    EXPECT(2, "--wait takes milliseconds", "status", "--wait", "5", "--nats-url", closed);
    EXPECT(2, "unknown outcome 'maybe'", "watch", "--outcome", "approve,maybe", "--nats-url", closed);
    EXPECT(2, "--count takes 1-1000000", "watch", "--count", "0", "--nats-url", closed);
    EXPECT(2, "--timeout takes a duration", "watch", "--timeout", "soon", "--nats-url", closed);
    EXPECT(2, "is not a transaction id", "watch", "--txn", "a.b", "--nats-url", closed);
    EXPECT(2, "--card takes a card token", "watch", "--card", "", "--nats-url", closed);
    EXPECT(2, "--rule needs a value", "watch", "--rule");
    EXPECT(2, "takes no arguments", "rules", "history", "extra", "--nats-url", closed);
}

static json_t *out_json(void)
{
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    cr_assert(j, "not JSON (%s): %s", je.text, out);
    return j;
}

static void decide(const char *id, int64_t amount)
{
    Transaction t;
    tc_txn(&t, id, amount);
    cr_assert(tc_publish(js, "txn.ecom.x", &t));
}

static void wait_decided(const char *id)
{
    natsMsg *m = NULL;
    for (int i = 0; i < 500 && !(m = tc_find_decision(js, id)); i++)
        tc_sleep_ms(20);
    cr_assert(m, "no decision for %s within 10 s; see %s", id, logp);
    natsMsg_Destroy(m);
}

Test(cli, status_shows_streams_consumer_and_engines, .init = setup, .fini = teardown)
{
    /* nothing deployed yet: said, not an error, and nothing created */
    EXPECT(0, "not found", "status", "--nats-url", srv.url);
    cr_expect(strstr(out, "ENGINES (0 answered"), "%s", out);
    cr_expect_eq(tc_stream_msgs(js, "TXN"), 0u);
    jsStreamInfo *si = NULL;
    cr_expect_neq(js_GetStreamInfo(&si, js, "TXN", NULL, NULL), NATS_OK, "status created TXN");
    jsStreamInfo_Destroy(si);

    char rp[256];
    temp_path(rp, sizeof rp, ".rules");
    tc_write_file(rp, "rule big decline \"amount over 100\" when amount > 100\n");
    pid_t pid = tc_start_engine(srv.url, logp, (const char *const[]){"--rules", rp, "--engine-id", "eng-st", NULL});
    decide("st-1", 50);
    decide("st-2", 50000);
    decide("st-3", 70);
    wait_decided("st-3");
    cr_assert(tc_wait_consumer_idle(js, 10000));

    EXPECT(0, "CONSUMER TXN/verdict", "status", "--nats-url", srv.url);
    cr_expect(strstr(out, "CONSUMER VERDICT_ADVISORIES/verdict_dlq"), "%s", out);
    cr_expect(strstr(out, "eng-st") && strstr(out, "DECISIONS") && strstr(out, "VERDICT_ADVISORIES") &&
                  strstr(out, "pending 0") && strstr(out, "ENGINES (1 answered"),
              "%s", out);

    EXPECT(0, "\"streams\"", "status", "--json", "--nats-url", srv.url);
    json_t *j = out_json();
    json_t *txn = json_array_get(json_object_get(j, "streams"), 0);
    cr_expect_str_eq(json_string_value(json_object_get(txn, "name")), "TXN");
    cr_expect_eq(json_integer_value(json_object_get(txn, "messages")), 3);
    cr_expect_eq(json_integer_value(json_object_get(txn, "last_seq")), 3);
    cr_expect_eq(json_integer_value(json_object_get(txn, "replicas")), 1);
    json_t *dec = json_array_get(json_object_get(j, "streams"), 1);
    cr_expect_eq(json_integer_value(json_object_get(dec, "messages")), 3);
    json_t *con = json_object_get(j, "consumer");
    cr_expect(json_is_true(json_object_get(con, "exists")));
    cr_expect_eq(json_integer_value(json_object_get(con, "pending")), 0);
    cr_expect_eq(json_integer_value(json_object_get(con, "ack_pending")), 0);
    cr_expect_eq(json_integer_value(json_object_get(con, "ack_floor_stream_seq")), 3);
    cr_expect(json_integer_value(json_object_get(con, "waiting_pulls")) >= 1, "the engine's workers pull: %s", out);
    json_t *dc = json_object_get(j, "dlq_consumer");
    cr_expect_str_eq(json_string_value(json_object_get(dc, "name")), "verdict_dlq");
    cr_expect_str_eq(json_string_value(json_object_get(dc, "stream")), "VERDICT_ADVISORIES");
    cr_expect(json_is_true(json_object_get(dc, "exists")), "%s", out);
    json_t *e0 = json_array_get(json_object_get(j, "engines"), 0);
    cr_expect_str_eq(json_string_value(json_object_get(e0, "id")), "eng-st");
    cr_expect_eq(json_integer_value(json_object_get(e0, "decisions")), 3);
    cr_expect(json_integer_value(json_object_get(e0, "uptime_s")) >= 0);
    cr_expect_eq(strlen(json_string_value(json_object_get(e0, "rules_version"))), 16u);
    json_decref(j);
    stop_engine(pid);
    unlink(rp);
}

/* A server with two users: admin may do anything, reader may not get messages from the lease bucket (its
 * stream info it may read): a status run as reader finds the lease but cannot read it. */
static void setup_lease_auth(void)
{
    const char *conf = "authorization {\n  users = [\n    {user: admin, password: adminpw}\n"
                       "    {user: reader, password: readerpw, permissions: {publish: {deny: [\n"
                       "      \"$JS.API.DIRECT.GET.KV_verdict_leases\", \"$JS.API.DIRECT.GET.KV_verdict_leases.>\",\n"
                       "      \"$JS.API.STREAM.MSG.GET.KV_verdict_leases\"]}}}\n  ]\n}\n";
    cr_assert(server_start(&srv, conf), "nats-server did not start");
    char url[128];
    snprintf(url, sizeof url, "nats://admin:adminpw@127.0.0.1:%d", srv.port);
    nc = tc_connect(url);
    cr_assert_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    temp_path(logp, sizeof logp, ".log");
}

/* `verdict status`'s lease: none when there is no entry, unreadable (with the reason) when there is one it cannot
 * read or that is not a lease; before, every failure read as "none" (and a garbled entry as "released"). */
Test(cli, status_tells_no_lease_from_an_unreadable_one, .init = setup_lease_auth, .fini = teardown)
{
    char admin[128], reader[128];
    snprintf(admin, sizeof admin, "nats://admin:adminpw@127.0.0.1:%d", srv.port);
    snprintf(reader, sizeof reader, "nats://reader:readerpw@127.0.0.1:%d", srv.port);
    EXPECT(0, "LEASE verdict: none", "status", "--wait", "100", "--nats-url", admin);
    EXPECT(0, "\"lease\"", "status", "--json", "--wait", "100", "--nats-url", admin);
    json_t *j = out_json();
    json_t *l = json_object_get(j, "lease");
    cr_expect(json_is_false(json_object_get(l, "exists")), "%s", out);
    cr_expect_null(json_object_get(l, "error"), "no bucket is no lease, not an error: %s", out);
    json_decref(j);

    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = "verdict_leases";
    kvStore *kv = NULL;
    cr_assert_eq(js_CreateKeyValue(&kv, js, &kc), NATS_OK);
    uint64_t rev = 0;
    cr_assert_eq(kvStore_PutString(&rev, kv, "verdict", "not a lease"), NATS_OK);
    EXPECT(0, "LEASE verdict: unreadable: the entry is not a lease", "status", "--wait", "100", "--nats-url", admin);
    cr_expect(!strstr(out, "released"), "a garbled entry is not a released lease: %s", out);

    cr_assert_eq(kvStore_PutString(&rev, kv, "verdict", "{\"owner\":\"eng-x/0badf00d\",\"epoch\":3,\"ttl_ms\":3000}"),
                 NATS_OK);
    EXPECT(0, "LEASE verdict: owned by eng-x/0badf00d, epoch 3, TTL 3000 ms", "status", "--wait", "100", "--nats-url",
           admin);
    /* the entry is there, the reader cannot get it: unreadable, with the reason, never "none" */
    EXPECT(0, "LEASE verdict: unreadable: cannot read verdict_leases/verdict: ", "status", "--wait", "100",
           "--nats-url", reader);
    cr_expect(!strstr(out, "LEASE verdict: none"), "%s", out);
    EXPECT(0, "\"lease\"", "status", "--json", "--wait", "100", "--nats-url", reader);
    /* the denied get is also logged on stderr ("Not Permitted"), before the JSON */
    const char *doc = strstr(out, "{\"streams\"");
    cr_assert_not_null(doc, "%s", out);
    json_error_t je;
    j = json_loads(doc, 0, &je);
    cr_assert_not_null(j, "not JSON (%s): %s", je.text, doc);
    l = json_object_get(j, "lease");
    cr_expect(json_is_string(json_object_get(l, "error")), "the JSON says why: %s", out);
    json_decref(j);
    kvStore_Destroy(kv);
}

/* Spawns `verdict watch ARGS` with its output into path; returns once it says it is watching. */
static pid_t watch_start(const char *const argv[], const char *path)
{
    pid_t pid = verdict_spawn(argv, path);
    cr_assert(pid > 0);
    cr_assert(file_wait_for(path, "watching ", 10000), "watch did not subscribe");
    return pid;
}

static void read_file(const char *path)
{
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (f) {
        size_t n = fread(out, 1, sizeof out - 1, f);
        out[n] = 0;
        fclose(f);
    }
}

Test(cli, watch_prints_live_decisions_filtered_and_disturbs_nothing, .init = setup, .fini = teardown)
{
    char rp[256], wp[256], wp2[256], wp3[256];
    temp_path(rp, sizeof rp, ".rules");
    temp_path(wp, sizeof wp, ".watch");
    temp_path(wp2, sizeof wp2, ".watch");
    temp_path(wp3, sizeof wp3, ".watch");
    tc_write_file(rp, "rule big decline \"amount over 100\" when amount > 100\n"
                      "rule mid review \"amount over 50\" when amount > 50 and amount <= 100\n");
    pid_t pid = tc_start_engine(srv.url, logp, (const char *const[]){"--rules", rp, NULL});
    pid_t w1 = watch_start((const char *const[]){"verdict", "watch", "--outcome", "decline", "--count", "2",
                                                 "--timeout", "20s", "--nats-url", srv.url, NULL},
                           wp);
    pid_t w2 = watch_start((const char *const[]){"verdict", "watch", "--rule", "mid", "--json", "--count", "1",
                                                 "--timeout", "20s", "--nats-url", srv.url, NULL},
                           wp2);
    pid_t w3 = watch_start((const char *const[]){"verdict", "watch", "--card", "tok_card_other", "--count", "1",
                                                 "--timeout", "20s", "--nats-url", srv.url, NULL},
                           wp3);
    decide("w-approve", 10);
    decide("w-review", 7000); /* 70.00: rules read amount in major units */
    Transaction t;
    tc_txn(&t, "w-other-card", 20);
    t.card_id = "tok_card_other";
    cr_assert(tc_publish(js, "txn.ecom.x", &t));
    decide("w-decline-1", 50000);
    decide("w-decline-2", 60000);
    cr_expect_eq(child_wait(w1, 20000), 0);
    read_file(wp);
    cr_expect(strstr(out, "w-decline-1") && strstr(out, "w-decline-2") && strstr(out, "DECLINE") &&
                  strstr(out, " us  big"),
              "%s", out);
    cr_expect(!strstr(out, "w-approve") && !strstr(out, "w-review"), "a filtered-out decision:\n%s", out);
    cr_expect_eq(child_wait(w2, 20000), 0);
    read_file(wp2);
    char *line = strchr(out, '{');
    cr_assert(line, "%s", out);
    json_t *j = json_loads(line, JSON_DISABLE_EOF_CHECK, NULL);
    cr_assert(j, "%s", out);
    cr_expect_str_eq(json_string_value(json_object_get(j, "txn_id")), "w-review");
    cr_expect_str_eq(json_string_value(json_object_get(j, "outcome")), "review");
    json_decref(j);
    cr_expect_eq(child_wait(w3, 20000), 0);
    read_file(wp3);
    cr_expect(strstr(out, "w-other-card") && !strstr(out, "w-approve") && !strstr(out, "w-decline"),
              "--card shows that card's decisions only:\n%s", out);
    cr_expect(!strstr(out, "tok_card_other") && strstr(out, "for card **********ther"), "the card token in clear:\n%s",
              out);

    /* --txn narrows the subscription; a --count not reached within --timeout exits 1 */
    const char *const a[] = {"verdict",   "watch", "--txn",      "w-never", "--count", "1",
                             "--timeout", "300ms", "--nats-url", srv.url,   NULL};
    int rc = run(a, 10000);
    cr_expect_eq(rc, 1, "exit %d:\n%s", rc, out);
    cr_expect(strstr(out, "decision.*.w-never") && strstr(out, "0 of 1 decisions"), "%s", out);

    /* it created no consumer anywhere: nothing for the server to keep or redeliver */
    jsConsumerNamesList *cl = NULL;
    natsStatus s = js_ConsumerNames(&cl, js, "DECISIONS", NULL, NULL);
    cr_expect(s == NATS_NOT_FOUND || (s == NATS_OK && cl->Count == 0), "watch left a consumer on DECISIONS");
    jsConsumerNamesList_Destroy(cl);
    stop_engine(pid);
    unlink(rp);
    unlink(wp);
    unlink(wp2);
    unlink(wp3);
}

Test(cli, decision_txn_shows_the_transaction_with_card_data_masked, .init = setup, .fini = teardown)
{
    pid_t pid = tc_start_engine(srv.url, logp, NULL);
    decide("txn-show-0", 1);
    Transaction t;
    tc_txn(&t, "txn-show-1", 4321);
    t.card_id = "tok_4000123412349876";
    t.email_hash = "5f4dcc3b5aa765d61d8327deb882cf99";
    cr_assert(tc_publish(js, "txn.ecom.x", &t));
    decide("txn-show-2", 1);
    wait_decided("txn-show-2");

    EXPECT(0, "card data masked", "decision", "txn-show-1", "--txn", "--nats-url", srv.url);
    cr_expect(strstr(out, "4321 EUR") && strstr(out, "acct_1") && strstr(out, "txn.ecom.x seq 2"), "%s", out);
    cr_expect(strstr(out, "****************9876"), "the card id's last four only:\n%s", out);
    cr_expect(!strstr(out, "tok_4000") && !strstr(out, "5f4dcc3b") && !strstr(out, "10.0.0.1"),
              "card data in clear:\n%s", out);

    EXPECT(0, "\"transaction\"", "decision", "txn-show-1", "--txn", "--json", "--nats-url", srv.url);
    json_t *j = out_json();
    json_t *tx = json_object_get(j, "transaction");
    cr_expect_str_eq(json_string_value(json_object_get(tx, "txn_id")), "txn-show-1");
    cr_expect_eq(json_integer_value(json_object_get(tx, "amount_minor")), 4321);
    cr_expect_str_eq(json_string_value(json_object_get(tx, "card_id")), "****************9876");
    cr_expect_str_eq(json_string_value(json_object_get(tx, "ip")), "****.0.1");
    cr_expect_eq(json_integer_value(json_object_get(tx, "stream_seq")), 2);
    json_decref(j);

    /* without --txn nothing about the transaction is read or shown */
    EXPECT(0, "outcome", "decision", "txn-show-1", "--nats-url", srv.url);
    cr_expect(!strstr(out, "card data masked"), "%s", out);
    stop_engine(pid);
}

Test(cli, rules_history_says_which_text_was_in_force_from_when_to_when, .init = setup, .fini = teardown)
{
    EXPECT(0, "no rules bucket verdict_rules", "rules", "history", "--nats-url", srv.url);
    char a[256], b[256];
    temp_path(a, sizeof a, ".rules");
    temp_path(b, sizeof b, ".rules");
    tc_write_file(a, "rule big decline \"amount over 100\" when amount > 100\n");
    tc_write_file(b, "rule big decline \"amount over 500\" when amount > 500\nrule r2 review \"x\" when amount > 50\n");
    EXPECT(0, "revision 1", "rules", "push", a, "--nats-url", srv.url);
    EXPECT(0, "revision 2", "rules", "push", b, "--nats-url", srv.url);
    kvStore *kv = NULL;
    cr_assert_eq(js_KeyValue(&kv, js, "verdict_rules"), NATS_OK);
    cr_assert_eq(kvStore_PutString(NULL, kv, "rules", "rule x decline \"x\" when amount >\n"), NATS_OK);
    kvStore_Destroy(kv);
    EXPECT(0, "cleared", "rules", "clear", "--nats-url", srv.url);

    EXPECT(0, "REVISION", "rules", "history", "--nats-url", srv.url);
    cr_expect(strstr(out, "does not compile: refused"), "%s", out);
    cr_expect(strstr(out, "delete           engines run their --rules file"), "%s", out);
    cr_expect(strstr(out, " now "), "the last period runs until now:\n%s", out);

    EXPECT(0, "\"revision\":1", "rules", "history", "--json", "--text", "--nats-url", srv.url);
    int n = 0;
    char prev_to[64] = "";
    static char copy[65536];
    str_copy(copy, sizeof copy, out);
    for (char *save = NULL, *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save), n++) {
        json_t *j = json_loads(l, 0, NULL);
        cr_assert(j, "not a JSON line: %s", l);
        cr_expect_eq(json_integer_value(json_object_get(j, "revision")), n + 1);
        if (prev_to[0])
            cr_expect_str_eq(json_string_value(json_object_get(j, "from")), prev_to, "periods follow each other");
        const char *to = json_string_value(json_object_get(j, "to"));
        str_copy(prev_to, sizeof prev_to, to ? to : "");
        if (n == 1) {
            cr_expect_eq(json_integer_value(json_object_get(j, "rules")), 2);
            cr_expect(strstr(json_string_value(json_object_get(j, "text")), "amount over 500"));
        }
        if (n == 2)
            cr_expect(json_is_false(json_object_get(j, "compiles")));
        if (n == 3)
            cr_expect_str_eq(json_string_value(json_object_get(j, "operation")), "delete");
        json_decref(j);
    }
    cr_expect_eq(n, 4, "%s", out);
    cr_expect_str_eq(prev_to, "", "the last revision has no end");
    unlink(a);
    unlink(b);
}

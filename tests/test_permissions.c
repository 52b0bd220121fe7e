/* test_permissions.c - the least-privilege NATS permissions in compose/nats-permissions.conf (documented in
 * docs/operations.md) are enough: the engine starts, rebuilds, decides, answers requests and dead-letters as user
 * "verdict"; a payment service as user "payments" gets decisions by request/reply and by a JetStream publish. And
 * they are no more than that: the payment service cannot read the decisions stream, subscribe to decisions, or
 * touch the engine's consumer. The server's own log must show no permission violation by the engine (read in the
 * log formats of nats-server 2.10 and 2.11+, and proven readable by a deliberate violation). */
#include "client.h"
#include "harness.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static test_server srv;
static natsConnection *admin; /* no permissions set: sees everything, for the test's own checks */
static jsCtx *ajs;
static char logp[256];
static char url_admin[160], url_pay[160];

#define ENGINE_PW "engine-pw-5f1c"
#define PAY_PW "pay-pw-77ad"
#define ADMIN_PW "admin-pw-0b3e"

static void setup(void)
{
    /* the permissions file itself, not a copy of it (nats-server includes only relative paths, so it is inlined) */
    char path[512];
    snprintf(path, sizeof path, "%s/compose/nats-permissions.conf", VERDICT_SOURCE_DIR);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "cannot read %s", path);
    static char conf[16384];
    size_t n = fread(conf, 1, sizeof conf - 1024, f);
    fclose(f);
    snprintf(conf + n, sizeof conf - n,
             "\nauthorization { users = [\n"
             "  { user: verdict, password: \"" ENGINE_PW "\", permissions: $VERDICT_ENGINE_PERMISSIONS }\n"
             "  { user: payments, password: \"" PAY_PW "\", permissions: $VERDICT_PAYMENTS_PERMISSIONS }\n"
             "  { user: admin, password: \"" ADMIN_PW "\" }\n"
             "] }\n");
    cr_assert(server_start(&srv, conf), "nats-server did not start with the permissions file");
    snprintf(url_admin, sizeof url_admin, "nats://admin:" ADMIN_PW "@127.0.0.1:%d", srv.port);
    snprintf(url_pay, sizeof url_pay, "nats://payments:" PAY_PW "@127.0.0.1:%d", srv.port);
    admin = tc_connect(url_admin);
    cr_assert_eq(natsConnection_JetStream(&ajs, admin, NULL), NATS_OK);
    temp_path(logp, sizeof logp, ".log");
}

static void teardown(void)
{
    jsCtx_Destroy(ajs);
    natsConnection_Destroy(admin);
    server_stop(&srv);
    unlink(logp);
}

TestSuite(permissions, .init = setup, .fini = teardown, .timeout = 120);

static pid_t start_engine(void)
{
    char rules[512], model[512];
    snprintf(rules, sizeof rules, "%s/rules/default.rules", VERDICT_SOURCE_DIR);
    snprintf(model, sizeof model, "%s/models/verdict-gbdt.json", VERDICT_SOURCE_DIR);
    setenv("VERDICT_NATS_PASSWORD", ENGINE_PW, 1);
    pid_t pid = tc_start_engine(srv.url, logp,
                                (const char *const[]){"--user", "verdict", "--rules", rules, "--model", model,
                                                       /* the lease bucket too (hot standby) */
                                                       "--lease-ttl", "3s", NULL});
    unsetenv("VERDICT_NATS_PASSWORD");
    return pid;
}

static void stop_engine(pid_t pid)
{
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0, "engine did not exit 0; see %s", logp);
}

/* The server's log lines reporting a permission violation by user (on subject, if not NULL). Where the user is
 * named depends on the version: up to 2.10 in the message (`- Publish Violation - User "payments", Subject
 * "txn.req"`), from 2.11 in the connection's log prefix (`- "$G/user:payments" - Publish Violation - Subject
 * "txn.req"`). Both are matched; see_a_canary proves that the count works on the server under test, so that no
 * "0 violations" passes because the log's format changed again. */
static int violations_on(const char *user, const char *subject)
{
    char path[300], by_msg[64], by_prefix[64], subj[300] = "";
    snprintf(path, sizeof path, "%s.log", srv.store);
    snprintf(by_msg, sizeof by_msg, "User \"%s\"", user);
    snprintf(by_prefix, sizeof by_prefix, "/user:%s\"", user);
    if (subject)
        snprintf(subj, sizeof subj, "Subject \"%s\"", subject);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "no server log at %s", path);
    char line[2048];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "Violation") && (strstr(line, by_msg) || strstr(line, by_prefix)) &&
            (!subject || strstr(line, subj))) {
            fprintf(stderr, "server: %s", line);
            n++;
        }
    fclose(f);
    return n;
}

/* Connects as user with password, publishes to a subject no one may publish to and waits until the server has
 * processed it: exactly one violation by user on that subject must be logged. */
static void see_a_canary(const char *user, const char *password)
{
    char url[200];
    snprintf(url, sizeof url, "nats://%s:%s@127.0.0.1:%d", user, password, srv.port);
    natsConnection *c = tc_connect(url);
    cr_assert_eq(natsConnection_PublishString(c, "perm.canary", "x"), NATS_OK);
    cr_assert_eq(natsConnection_FlushTimeout(c, 2000), NATS_OK);
    natsConnection_Destroy(c);
    cr_assert_eq(violations_on(user, "perm.canary"), 1,
                 "the server's violation for %s was not found in its log: has its format changed?", user);
}

static int violations(const char *user) { return violations_on(user, NULL); }

static natsConnection *connect_payments(void)
{
    natsOptions *o = NULL;
    natsConnection *c = NULL;
    cr_assert_eq(natsOptions_Create(&o), NATS_OK);
    cr_assert_eq(natsOptions_SetURL(o, url_pay), NATS_OK);
    cr_assert_eq(natsOptions_SetCustomInboxPrefix(o, "_INBOX.payments"), NATS_OK);
    cr_assert_eq(natsConnection_Connect(&c, o), NATS_OK, "payments cannot connect");
    natsOptions_Destroy(o);
    return c;
}

Test(permissions, engine_and_payment_service_work_with_exactly_these_permissions)
{
    pid_t pid = start_engine();
    natsConnection *pay = connect_payments();

    /* request/reply */
    Transaction t;
    unsigned char buf[2048];
    tc_txn(&t, "perm-req-1", 1200);
    int n = tc_pack(&t, buf);
    natsMsg *r = NULL;
    cr_assert_eq(natsConnection_Request(&r, pay, "verdict.v1.decide", buf, n, 5000), NATS_OK,
                 "the payment service gets no decision by request/reply");
    cr_assert_not_null(natsMsg_GetData(r));
    const char *outcome = NULL;
    cr_assert_eq(natsMsgHeader_Get(r, "Verdict-Outcome", &outcome), NATS_OK, "a decision, not an error reply");
    natsMsg_Destroy(r);

    /* a JetStream publish straight to TXN (with the PubAck on the payments inbox) */
    jsCtx *pjs = NULL;
    cr_assert_eq(natsConnection_JetStream(&pjs, pay, NULL), NATS_OK);
    tc_txn(&t, "perm-js-1", 900);
    cr_assert(tc_publish(pjs, "txn.pay", &t), "the payment service cannot publish to TXN");
    /* a poison pill: the engine dead-letters it (publish to dlq.>) */
    jsPubAck *pa = NULL;
    cr_assert_eq(js_Publish(&pa, pjs, "txn.pay", "\xff\xfe garbage", 10, NULL, NULL), NATS_OK);
    jsPubAck_Destroy(pa);
    cr_assert_geq(tc_wait_msgs(ajs, "DECISIONS", 2, 10000), 2);
    cr_assert_geq(tc_wait_msgs(ajs, "DLQ", 1, 10000), 1);
    natsMsg *d = tc_find_decision(ajs, "perm-js-1");
    cr_assert_not_null(d);
    natsMsg_Destroy(d);

    /* the stop saves a velocity checkpoint into the verdict_state Object Store bucket and the restart loads it
     * and continues it over TXN, all as user verdict */
    stop_engine(pid);
    cr_assert_eq(truncate(logp, 0), 0);
    pid = start_engine();
    cr_assert(file_wait_for(logp, "velocity state from a snapshot", 1000), "no checkpoint loaded on restart; see %s",
              logp);
    tc_txn(&t, "perm-req-2", 1300);
    n = tc_pack(&t, buf);
    cr_assert_eq(natsConnection_Request(&r, pay, "verdict.v1.decide", buf, n, 5000), NATS_OK);
    natsMsg_Destroy(r);
    /* discovery answers the nats CLI (as admin) */
    cr_assert_eq(natsConnection_RequestString(&r, admin, "$SRV.PING.verdict", "", 3000), NATS_OK);
    natsMsg_Destroy(r);
    stop_engine(pid);

    see_a_canary("verdict", ENGINE_PW);
    see_a_canary("payments", PAY_PW);
    cr_assert_eq(violations("verdict"), 1, "the engine needed more than its permissions (server log above)");
    cr_assert_eq(violations("payments"), 1, "the payment service needed more than its permissions");
    jsCtx_Destroy(pjs);
    natsConnection_Destroy(pay);
}

static void on_msg(natsConnection *c, natsSubscription *s, natsMsg *m, void *closure)
{
    (void)c;
    (void)s;
    atomic_fetch_add((atomic_int *)closure, 1);
    natsMsg_Destroy(m);
}

Test(permissions, the_payment_service_cannot_read_decisions_or_touch_the_consumer)
{
    pid_t pid = start_engine();
    natsConnection *pay = connect_payments();
    jsCtx *pjs = NULL;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 1000;
    cr_assert_eq(natsConnection_JetStream(&pjs, pay, &jo), NATS_OK);

    /* a live subscription to every decision is refused by the server and receives nothing */
    atomic_int seen = 0;
    natsSubscription *sub = NULL;
    natsConnection_Subscribe(&sub, pay, "decision.>", on_msg, &seen);
    natsConnection_FlushTimeout(pay, 1000);
    Transaction t;
    tc_txn(&t, "perm-deny-1", 700);
    cr_assert(tc_publish(pjs, "txn.pay", &t));
    cr_assert_geq(tc_wait_msgs(ajs, "DECISIONS", 1, 10000), 1);
    tc_sleep_ms(300);
    cr_assert_eq(atomic_load(&seen), 0, "a payment service saw another transaction's decision");
    natsSubscription_Destroy(sub);

    /* the ingress's own subject is not theirs: its Verdict-Reply-To header is honoured */
    jsPubAck *pa_req = NULL;
    jsPubOptions rpo;
    jsPubOptions_Init(&rpo);
    rpo.MaxWait = 1000;
    cr_assert_neq(js_Publish(&pa_req, pjs, "txn.req", "x", 1, &rpo, NULL), NATS_OK,
                  "a payment service must not publish to txn.req");
    jsPubAck_Destroy(pa_req);
    /* no look-up of stored decisions, no ordered read of the stream */
    natsMsg *m = NULL;
    cr_assert_neq(js_GetMsg(&m, pjs, "DECISIONS", 1, NULL, NULL), NATS_OK, "read a stored decision");
    cr_assert_neq(js_GetLastMsg(&m, pjs, "DECISIONS", "decision.>", NULL, NULL), NATS_OK);
    jsStreamInfo *si = NULL;
    cr_assert_neq(js_GetStreamInfo(&si, pjs, "DECISIONS", NULL, NULL), NATS_OK, "saw the decisions stream");

    /* the engine's consumer: no info, no delete, no pulling its messages */
    jsConsumerInfo *ci = NULL;
    cr_assert_neq(js_GetConsumerInfo(&ci, pjs, "TXN", "verdict", NULL, NULL), NATS_OK);
    cr_assert_neq(js_DeleteConsumer(pjs, "TXN", "verdict", NULL, NULL), NATS_OK);
    natsSubscription *psub = NULL;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = "TXN";
    so.Consumer = "verdict";
    if (js_PullSubscribe(&psub, pjs, "txn.>", "verdict", &jo, &so, NULL) == NATS_OK) {
        /* nats.c may bind without asking the server; pulling is what the server refuses */
        natsMsgList list = {0};
        natsSubscription_Fetch(&list, psub, 1, 1000, NULL);
        cr_assert_eq(list.Count, 0, "pulled the engine's transactions");
        natsMsgList_Destroy(&list);
        natsSubscription_Destroy(psub);
        cr_assert_gt(violations_on("payments", "$JS.API.CONSUMER.MSG.NEXT.TXN.verdict"), 0);
    }
    cr_assert_eq(js_GetConsumerInfo(&ci, ajs, "TXN", "verdict", NULL, NULL), NATS_OK, "the consumer survives");
    jsConsumerInfo_Destroy(ci);

    cr_assert_gt(violations("payments"), 0, "the server never refused the payment service anything");
    cr_assert_eq(violations("verdict"), 0);
    jsCtx_Destroy(pjs);
    natsConnection_Destroy(pay);
    stop_engine(pid);
}

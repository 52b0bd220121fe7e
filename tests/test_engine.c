/* test_engine.c - `verdict serve` end to end against a real nats-server: set-up, request/reply, exactly-once
 * decisions, duplicates, redelivery, kill -9 at each crash point, poison requests, graceful shutdown. */

#include "broker.h"
#include "dlq.h"
#include "client.h"
#include "harness.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* SIGTERM: exit 0, and quietly: a stop closes the connection under the KV replicas' watchers, which is not an
 * error to warn about (it printed "replica: watcher error, reloading ... Connection Closed" at every stop). */
static void stop_engine(pid_t pid)
{
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0, "engine did not exit 0 on SIGTERM; see %s", logp);
    cr_assert_eq(file_count_lines(logp, "watcher error"), 0, "a warning at a graceful stop; see %s", logp);
}

TestSuite(engine, .init = setup, .fini = teardown, .timeout = 120);

Test(engine, setup_is_idempotent_and_reports_conflicts)
{
    config c;
    config_defaults(&c);
    verror e = {0};
    cr_assert_eq(broker_setup(&c, js, &e), V_OK, "%s", e.msg);
    cr_assert_eq(broker_setup(&c, js, &e), V_OK, "second set-up must verify, not fail: %s", e.msg);
    cr_assert_eq(tc_stream_msgs(js, "TXN"), 0);

    /* an operator's stream under our name that does not capture our subjects is refused, not rewritten */
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[] = {"other.>"};
    sc.Name = "ACME_DECISIONS";
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    jsStreamInfo *si = NULL;
    cr_assert_eq(js_AddStream(&si, js, &sc, NULL, NULL), NATS_OK);
    jsStreamInfo_Destroy(si);
    config a;
    config_defaults(&a);
    bool help;
    char *argv[] = {"serve", "--prefix", "acme"};
    cr_assert_eq(config_parse(&a, 3, argv, &help, NULL, NULL, &e), V_OK);
    cr_assert_eq(broker_setup(&a, js, &e), V_ECONFLICT);
    cr_assert(strstr(e.msg, "ACME_DECISIONS") && strstr(e.msg, "acme.decision.>"), "message: %s", e.msg);
    cr_assert_eq(js_GetStreamInfo(&si, js, "ACME_DECISIONS", NULL, NULL), NATS_OK);
    cr_assert_str_eq(si->Config->Subjects[0], "other.>", "the operator's stream must not be rewritten");
    jsStreamInfo_Destroy(si);
}

Test(engine, request_reply_decides_and_retry_gets_the_same_answer)
{
    pid_t pid = tc_start_engine(srv.url, logp, NULL);
    Transaction t;
    tc_txn(&t, "rr-1", 250000); /* over the built-in review threshold */
    unsigned char buf[2048];
    int n = tc_pack(&t, buf);
    natsMsg *r1 = NULL, *r2 = NULL;
    cr_assert_eq(natsConnection_Request(&r1, nc, "verdict.v1.decide", buf, n, 5000), NATS_OK);
    const char *outcome = NULL;
    cr_assert_eq(natsMsgHeader_Get(r1, "Verdict-Outcome", &outcome), NATS_OK);
    cr_assert_str_eq(outcome, "review");
    arena a;
    arena_init(&a, 65536);
    Decision *d = decision_decode(&a, natsMsg_GetData(r1), (size_t)natsMsg_GetDataLength(r1));
    cr_assert_not_null(d);
    cr_assert_str_eq(d->txn_id, "rr-1");
    cr_assert_eq(d->outcome, VERDICT__V1__OUTCOME__OUTCOME_REVIEW);
    cr_assert_eq(d->n_reasons, 1);
    cr_assert_str_eq(d->reasons[0]->rule_id, "builtin_review_amount");

    /* the client retries (lost reply): same bytes back, marked as a duplicate, and still one decision */
    cr_assert_eq(natsConnection_Request(&r2, nc, "verdict.v1.decide", buf, n, 5000), NATS_OK);
    cr_assert_eq(natsMsg_GetDataLength(r2), natsMsg_GetDataLength(r1));
    cr_assert_eq(memcmp(natsMsg_GetData(r2), natsMsg_GetData(r1), (size_t)natsMsg_GetDataLength(r1)), 0);
    const char *dup = NULL;
    cr_assert_eq(natsMsgHeader_Get(r2, "Verdict-Duplicate", &dup), NATS_OK);
    cr_assert_eq(tc_stream_msgs(js, "DECISIONS"), 1);
    natsMsg_Destroy(r1);
    natsMsg_Destroy(r2);
    arena_free(&a);
    stop_engine(pid);
}

Test(engine, malformed_request_gets_an_error_and_the_engine_keeps_running)
{
    pid_t pid = tc_start_engine(srv.url, logp, NULL);
    natsMsg *r = NULL;
    cr_assert_eq(natsConnection_Request(&r, nc, "verdict.v1.decide", "\xff\xfe garbage", 10, 5000), NATS_OK);
    const char *err = NULL, *code = NULL;
    cr_assert_eq(natsMsgHeader_Get(r, "Nats-Service-Error", &err), NATS_OK);
    cr_assert_eq(natsMsgHeader_Get(r, "Nats-Service-Error-Code", &code), NATS_OK);
    cr_assert_str_eq(code, "400");
    natsMsg_Destroy(r);

    Transaction t;
    tc_txn(&t, "bad id with spaces", 100);
    unsigned char buf[2048];
    int n = tc_pack(&t, buf);
    cr_assert_eq(natsConnection_Request(&r, nc, "verdict.v1.decide", buf, n, 5000), NATS_OK);
    cr_assert_eq(natsMsgHeader_Get(r, "Nats-Service-Error", &err), NATS_OK);
    cr_assert(strstr(err, "txn_id"), "error names the problem: %s", err);
    natsMsg_Destroy(r);
    cr_assert_eq(tc_stream_msgs(js, "TXN"), 0, "an invalid request never enters the stream");

    tc_txn(&t, "after-bad", 100);
    n = tc_pack(&t, buf);
    cr_assert_eq(natsConnection_Request(&r, nc, "verdict.v1.decide", buf, n, 5000), NATS_OK);
    cr_assert_neq(natsMsgHeader_Get(r, "Verdict-Outcome", &err), NATS_NOT_FOUND);
    natsMsg_Destroy(r);
    stop_engine(pid);
}

Test(engine, straight_publish_yields_exactly_one_decision_even_when_sent_twice)
{
    pid_t pid = tc_start_engine(srv.url, logp, NULL);
    Transaction t;
    for (int i = 0; i < 50; i++) {
        char id[32];
        snprintf(id, sizeof id, "sp-%d", i);
        tc_txn(&t, id, 1000 + i);
        cr_assert(tc_publish(js, "txn.pos.sp", &t));
        cr_assert(tc_publish(js, "txn.pos.sp", &t)); /* client retry: deduplicated by Nats-Msg-Id */
    }
    cr_assert_eq(tc_stream_msgs(js, "TXN"), 50);
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", 50, 10000), 50);
    tc_sleep_ms(300);
    cr_assert_eq(tc_stream_msgs(js, "DECISIONS"), 50);
    natsMsg *d = tc_find_decision(js, "sp-7");
    cr_assert_not_null(d);
    const char *id = NULL;
    cr_assert_eq(natsMsgHeader_Get(d, "Nats-Msg-Id", &id), NATS_OK);
    cr_assert_str_eq(id, "sp-7");
    natsMsg_Destroy(d);
    stop_engine(pid);
    uint64_t ackp, pend;
    cr_assert(tc_consumer_counts(js, &ackp, &pend, NULL));
    cr_assert_eq(ackp + pend, 0, "everything decided was acked (ack pending %llu, pending %llu)",
                 (unsigned long long)ackp, (unsigned long long)pend);
}

Test(engine, redelivery_is_answered_with_the_stored_decision)
{
    const char *extra[] = {"--ack-wait", "1s", "--backoff", "", NULL};
    setenv("VERDICT_TEST_FAULT", "skip_first_ack", 1);
    pid_t pid = tc_start_engine(srv.url, logp, extra);
    unsetenv("VERDICT_TEST_FAULT");
    Transaction t;
    tc_txn(&t, "redeliver-1", 500);
    cr_assert(tc_publish(js, "txn.ecom.x", &t));
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", 1, 5000), 1);
    /* AckWait 1s passes, the message comes back, the PubAck says Duplicate, and it is acked */
    uint64_t ackp = 1, pend = 1, redelivered = 0;
    for (int i = 0; i < 100 && (ackp || pend); i++) {
        tc_sleep_ms(100);
        cr_assert(tc_consumer_counts(js, &ackp, &pend, &redelivered));
    }
    cr_assert_eq(ackp + pend, 0, "the redelivery was acked");
    cr_assert_eq(tc_stream_msgs(js, "DECISIONS"), 1, "no second decision");
    stop_engine(pid);
    cr_assert(file_wait_for(logp, "\"duplicates\":1", 1000), "the engine answered one duplicate");
}

static void crash_at(const char *point)
{
    const char *extra[] = {"--ack-wait", "2s", "--backoff", "", NULL};
    setenv("VERDICT_TEST_FAULT", point, 1);
    pid_t pid = tc_start_engine(srv.url, logp, extra);
    unsetenv("VERDICT_TEST_FAULT");
    Transaction t;
    tc_txn(&t, "crash-1", 1200000); /* declined by the built-in policy */
    cr_assert(tc_publish(js, "txn.ecom.c", &t));
    int st = child_wait(pid, 10000);
    cr_assert_eq(st, -1, "the fault killed the engine at %s", point);
    uint64_t before = tc_stream_msgs(js, "DECISIONS");
    natsMsg *first = tc_find_decision(js, "crash-1");

    pid = tc_start_engine(srv.url, logp, extra);
    uint64_t ackp = 1, pend = 1;
    for (int i = 0; i < 100 && (ackp || pend); i++) {
        tc_sleep_ms(100);
        cr_assert(tc_consumer_counts(js, &ackp, &pend, NULL));
    }
    cr_assert_eq(ackp + pend, 0, "after restart the transaction is acked (%s)", point);
    cr_assert_eq(tc_stream_msgs(js, "DECISIONS"), 1, "exactly one decision after a crash at %s", point);
    natsMsg *d = tc_find_decision(js, "crash-1");
    cr_assert_not_null(d);
    const char *o = NULL;
    natsMsgHeader_Get(d, "Verdict-Outcome", &o);
    cr_assert_str_eq(o, "decline");
    if (first) {
        /* decided before the crash: the stored decision is the one that stays, byte for byte */
        cr_assert_eq(before, 1);
        cr_assert_eq(natsMsg_GetDataLength(first), natsMsg_GetDataLength(d));
        cr_assert_eq(memcmp(natsMsg_GetData(first), natsMsg_GetData(d), (size_t)natsMsg_GetDataLength(d)), 0);
        natsMsg_Destroy(first);
    } else {
        cr_assert_eq(before, 0);
    }
    natsMsg_Destroy(d);
    stop_engine(pid);
}

Test(engine, kill9_before_publish) { crash_at("crash_before_publish"); }
Test(engine, kill9_after_publish_before_ack) { crash_at("crash_after_publish"); }
Test(engine, kill9_after_ack) { crash_at("crash_after_ack"); }

Test(engine, poison_in_the_stream_is_dead_lettered_and_termed)
{
    pid_t pid = tc_start_engine(srv.url, logp, NULL);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = "poison-1";
    jsPubAck *pa = NULL;
    cr_assert_eq(js_Publish(&pa, js, "txn.raw", "\xff\xff\xff\xff", 4, &po, NULL), NATS_OK);
    jsPubAck_Destroy(pa);
    cr_assert_eq(tc_wait_msgs(js, "DLQ", 1, 5000), 1);
    natsMsg *m = NULL;
    cr_assert_eq(js_GetLastMsg(&m, js, "DLQ", "dlq.decode_error", NULL, NULL), NATS_OK);
    cr_assert_eq(natsMsg_GetDataLength(m), 4, "the original bytes, unchanged");
    cr_assert_eq(memcmp(natsMsg_GetData(m), "\xff\xff\xff\xff", 4), 0);
    const char *v = NULL;
    cr_assert_eq(natsMsgHeader_Get(m, "Verdict-Dlq-Reason", &v), NATS_OK);
    cr_assert_str_eq(v, "decode_error");
    cr_assert_eq(natsMsgHeader_Get(m, "Verdict-Original-Subject", &v), NATS_OK);
    cr_assert_str_eq(v, "txn.raw");
    cr_assert_eq(natsMsgHeader_Get(m, "Verdict-Original-Seq", &v), NATS_OK);
    cr_assert_str_eq(v, "1");
    cr_assert_eq(natsMsgHeader_Get(m, "Verdict-Deliveries", &v), NATS_OK);
    cr_assert_eq(natsMsgHeader_Get(m, "Verdict-Error", &v), NATS_OK);
    natsMsg_Destroy(m);
    cr_assert_eq(tc_stream_msgs(js, "DECISIONS"), 0);
    uint64_t ackp = 1, pend = 1;
    for (int i = 0; i < 50 && (ackp || pend); i++) {
        tc_sleep_ms(100);
        tc_consumer_counts(js, &ackp, &pend, NULL);
    }
    cr_assert_eq(ackp + pend, 0, "termed, not left pending");
    stop_engine(pid);
}

Test(engine, sigterm_finishes_in_flight_work_and_a_restart_decides_the_rest)
{
    pid_t pid = tc_start_engine(srv.url, logp, NULL);
    Transaction t;
    for (int i = 0; i < 300; i++) {
        char id[32];
        snprintf(id, sizeof id, "drain-%d", i);
        tc_txn(&t, id, 100 + i);
        cr_assert(tc_publish(js, "txn.pos.d", &t));
    }
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0, "graceful exit");
    uint64_t decided = tc_stream_msgs(js, "DECISIONS");
    pid = tc_start_engine(srv.url, logp, (const char *const[]){"--ack-wait", "2s", "--backoff", "", NULL});
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", 300, 20000), 300, "decided before stop: %llu",
                 (unsigned long long)decided);
    tc_sleep_ms(500);
    cr_assert_eq(tc_stream_msgs(js, "DECISIONS"), 300, "no transaction decided twice");
    stop_engine(pid);
}

Test(engine, a_transaction_that_cannot_be_stored_reaches_max_deliver_and_one_dead_letter)
{
    const char *extra[] = {"--max-deliver", "2", "--backoff", "", "--ack-wait", "1s", NULL};
    setenv("VERDICT_TEST_FAULT", "publish_fail", 1);
    pid_t pid = tc_start_engine(srv.url, logp, extra);
    unsetenv("VERDICT_TEST_FAULT");
    Transaction t;
    tc_txn(&t, "never-stored", 100);
    unsigned char buf[2048];
    int n = tc_pack(&t, buf);
    /* a waiting caller gets a timely error, not silence */
    natsMsg *r = NULL;
    cr_assert_eq(natsConnection_Request(&r, nc, "verdict.v1.decide", buf, n, 5000), NATS_OK);
    const char *code = NULL;
    cr_assert_eq(natsMsgHeader_Get(r, "Nats-Service-Error-Code", &code), NATS_OK);
    cr_assert_str_eq(code, "504");
    natsMsg_Destroy(r);
    cr_assert_eq(tc_wait_msgs(js, "DLQ", 1, 15000), 1, "dead letter after MaxDeliver");
    natsMsg *m = NULL;
    cr_assert_eq(js_GetLastMsg(&m, js, "DLQ", "dlq.max_deliveries", NULL, NULL), NATS_OK);
    cr_assert_eq(natsMsg_GetDataLength(m), n, "original bytes");
    cr_assert_eq(memcmp(natsMsg_GetData(m), buf, (size_t)n), 0);
    const char *v = NULL;
    cr_assert_eq(natsMsgHeader_Get(m, "Verdict-Deliveries", &v), NATS_OK);
    cr_assert_str_eq(v, "2");
    natsMsg_Destroy(m);
    for (int i = 0; i < 50 && tc_stream_msgs(js, "TXN") != 0; i++)
        tc_sleep_ms(100);
    cr_assert_eq(tc_stream_msgs(js, "TXN"), 0, "removed from TXN after the dead letter was stored");
    tc_sleep_ms(1500);
    cr_assert_eq(tc_stream_msgs(js, "DLQ"), 1, "exactly one dead letter");
    cr_assert_eq(tc_stream_msgs(js, "DECISIONS"), 0);
    stop_engine(pid);
}

Test(engine, the_dlq_worker_is_idempotent)
{
    config c;
    config_defaults(&c);
    verror e = {0};
    cr_assert_eq(broker_setup(&c, js, &e), V_OK, "%s", e.msg);
    Transaction t;
    tc_txn(&t, "adv-1", 100);
    cr_assert(tc_publish(js, "txn.x", &t));
    const char *adv = "{\"type\":\"io.nats.jetstream.advisory.v1.max_deliver\",\"stream\":\"TXN\","
                      "\"consumer\":\"verdict\",\"stream_seq\":1,\"deliveries\":5}";
    dlq_action act = DLQ_SKIPPED;
    poison_reason why = POISON_NONE;
    cr_assert_eq(dlq_handle_advisory(&c, js, adv, (int)strlen(adv), &act, &why, &e), V_OK, "%s", e.msg);
    cr_assert_eq(act, DLQ_DEAD_LETTERED);
    cr_assert_eq(why, DEAD_MAX_DELIVERIES);
    cr_assert_eq(tc_stream_msgs(js, "TXN"), 0);
    /* the advisory redelivered (its ack lost): the original is gone, nothing is written or counted again */
    cr_assert_eq(dlq_handle_advisory(&c, js, adv, (int)strlen(adv), &act, &why, &e), V_OK, "%s", e.msg);
    cr_assert_eq(act, DLQ_SKIPPED);
    cr_assert_eq(tc_stream_msgs(js, "DLQ"), 1);

    /* a worker that crashed after storing the dead letter and before deleting the original: a rerun stores
     * nothing new, finishes the delete, and counts the letter (the crashed attempt never did) */
    tc_txn(&t, "adv-2", 100);
    cr_assert(tc_publish(js, "txn.x", &t));
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = "dlq-TXN-2";
    jsPubAck *pa = NULL;
    cr_assert_eq(js_Publish(&pa, js, "dlq.max_deliveries", "x", 1, &po, NULL), NATS_OK);
    jsPubAck_Destroy(pa);
    const char *adv2 = "{\"type\":\"io.nats.jetstream.advisory.v1.max_deliver\",\"stream\":\"TXN\","
                       "\"consumer\":\"verdict\",\"stream_seq\":2,\"deliveries\":5}";
    cr_assert_eq(dlq_handle_advisory(&c, js, adv2, (int)strlen(adv2), &act, &why, &e), V_OK, "%s", e.msg);
    cr_assert_eq(act, DLQ_DEAD_LETTERED, "deduplicated by Nats-Msg-Id, and counted once");
    cr_assert_eq(tc_stream_msgs(js, "DLQ"), 2);
    cr_assert_eq(tc_stream_msgs(js, "TXN"), 0, "the original is deleted on the rerun");
}

static int run_cli(const char *const argv[], const char *out_path)
{
    unlink(out_path);
    pid_t pid = verdict_spawn(argv, out_path);
    return child_wait(pid, 30000);
}

Test(engine, dlq_replay_turns_a_fixed_dead_letter_into_one_decision_and_audit_balances)
{
    const char *extra[] = {"--max-deliver", "2", "--backoff", "", "--ack-wait", "1s", NULL};
    setenv("VERDICT_TEST_FAULT", "publish_fail", 1);
    pid_t pid = tc_start_engine(srv.url, logp, extra);
    unsetenv("VERDICT_TEST_FAULT");
    Transaction t;
    tc_txn(&t, "replay-1", 100);
    cr_assert(tc_publish(js, "txn.pos.f", &t));
    tc_txn(&t, "fine-1", 100);
    cr_assert_eq(tc_wait_msgs(js, "DLQ", 1, 15000), 1);
    for (int i = 0; i < 50 && tc_stream_msgs(js, "TXN") != 0; i++)
        tc_sleep_ms(100);
    stop_engine(pid);

    char out[256];
    temp_path(out, sizeof out, ".out");
    const char *ls[] = {"verdict", "dlq", "ls", "--nats-url", srv.url, NULL};
    cr_assert_eq(run_cli(ls, out), 0);
    cr_assert(file_wait_for(out, "max_deliveries", 100));
    cr_assert(file_wait_for(out, "replay-1", 100), "ls shows the txn id");
    const char *show[] = {"verdict", "dlq", "show", "1", "--nats-url", srv.url, NULL};
    cr_assert_eq(run_cli(show, out), 0);
    cr_assert(file_wait_for(out, "Verdict-Dlq-Reason", 100));
    cr_assert(file_wait_for(out, "decoded transaction", 100));

    /* the cause is fixed (a healthy engine), the dead letter is replayed: one decision, DLQ empty */
    pid = tc_start_engine(srv.url, logp, NULL);
    const char *replay[] = {"verdict", "dlq", "replay", "--reason", "max_deliveries", "--nats-url", srv.url, NULL};
    cr_assert_eq(run_cli(replay, out), 0);
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", 1, 10000), 1);
    natsMsg *d = tc_find_decision(js, "replay-1");
    cr_assert_not_null(d);
    natsMsg_Destroy(d);
    cr_assert_eq(tc_stream_msgs(js, "DLQ"), 0, "removed after the republish was stored");
    cr_assert(tc_publish(js, "txn.pos.f", &t));
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", 2, 10000), 2);
    stop_engine(pid);

    const char *audit[] = {"verdict", "audit", "--nats-url", srv.url, NULL};
    int rc = run_cli(audit, out);
    cr_assert(file_wait_for(out, "OK: every transaction", 100), "audit output in %s", out);
    cr_assert(file_wait_for(out, "3 transactions = 2 decided + 0 dead-lettered + 1 replayed", 100),
              "the replayed original is accounted for; see %s", out);
    cr_assert_eq(rc, 0);

    /* a transaction nobody decided makes the audit fail and name it */
    tc_txn(&t, "orphan-1", 100);
    cr_assert(tc_publish(js, "txn.pos.f", &t));
    rc = run_cli(audit, out);
    cr_assert_eq(rc, 1);
    cr_assert(file_wait_for(out, "NEITHER", 100));
    cr_assert(file_wait_for(out, "orphan-1", 100));
    unlink(out);
}

Test(engine, each_poison_kind_lands_in_its_dlq_subject)
{
    const char *extra[] = {"--max-msg-size", "200", NULL};
    pid_t pid = tc_start_engine(srv.url, logp, extra);
    Transaction t;
    unsigned char buf[4096];
    struct {
        const char *reason;
        int n;
    } kinds[4];
    /* invalid txn_id */
    tc_txn(&t, "no spaces allowed", 100);
    kinds[0].reason = "invalid_txn_id";
    kinds[0].n = tc_pack(&t, buf);
    jsPubAck *pa = NULL;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = "p1";
    cr_assert_eq(js_Publish(&pa, js, "txn.p", buf, kinds[0].n, &po, NULL), NATS_OK);
    jsPubAck_Destroy(pa);
    /* missing card_id */
    tc_txn(&t, "p2", 100);
    t.card_id = "";
    kinds[1].reason = "missing_field";
    kinds[1].n = tc_pack(&t, buf);
    po.MsgId = "p2";
    cr_assert_eq(js_Publish(&pa, js, "txn.p", buf, kinds[1].n, &po, NULL), NATS_OK);
    jsPubAck_Destroy(pa);
    /* oversize: a valid transaction over --max-msg-size */
    tc_txn(&t, "p3", 100);
    char big[400];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    t.merchant_id = big;
    kinds[2].reason = "oversize";
    kinds[2].n = tc_pack(&t, buf);
    po.MsgId = "p3";
    cr_assert_eq(js_Publish(&pa, js, "txn.p", buf, kinds[2].n, &po, NULL), NATS_OK);
    jsPubAck_Destroy(pa);
    /* not protobuf */
    kinds[3].reason = "decode_error";
    po.MsgId = "p4";
    cr_assert_eq(js_Publish(&pa, js, "txn.p", "\x0a\xff", 2, &po, NULL), NATS_OK);
    jsPubAck_Destroy(pa);

    cr_assert_eq(tc_wait_msgs(js, "DLQ", 4, 10000), 4);
    for (int i = 0; i < 4; i++) {
        char subj[64];
        snprintf(subj, sizeof subj, "dlq.%s", kinds[i].reason);
        natsMsg *m = NULL;
        cr_assert_eq(js_GetLastMsg(&m, js, "DLQ", subj, NULL, NULL), NATS_OK, "no %s", subj);
        const char *v = NULL;
        cr_assert_eq(natsMsgHeader_Get(m, "Verdict-Dlq-Reason", &v), NATS_OK);
        cr_assert_str_eq(v, kinds[i].reason);
        cr_assert_eq(natsMsgHeader_Get(m, "Verdict-Original-Seq", &v), NATS_OK);
        cr_assert_eq(atoi(v), i + 1);
        natsMsg_Destroy(m);
    }
    cr_assert_eq(tc_stream_msgs(js, "DECISIONS"), 0);
    for (int i = 0; i < 50 && tc_stream_msgs(js, "TXN") != 0; i++)
        tc_sleep_ms(100);
    cr_assert_eq(tc_stream_msgs(js, "TXN"), 0, "termed poison is removed from TXN after its dead letter");
    stop_engine(pid);
}

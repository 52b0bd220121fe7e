/* test_reconcile.c - `verdict audit --repair` against a real nats-server: transactions the consumer passed
 * without a decision or a dead letter (a consumer that skipped messages at a leader change, an advisory that
 * was never captured) are found and re-driven, poison among them dead-lettered, and originals whose dead letter
 * is stored but which stayed in TXN are swept; afterwards the books balance. Issue 21. */

#include "broker.h"
#include "client.h"
#include "dlq.h"
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
static char logp[256], outp[256];
static config cfg;

static void setup(void)
{
    tc_fixture_up(&srv, &nc, &js, logp, sizeof logp);
    temp_path(outp, sizeof outp, ".out");
    config_defaults(&cfg);
    verror e = {0};
    cr_assert_eq(broker_setup(&cfg, js, &e), V_OK, "%s", e.msg);
}

static void teardown(void)
{
    tc_fixture_down(&srv, nc, js, logp);
    unlink(outp);
}

TestSuite(reconcile, .init = setup, .fini = teardown, .timeout = 120);

static int audit(const char *extra1, const char *extra2, const char *extra3)
{
    unlink(outp);
    const char *argv[] = {"verdict", "audit", "--nats-url", srv.url, extra1, extra2, extra3, NULL};
    return child_wait(verdict_spawn(argv, outp), 30000);
}

static int count_lines(const char *needle) { return tc_count_lines(outp, needle); }

/* Takes n messages from the engine's durable consumer and acks (or terms) them: the consumer has passed them,
 * as one that skipped them at a leader change would have, and no decision or dead letter was written. */
static void consumer_passes(int n, bool term)
{
    natsSubscription *sub = NULL;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = cfg.txn_stream;
    so.Consumer = cfg.consumer;
    so.ManualAck = true;
    cr_assert_eq(js_PullSubscribe(&sub, js, cfg.txn_subjects, cfg.consumer, NULL, &so, NULL), NATS_OK);
    natsMsgList list = {0};
    cr_assert_eq(natsSubscription_Fetch(&list, sub, n, 5000, NULL), NATS_OK);
    cr_assert_eq(list.Count, n);
    for (int i = 0; i < list.Count; i++)
        cr_assert_eq(term ? natsMsg_Term(list.Msgs[i], NULL) : natsMsg_AckSync(list.Msgs[i], NULL, NULL), NATS_OK);
    natsMsgList_Destroy(&list);
    cr_assert_eq(natsConnection_Flush(nc), NATS_OK);
    natsSubscription_Destroy(sub); /* bound, not created: the durable stays */
    /* any advisory the server emitted is "lost" */
    cr_assert_eq(js_PurgeStream(js, cfg.adv_stream, NULL, NULL), NATS_OK);
}

static void publish_raw(const char *subject, const char *id, const void *data, int len)
{
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = id;
    jsPubAck *pa = NULL;
    cr_assert_eq(js_Publish(&pa, js, subject, data, len, &po, NULL), NATS_OK);
    jsPubAck_Destroy(pa);
}

Test(reconcile, skipped_transactions_are_found_redriven_and_then_balance)
{
    Transaction t;
    tc_txn(&t, "skip-1", 100);
    cr_assert(tc_publish(js, "txn.orders", &t));
    tc_txn(&t, "skip-2", 250000);
    cr_assert(tc_publish(js, "txn.req", &t)); /* an ingress message: re-driven without any reply header */
    publish_raw("txn.orders", "skip-p", "\xff\xff\xff", 3);
    consumer_passes(3, false);

    cr_assert_eq(audit("--frob", NULL, NULL), 2, "a usage error, named, before connecting");
    cr_assert_eq(audit(NULL, NULL, NULL), 1, "three transactions with neither; see %s", outp);
    cr_assert_eq(count_lines("NEITHER"), 3);

    /* too young to repair: nothing is touched */
    cr_assert_eq(audit("--repair", NULL, NULL), 1);
    cr_assert_eq(count_lines("REDRIVEN"), 0);
    cr_assert_eq(tc_stream_msgs(js, "TXN"), 3);

    cr_assert_eq(audit("--repair", "--min-age", "0s"), 0, "repaired: see %s", outp);
    cr_assert_eq(count_lines("REDRIVEN"), 2);
    cr_assert_eq(count_lines("DEADLETTERED"), 1);
    cr_assert_eq(tc_stream_msgs(js, "DLQ"), 1, "the poison got its dead letter");

    /* a second repair run re-drives nothing twice */
    cr_assert_eq(audit("--repair", "--min-age", "0s"), 1, "the re-driven copies are still pending");
    cr_assert_eq(count_lines("REDRIVEN"), 0);

    pid_t pid = tc_start_engine(srv.url, logp, NULL);
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", 2, 10000), 2, "the engine decides the re-driven transactions");
    natsMsg *d = tc_find_decision(js, "skip-2");
    cr_assert_not_null(d);
    natsMsg_Destroy(d);
    uint64_t ackp = 1, pend = 1;
    for (int i = 0; i < 50 && (ackp || pend); i++) {
        tc_sleep_ms(100);
        tc_consumer_counts(js, &ackp, &pend, NULL);
    }
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0);
    cr_assert_eq(audit(NULL, NULL, NULL), 0, "the books balance after the repair; see %s", outp);
    cr_assert_eq(tc_stream_msgs(js, "DECISIONS"), 2, "one decision each");
}

Test(reconcile, an_original_left_behind_by_a_lost_advisory_is_swept)
{
    publish_raw("txn.orders", "lost-adv", "\xff\xfe", 2);
    consumer_passes(1, true);
    /* the engine stored the dead letter before terming; the advisory that would have deleted the original is
     * gone */
    natsMsg *orig = NULL;
    cr_assert_eq(js_GetMsg(&orig, js, "TXN", 1, NULL, NULL), NATS_OK);
    natsMsg *dl = NULL;
    cr_assert_eq(dlq_letter_new(&dl, &cfg, POISON_DECODE, "not a transaction", orig, 1, 1, NULL), NATS_OK);
    jsPubAck *pa = NULL;
    cr_assert_eq(js_PublishMsg(&pa, js, dl, NULL, NULL), NATS_OK);
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(dl);
    natsMsg_Destroy(orig);
    cr_assert_eq(audit("--repair", "--min-age", "0s"), 0, "see %s", outp);
    cr_assert_eq(count_lines("SWEPT"), 1);
    cr_assert_eq(tc_stream_msgs(js, "TXN"), 0, "the original is deleted");
    cr_assert_eq(tc_stream_msgs(js, "DLQ"), 1, "and its dead letter kept");
    cr_assert_eq(audit(NULL, NULL, NULL), 0, "see %s", outp);
}

/* A retry answered Duplicate although TXN does not hold the first copy (nats-server before 2.11: a dedup id
 * surviving a write that never committed; the PubAck names sequence 0). The fault dup_seq_zero makes the
 * engine read every ingress Duplicate that way. The retry is stored again under <txn_id>:restored, decided,
 * and answered; the decision stays single. */
Test(reconcile, a_retry_whose_first_copy_is_missing_is_stored_again)
{
    /* the first copy was confirmed to the client, and then TXN does not hold it: its dedup id remains */
    Transaction t;
    tc_txn(&t, "zero-1", 250000);
    cr_assert(tc_publish(js, "txn.req", &t));
    cr_assert_eq(js_DeleteMsg(js, "TXN", 1, NULL, NULL), NATS_OK);
    setenv("VERDICT_TEST_FAULT", "dup_seq_zero", 1);
    pid_t pid = tc_start_engine(srv.url, logp, NULL);
    unsetenv("VERDICT_TEST_FAULT");
    unsigned char buf[2048];
    int n = tc_pack(&t, buf);
    natsMsg *r = NULL;
    cr_assert_eq(natsConnection_Request(&r, nc, "verdict.v1.decide", buf, n, 5000), NATS_OK);
    const char *outcome = NULL;
    cr_assert_eq(natsMsgHeader_Get(r, "Verdict-Outcome", &outcome), NATS_OK, "the retry gets the decision");
    cr_assert_str_eq(outcome, "review");
    natsMsg_Destroy(r);
    cr_assert(file_wait_for(logp, "stored again under a derived id", 2000), "see %s", logp);
    cr_assert_eq(tc_wait_msgs(js, "TXN", 1, 5000), 1, "the retry was stored again");
    natsMsg *m = NULL;
    cr_assert_eq(js_GetMsg(&m, js, "TXN", 2, NULL, NULL), NATS_OK);
    const char *id = NULL;
    cr_assert_eq(natsMsgHeader_Get(m, "Nats-Msg-Id", &id), NATS_OK);
    cr_assert_str_eq(id, "zero-1:restored");
    natsMsg_Destroy(m);
    uint64_t ackp = 1, pend = 1;
    for (int i = 0; i < 50 && (ackp || pend); i++) {
        tc_sleep_ms(100);
        tc_consumer_counts(js, &ackp, &pend, NULL);
    }
    cr_assert_eq(tc_stream_msgs(js, "DECISIONS"), 1, "still one decision");
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0);
    cr_assert_eq(audit(NULL, NULL, NULL), 0, "see %s", outp);
}

/* Issue 21: dead letters must not rest on advisories alone. A transaction that reaches MaxDeliver undecided
 * (naked by a stand-in for a failing engine) while its advisory is lost (VERDICT_ADVISORIES purged before any
 * DLQ worker runs) is dead-lettered by the engine's own sweep, without an operator, and the books balance. */
Test(reconcile, a_max_deliver_transaction_whose_advisory_was_lost_is_dead_lettered_by_the_sweep)
{
    /* a consumer that gives up after two deliveries 300 ms apart (the engine below is started with the same) */
    cr_assert_eq(js_DeleteConsumer(js, cfg.txn_stream, cfg.consumer, NULL, NULL), NATS_OK);
    cfg.max_deliver = 2;
    cfg.backoff_ms[0] = 300;
    cfg.backoff_len = 1;
    verror e = {0};
    cr_assert_eq(broker_setup(&cfg, js, &e), V_OK, "%s", e.msg);
    Transaction t;
    tc_txn(&t, "lost-maxdeliver", 1000);
    cr_assert(tc_publish(js, "txn.orders", &t));
    natsSubscription *sub = NULL;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = cfg.txn_stream;
    so.Consumer = cfg.consumer;
    so.ManualAck = true;
    cr_assert_eq(js_PullSubscribe(&sub, js, cfg.txn_subjects, cfg.consumer, NULL, &so, NULL), NATS_OK);
    int deliveries = 0;
    for (int i = 0; i < 40 && deliveries < cfg.max_deliver; i++) {
        natsMsgList list = {0};
        if (natsSubscription_Fetch(&list, sub, 1, 1000, NULL) != NATS_OK)
            continue;
        for (int k = 0; k < list.Count; k++) {
            js_meta m;
            cr_assert(broker_parse_ack_subject(natsMsg_GetReply(list.Msgs[k]), &m));
            cr_assert_eq(m.stream_seq, 1);
            deliveries++;
            cr_assert_eq(natsMsg_NakWithDelay(list.Msgs[k], 10, NULL), NATS_OK);
        }
        natsMsgList_Destroy(&list);
    }
    cr_assert_eq(deliveries, cfg.max_deliver);
    /* the server sends the advisory when it next tries to deliver (a pull) */
    for (int i = 0; i < 50 && tc_stream_msgs(js, cfg.adv_stream) == 0; i++) {
        natsMsgList list = {0};
        cr_assert_neq(natsSubscription_Fetch(&list, sub, 1, 100, NULL), NATS_OK, "no delivery after MaxDeliver");
    }
    natsSubscription_Destroy(sub); /* bound, not created: the durable stays */
    cr_assert_eq(tc_stream_msgs(js, cfg.adv_stream), 1, "the MAX_DELIVERIES advisory was captured");
    cr_assert_eq(js_PurgeStream(js, cfg.adv_stream, NULL, NULL), NATS_OK, "and is lost");
    tc_txn(&t, "decided-fine", 1000);
    cr_assert(tc_publish(js, "txn.orders", &t));

    int port = free_port();
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    pid_t pid = tc_start_engine(srv.url, logp,
                                (const char *const[]){"--sweep-interval", "1s", "--max-deliver", "2", "--backoff",
                                                      "300ms", "--metrics-addr", addr, NULL});
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", 1, 10000), 1, "the other transaction is decided");
    for (int i = 0; i < 100 && tc_stream_msgs(js, "DLQ") == 0; i++)
        tc_sleep_ms(100);
    cr_assert_eq(tc_stream_msgs(js, "DLQ"), 1, "the sweep dead-lettered it; see %s", logp);
    cr_assert(file_wait_for(logp, "dead-lettered by the sweep", 1000), "see %s", logp);
    natsMsg *dl = NULL;
    cr_assert_eq(js_GetLastMsg(&dl, js, "DLQ", "dlq.max_deliveries", NULL, NULL), NATS_OK);
    const char *v = NULL;
    cr_assert_eq(natsMsgHeader_Get(dl, "Verdict-Txn-Id", &v), NATS_OK);
    cr_assert_str_eq(v, "lost-maxdeliver");
    cr_assert_eq(natsMsgHeader_Get(dl, "Verdict-Original-Seq", &v), NATS_OK);
    cr_assert_str_eq(v, "1");
    natsMsg_Destroy(dl);
    natsMsg *orig = NULL;
    cr_assert_neq(js_GetMsg(&orig, js, "TXN", 1, NULL, NULL), NATS_OK, "the original is deleted");
    char body[65536];
    cr_assert(http_get_local(port, "/metrics", body, sizeof body));
    cr_assert(strstr(body, "\nverdict_sweep_dead_lettered_total 1\n"), "%s", body);
    cr_assert(strstr(body, "\nverdict_dead_letters_total{reason=\"max_deliveries\"} 1\n"), "%s", body);
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0);
    cr_assert_eq(audit(NULL, NULL, NULL), 0, "the books balance; see %s", outp);
}

/* test_dlq.c - dead letters and their accounting against a real nats-server: one builder for every writer
 * (sanitized headers, txn id, lineage), the DLQ worker's check of DECISIONS before it dead-letters, counting a
 * retried dead letter once, and `verdict audit` finding double decisions and following replay lineage. */

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

static void setup(void)
{
    tc_fixture_up(&srv, &nc, &js, logp, sizeof logp);
    temp_path(outp, sizeof outp, ".out");
}

static void teardown(void)
{
    tc_fixture_down(&srv, nc, js, logp);
    unlink(outp);
}

static void stop_engine(pid_t pid)
{
    kill(pid, SIGTERM);
    int rc = child_wait(pid, 15000);
    if (rc == -1)
        kill(pid, SIGKILL);
    cr_assert_eq(rc, 0, "engine did not exit 0 on SIGTERM; see %s", logp);
}

/* Runs a verdict command with stdout and stderr into outp; its exit status (-1 and killed on a timeout). */
static int run_cli(const char *const argv[], int timeout_ms)
{
    unlink(outp);
    pid_t pid = verdict_spawn(argv, outp);
    int rc = child_wait(pid, timeout_ms);
    if (rc == -1) {
        kill(pid, SIGKILL);
        child_wait(pid, 5000);
    }
    return rc;
}

static const char *hdr(natsMsg *m, const char *key)
{
    const char *v = NULL;
    if (natsMsgHeader_Get(m, key, &v) != NATS_OK || !v)
        return NULL;
    return v;
}

/* Publishes a decision for txn_id by hand, as a stored one (headers only as the engine sets them). */
static void publish_decision(const char *outcome, const char *txn_id, const char *msgid)
{
    char subj[128];
    snprintf(subj, sizeof subj, "decision.%s.%s", outcome, txn_id);
    natsMsg *m = NULL;
    cr_assert_eq(natsMsg_Create(&m, subj, NULL, "d", 1), NATS_OK);
    cr_assert_eq(natsMsgHeader_Set(m, "Verdict-Outcome", outcome), NATS_OK);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msgid;
    jsPubAck *pa = NULL;
    cr_assert_eq(js_PublishMsg(&pa, js, m, &po, NULL), NATS_OK);
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(m);
}

TestSuite(dlq, .init = setup, .fini = teardown, .timeout = 180);

/* --- the builder -------------------------------------------------------------------------------------- */

Test(dlq, a_letter_has_every_header_sanitized_with_the_txn_id_and_lineage)
{
    config c;
    config_defaults(&c);
    natsMsg *orig = NULL, *dl = NULL;
    cr_assert_eq(natsMsg_Create(&orig, "txn.pos.x", NULL, "abc", 3), NATS_OK);
    natsMsgHeader_Set(orig, "Nats-Msg-Id", "t-1");
    natsMsgHeader_Set(orig, DLQ_LINEAGE_HDR, "7,3");
    cr_assert_eq(dlq_letter_new(&dl, &c, DEAD_MAX_DELIVERIES, "boom\r\nInjected: 1", orig, 9, 5, NULL), NATS_OK);
    cr_assert_str_eq(natsMsg_GetSubject(dl), "dlq.max_deliveries");
    cr_assert_eq(natsMsg_GetDataLength(dl), 3);
    cr_assert_eq(memcmp(natsMsg_GetData(dl), "abc", 3), 0, "the original bytes unchanged");
    cr_assert_str_eq(hdr(dl, "Nats-Msg-Id"), "dlq-TXN-9");
    cr_assert_str_eq(hdr(dl, "Verdict-Dlq-Reason"), "max_deliveries");
    cr_assert_str_eq(hdr(dl, "Verdict-Error"), "boom  Injected: 1", "no CR or LF reaches a header");
    cr_assert_str_eq(hdr(dl, "Verdict-Original-Subject"), "txn.pos.x");
    cr_assert_str_eq(hdr(dl, "Verdict-Original-Seq"), "9");
    cr_assert_str_eq(hdr(dl, "Verdict-Deliveries"), "5");
    cr_assert_str_eq(hdr(dl, "Verdict-Txn-Id"), "t-1", "from Nats-Msg-Id when the caller does not know it");
    cr_assert_str_eq(hdr(dl, DLQ_LINEAGE_HDR), "7,3");
    natsMsg_Destroy(dl);

    /* the caller's txn id wins; a Nats-Msg-Id or lineage that is not well formed is never copied */
    natsMsgHeader_Set(orig, "Nats-Msg-Id", "bad\nid");
    natsMsgHeader_Set(orig, DLQ_LINEAGE_HDR, "1\n2");
    cr_assert_eq(dlq_letter_new(&dl, &c, POISON_DECODE, NULL, orig, 10, 1, "from-payload"), NATS_OK);
    cr_assert_str_eq(hdr(dl, "Verdict-Txn-Id"), "from-payload");
    cr_assert_null(hdr(dl, DLQ_LINEAGE_HDR));
    cr_assert_str_eq(natsMsg_GetSubject(dl), "dlq.decode_error");
    natsMsg_Destroy(dl);
    cr_assert_eq(dlq_letter_new(&dl, &c, POISON_DECODE, "x", orig, 10, 1, NULL), NATS_OK);
    cr_assert_null(hdr(dl, "Verdict-Txn-Id"), "an id with a LF is not a txn id");
    natsMsg_Destroy(dl);
    natsMsg_Destroy(orig);

    /* lineage grows newest first and stays bounded */
    char lin[DLQ_LINEAGE_MAX + 1], prev[DLQ_LINEAGE_MAX + 1];
    dlq_lineage_push(lin, sizeof lin, 12, "7,3");
    cr_assert_str_eq(lin, "12,7,3");
    dlq_lineage_push(lin, sizeof lin, 1, NULL);
    for (uint64_t s = 2; s < 400; s++) {
        memcpy(prev, lin, sizeof lin);
        dlq_lineage_push(lin, sizeof lin, s, prev);
    }
    cr_assert(strlen(lin) <= DLQ_LINEAGE_MAX);
    cr_assert_eq(strncmp(lin, "399,398,", 8), 0, "%s", lin);
}

Test(dlq, a_poison_letter_from_the_worker_carries_the_txn_id)
{
    /* the pipeline worker built its letters itself and left Verdict-Txn-Id out; the DLQ worker set it */
    pid_t pid = tc_start_engine(srv.url, logp, NULL);
    Transaction t;
    tc_txn(&t, "p-miss", 100);
    t.card_id = "";
    cr_assert(tc_publish(js, "txn.pos.x", &t));
    cr_assert_eq(tc_wait_msgs(js, "DLQ", 1, 10000), 1);
    natsMsg *m = NULL;
    cr_assert_eq(js_GetLastMsg(&m, js, "DLQ", "dlq.missing_field", NULL, NULL), NATS_OK);
    cr_assert_not_null(hdr(m, "Verdict-Txn-Id"), "poison letter without Verdict-Txn-Id");
    cr_assert_str_eq(hdr(m, "Verdict-Txn-Id"), "p-miss");
    natsMsg_Destroy(m);
    stop_engine(pid);
}

/* --- the DLQ worker ------------------------------------------------------------------------------------- */

Test(dlq, a_max_deliveries_transaction_whose_decision_was_stored_is_not_dead_lettered)
{
    /* Every decision publish of this engine "fails" (the publish_fail fault), as when the decision is stored
     * but its PubAck is lost: the decision is in DECISIONS, the engine does not know, naks, and the message
     * reaches MaxDeliver. The decision stands; no dead letter. */
    const char *extra[] = {"--max-deliver", "2", "--backoff", "", "--ack-wait", "1s", NULL};
    setenv("VERDICT_TEST_FAULT", "publish_fail", 1);
    pid_t pid = tc_start_engine(srv.url, logp, extra);
    unsetenv("VERDICT_TEST_FAULT");
    publish_decision("approve", "late-1", "late-1");
    Transaction t;
    tc_txn(&t, "late-1", 100);
    cr_assert(tc_publish(js, "txn.pos.x", &t));
    /* a transaction without a decision, in the same state, still is dead-lettered (and shows the advisories
     * were handled: the DLQ worker takes them in order) */
    tc_txn(&t, "undecided-1", 100);
    cr_assert(tc_publish(js, "txn.pos.x", &t));
    cr_assert_eq(tc_wait_msgs(js, "DLQ", 1, 20000), 1);
    tc_sleep_ms(1500);
    stop_engine(pid);
    cr_assert_eq(tc_stream_msgs(js, "DLQ"), 1, "only the undecided transaction is dead-lettered");
    natsMsg *m = NULL;
    cr_assert_eq(js_GetLastMsg(&m, js, "DLQ", "dlq.max_deliveries", NULL, NULL), NATS_OK);
    cr_assert_str_eq(hdr(m, "Verdict-Txn-Id"), "undecided-1");
    natsMsg_Destroy(m);
    cr_assert_eq(tc_stream_msgs(js, "TXN"), 1, "the decided transaction stays in TXN like every decided one");
    cr_assert(file_wait_for(logp, "decided after all", 100), "see %s", logp);

    const char *audit[] = {"verdict", "audit", "--nats-url", srv.url, NULL};
    cr_assert_eq(run_cli(audit, 30000), 0, "audit in %s", outp);
    cr_assert(file_wait_for(outp, "2 transactions = 1 decided + 1 dead-lettered", 100), "see %s", outp);
}

Test(dlq, the_handler_counts_a_retried_dead_letter_once_and_a_workers_letter_never)
{
    config c;
    config_defaults(&c);
    verror e = {0};
    cr_assert_eq(broker_setup(&c, js, &e), V_OK, "%s", e.msg);
    Transaction t;
    tc_txn(&t, "retried-1", 100);
    cr_assert(tc_publish(js, "txn.x", &t));
    /* an earlier attempt stored the letter and stopped before the delete (crash, failed delete): it never
     * counted it, so the retry (PubAck Duplicate) must */
    natsMsg *orig = NULL, *dl = NULL;
    cr_assert_eq(js_GetMsg(&orig, js, "TXN", 1, NULL, NULL), NATS_OK);
    cr_assert_eq(dlq_letter_new(&dl, &c, DEAD_MAX_DELIVERIES, "earlier attempt", orig, 1, 5, NULL), NATS_OK);
    jsPubAck *pa = NULL;
    cr_assert_eq(js_PublishMsg(&pa, js, dl, NULL, NULL), NATS_OK);
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(dl);
    natsMsg_Destroy(orig);
    const char *adv = "{\"type\":\"io.nats.jetstream.advisory.v1.max_deliver\",\"stream\":\"TXN\","
                      "\"consumer\":\"verdict\",\"stream_seq\":1,\"deliveries\":5}";
    dlq_action act = DLQ_SKIPPED;
    poison_reason why = POISON_NONE;
    cr_assert_eq(dlq_handle_advisory(&c, js, adv, (int)strlen(adv), &act, &why, &e), V_OK, "%s", e.msg);
    cr_assert_eq(act, DLQ_DEAD_LETTERED, "a retried dead letter is counted");
    cr_assert_eq(why, DEAD_MAX_DELIVERIES);
    cr_assert_eq(tc_stream_msgs(js, "DLQ"), 1);
    cr_assert_eq(tc_stream_msgs(js, "TXN"), 0);
    cr_assert_eq(dlq_handle_advisory(&c, js, adv, (int)strlen(adv), &act, &why, &e), V_OK, "%s", e.msg);
    cr_assert_eq(act, DLQ_SKIPPED, "and only once");

    /* poison: the worker stored (and counted) the letter, then termed; the term advisory counts nothing */
    cr_assert_eq(js_Publish(&pa, js, "txn.x", "\xff\xff", 2, NULL, NULL), NATS_OK);
    uint64_t seq = pa->Sequence;
    jsPubAck_Destroy(pa);
    cr_assert_eq(js_GetMsg(&orig, js, "TXN", seq, NULL, NULL), NATS_OK);
    cr_assert_eq(dlq_letter_new(&dl, &c, POISON_DECODE, "not a Transaction", orig, seq, 1, NULL), NATS_OK);
    cr_assert_eq(js_PublishMsg(&pa, js, dl, NULL, NULL), NATS_OK);
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(dl);
    natsMsg_Destroy(orig);
    char term[256];
    snprintf(term, sizeof term,
             "{\"type\":\"io.nats.jetstream.advisory.v1.terminated\",\"stream\":\"TXN\",\"consumer\":\"verdict\","
             "\"stream_seq\":%llu,\"deliveries\":1}",
             (unsigned long long)seq);
    cr_assert_eq(dlq_handle_advisory(&c, js, term, (int)strlen(term), &act, &why, &e), V_OK, "%s", e.msg);
    cr_assert_eq(act, DLQ_WORKER_LETTER);
    cr_assert_eq(tc_stream_msgs(js, "DLQ"), 2);
    cr_assert_eq(tc_stream_msgs(js, "TXN"), 0);

    /* decided after all: no letter, the original stays */
    tc_txn(&t, "late-h", 100);
    cr_assert(tc_publish(js, "txn.x", &t));
    publish_decision("review", "late-h", "late-h");
    char late[256];
    snprintf(late, sizeof late,
             "{\"type\":\"io.nats.jetstream.advisory.v1.max_deliver\",\"stream\":\"TXN\",\"consumer\":\"verdict\","
             "\"stream_seq\":%llu,\"deliveries\":5}",
             (unsigned long long)seq + 1);
    cr_assert_eq(dlq_handle_advisory(&c, js, late, (int)strlen(late), &act, &why, &e), V_OK, "%s", e.msg);
    cr_assert_eq(act, DLQ_DECIDED_LATE);
    cr_assert_eq(tc_stream_msgs(js, "DLQ"), 2);
    cr_assert_eq(tc_stream_msgs(js, "TXN"), 1);

    /* an advisory that is not JSON is acked, not retried forever */
    cr_assert_eq(dlq_handle_advisory(&c, js, "nope", 4, &act, &why, &e), V_OK);
    cr_assert_eq(act, DLQ_SKIPPED);
}

/* --- audit ---------------------------------------------------------------------------------------------- */

Test(dlq, audit_finds_a_second_decision_for_one_transaction)
{
    pid_t pid = tc_start_engine(srv.url, logp, NULL);
    Transaction t;
    tc_txn(&t, "dd-1", 100);
    cr_assert(tc_publish(js, "txn.pos.x", &t));
    tc_txn(&t, "dd-2", 100);
    cr_assert(tc_publish(js, "txn.pos.x", &t));
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", 2, 10000), 2);
    stop_engine(pid);
    const char *audit[] = {"verdict", "audit", "--nats-url", srv.url, NULL};
    cr_assert_eq(run_cli(audit, 30000), 0, "balanced before; see %s", outp);

    /* a second decision for dd-1 under another outcome (another Nats-Msg-Id, so the stream keeps it) */
    publish_decision("decline", "dd-1", "by-hand-dd-1");
    cr_assert_eq(run_cli(audit, 30000), 1, "a double decision must fail the audit; see %s", outp);
    cr_assert(file_wait_for(outp, "TWICE", 100), "see %s", outp);
    cr_assert(file_wait_for(outp, "dd-1", 100));
    cr_assert(file_wait_for(outp, "decided twice 1", 100), "see %s", outp);
    cr_assert(file_wait_for(outp, "MISMATCH", 100));
}

Test(dlq, audit_balances_after_a_replay_that_is_dead_lettered_again)
{
    const char *failing[] = {"--max-deliver", "2", "--backoff", "", "--ack-wait", "1s", NULL};
    setenv("VERDICT_TEST_FAULT", "publish_fail", 1);
    pid_t pid = tc_start_engine(srv.url, logp, failing);
    unsetenv("VERDICT_TEST_FAULT");
    Transaction t;
    tc_txn(&t, "again-1", 100);
    cr_assert(tc_publish(js, "txn.pos.x", &t));
    cr_assert_eq(tc_wait_msgs(js, "DLQ", 1, 20000), 1);
    for (int i = 0; i < 50 && tc_stream_msgs(js, "TXN") != 0; i++)
        tc_sleep_ms(100);

    /* replayed before the cause is fixed: the replay (TXN seq 2) is dead-lettered in turn */
    const char *replay[] = {"verdict", "dlq", "replay", "--reason", "max_deliveries", "--nats-url", srv.url, NULL};
    cr_assert_eq(run_cli(replay, 30000), 0, "see %s", outp);
    natsMsg *m = NULL;
    bool again = false;
    for (int i = 0; i < 200 && !again; i++) {
        if (js_GetLastMsg(&m, js, "DLQ", "dlq.max_deliveries", NULL, NULL) == NATS_OK) {
            again = strcmp(hdr(m, "Verdict-Original-Seq"), "2") == 0;
            natsMsg_Destroy(m);
        }
        if (!again)
            tc_sleep_ms(100);
    }
    cr_assert(again, "the replay was not dead-lettered again");
    for (int i = 0; i < 50 && tc_stream_msgs(js, "TXN") != 0; i++)
        tc_sleep_ms(100);
    stop_engine(pid);

    const char *audit[] = {"verdict", "audit", "--nats-url", srv.url, NULL};
    cr_assert_eq(run_cli(audit, 30000), 0, "the first original is accounted for by the lineage; see %s", outp);
    cr_assert(file_wait_for(outp, "2 transactions = 0 decided + 1 dead-lettered + 1 replayed", 100), "see %s",
              outp);

    /* fixed: replayed once more, decided; both earlier sequences are accounted for */
    pid = tc_start_engine(srv.url, logp, NULL);
    cr_assert_eq(run_cli(replay, 30000), 0, "see %s", outp);
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", 1, 10000), 1);
    stop_engine(pid);
    cr_assert_eq(tc_stream_msgs(js, "DLQ"), 0);
    cr_assert_eq(run_cli(audit, 30000), 0, "see %s", outp);
    cr_assert(file_wait_for(outp, "3 transactions = 1 decided + 0 dead-lettered + 2 replayed", 100), "see %s",
              outp);
    cr_assert_eq(js_GetMsg(&m, js, "TXN", 3, NULL, NULL), NATS_OK);
    cr_assert_str_eq(hdr(m, DLQ_LINEAGE_HDR), "2,1", "the replay names every sequence it stands for");
    natsMsg_Destroy(m);
}

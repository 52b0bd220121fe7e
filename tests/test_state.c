/* test_state.c - velocity state against a real nats-server: every transaction sees exactly the count of the
 * card's earlier decided transactions (a from-scratch recomputation), through redeliveries, kill -9 at each
 * crash point and restarts (the state is rebuilt from the stream), and a restart does not reset it.
 *
 * The count a decision saw is read from its reasons: the rules file has one rule per value of
 * count(card_id, 24h), so the reason names the count. */
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
static char logp[256], rulesp[256];
static int next_txn;

static void setup(void)
{
    tc_fixture_up(&srv, &nc, &js, logp, sizeof logp);
    temp_path(rulesp, sizeof rulesp, ".rules");
    FILE *f = fopen(rulesp, "w");
    cr_assert_not_null(f);
    for (int k = 0; k < 40; k++)
        fprintf(f, "rule seen_%d approve \"%d earlier\" when count(card_id, 24h) == %d\n", k, k, k);
    fclose(f);
    next_txn = 0;
}

static void teardown(void)
{
    tc_fixture_down(&srv, nc, js, logp);
    unlink(rulesp);
}

TestSuite(state, .init = setup, .fini = teardown, .timeout = 180);

static pid_t start(const char *fault)
{
    if (fault)
        setenv("VERDICT_TEST_FAULT", fault, 1);
    pid_t pid = tc_start_engine(srv.url, logp,
                                (const char *const[]){"--rules", rulesp, "--ack-wait", "2s", "--backoff", "",
                                                      "--max-keys", "10000", "--snapshot-interval", "0", NULL});
    unsetenv("VERDICT_TEST_FAULT");
    return pid;
}

/* Publishes one transaction of card tok_card_1 to the stream. */
static void publish(char *id, size_t cap)
{
    snprintf(id, cap, "st-%d", next_txn++);
    Transaction t;
    tc_txn(&t, id, 1000);
    cr_assert(tc_publish(js, "txn.ecom.c", &t));
}

/* Waits for the decision of id and returns the count it saw (from its rule id seen_<k>). */
static int seen_count(const char *id)
{
    for (int i = 0; i < 150; i++) {
        natsMsg *d = tc_find_decision(js, id);
        if (d) {
            const char *r = NULL;
            natsMsgHeader_Get(d, "Verdict-Reasons", &r);
            cr_assert(r && strncmp(r, "seen_", 5) == 0, "decision of %s has reasons '%s'", id, r ? r : "");
            int k = atoi(r + 5);
            natsMsg_Destroy(d);
            return k;
        }
        tc_sleep_ms(100);
    }
    cr_assert_fail("no decision for %s; see %s", id, logp);
    return -1;
}

static void wait_idle(void)
{
    uint64_t ackp = 1, pend = 1;
    for (int i = 0; i < 150 && (ackp || pend); i++) {
        tc_sleep_ms(100);
        cr_assert(tc_consumer_counts(js, &ackp, &pend, NULL));
    }
    cr_assert_eq(ackp + pend, 0, "the consumer did not settle; see %s", logp);
}

Test(state, counts_are_exact_through_redelivery_restart_and_kill9)
{
    char id[32];
    int expect = 0;
    /* 1. every first ack is lost: each transaction is redelivered and answered from its stored decision; the
     *    redelivery must not count the transaction again */
    pid_t pid = start("skip_first_ack");
    for (int i = 0; i < 3; i++) {
        publish(id, sizeof id);
        cr_assert_eq(seen_count(id), expect, "%s", id);
        expect++;
    }
    wait_idle();
    publish(id, sizeof id);
    cr_assert_eq(seen_count(id), expect++, "redeliveries did not count twice");
    wait_idle();
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0);

    /* 2. a plain restart: the state is rebuilt from the stream, not reset */
    pid = start(NULL);
    publish(id, sizeof id);
    cr_assert_eq(seen_count(id), expect++, "after a restart the history is still there");

    /* 3. kill -9 at each crash point, then restart: the state equals a recomputation from scratch */
    static const char *points[] = {"crash_before_publish", "crash_after_publish", "crash_after_ack"};
    for (int p = 0; p < 3; p++) {
        kill(pid, SIGTERM);
        cr_assert_eq(child_wait(pid, 15000), 0);
        pid = start(points[p]);
        publish(id, sizeof id);
        cr_assert_eq(child_wait(pid, 10000), -1, "the fault %s killed the engine", points[p]);
        pid = start(NULL);
        cr_assert_eq(seen_count(id), expect, "the transaction in hand at %s saw the state before it", points[p]);
        expect++;
        wait_idle();
        publish(id, sizeof id);
        cr_assert_eq(seen_count(id), expect, "after %s nothing was lost or counted twice", points[p]);
        expect++;
    }
    cr_assert(file_wait_for(logp, "velocity state rebuilt from the stream", 1000));
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0);
}

Test(state, a_list_change_put_with_the_kv_api_is_seen_by_the_next_transaction)
{
    FILE *f = fopen(rulesp, "w");
    fprintf(f, "list blocked_cards\nrule blocked decline \"blocked\" when card_id in list(\"blocked_cards\")\n"
               "rule young review \"young\" when profile.account_age_days < 7\n");
    fclose(f);
    pid_t pid = start(NULL);
    char id[32];
    publish(id, sizeof id);
    natsMsg *d = NULL;
    for (int i = 0; i < 100 && !(d = tc_find_decision(js, id)); i++)
        tc_sleep_ms(100);
    cr_assert_not_null(d);
    const char *o = NULL, *deg = NULL;
    natsMsgHeader_Get(d, "Verdict-Outcome", &o);
    cr_assert_str_eq(o, "approve");
    cr_assert_neq(natsMsgHeader_Get(d, "Verdict-Degraded", &deg), NATS_OK, "replicas loaded: not degraded");
    natsMsg_Destroy(d);

    /* what `nats kv put verdict_lists blocked_cards.tok_card_1 1` does */
    kvStore *kv = NULL;
    uint64_t rev;
    cr_assert_eq(js_KeyValue(&kv, js, "verdict_lists"), NATS_OK, "the engine created the bucket");
    cr_assert_eq(kvStore_PutString(&rev, kv, "blocked_cards.tok_card_1", "1"), NATS_OK);
    kvStore_Destroy(kv);
    cr_assert_eq(js_KeyValue(&kv, js, "verdict_profiles"), NATS_OK);
    cr_assert_eq(kvStore_PutString(&rev, kv, "acct_1", "{\"account_age_days\": 2}"), NATS_OK);
    kvStore_Destroy(kv);
    tc_sleep_ms(200); /* the watcher applies the put asynchronously; "next" means after it arrived */
    publish(id, sizeof id);
    for (int i = 0; i < 100 && !(d = tc_find_decision(js, id)); i++)
        tc_sleep_ms(100);
    cr_assert_not_null(d);
    const char *reasons = NULL;
    natsMsgHeader_Get(d, "Verdict-Outcome", &o);
    natsMsgHeader_Get(d, "Verdict-Reasons", &reasons);
    cr_assert_str_eq(o, "decline");
    cr_assert(reasons && strstr(reasons, "blocked") && strstr(reasons, "young"), "reasons: %s", reasons);
    natsMsg_Destroy(d);
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0);
}

/* 8 MB: well over what nats-server pushes to an ordered consumer before it waits for flow control (2 MB on
 * 2.10: its 32 MiB flow-control limit / 16; measured: a paused reader held 53 of these 40 kB messages) */
#define BIG_N 200

/* Publishes n transactions of tok_card_1 with a 40 kB attribute each and waits until all are decided. */
static void publish_big(int n)
{
    static char pad[40000];
    memset(pad, 'x', sizeof pad - 1);
    static unsigned char buf[48000];
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "big-%d", i);
        Transaction t;
        tc_txn(&t, id, 1000);
        Verdict__V1__Transaction__AttributesEntry a = VERDICT__V1__TRANSACTION__ATTRIBUTES_ENTRY__INIT;
        Verdict__V1__Transaction__AttributesEntry *ap = &a;
        a.key = "pad";
        a.value = pad;
        t.attributes = &ap;
        t.n_attributes = 1;
        size_t len = verdict__v1__transaction__pack(&t, buf);
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = id;
        cr_assert_eq(js_Publish(NULL, js, "txn.ecom.big", buf, (int)len, &po, NULL), NATS_OK);
    }
    cr_assert_geq(tc_wait_msgs(js, "DECISIONS", (uint64_t)n, 60000), (uint64_t)n, "not all decided; see %s", logp);
    wait_idle();
}

/* Issue 14 item 6: a read error or a 3 s stall ended the rebuild as if the stream had ended, and the engine
 * started (ready) with counts too low. Here the stream holds more than the server pushes to a reader before it
 * waits for flow control (BIG_N), the rebuild_pause fault holds the rebuild after its first transaction,
 * and the server is stopped (SIGSTOP) meanwhile: the reader gets what was pushed and then nothing. The start
 * must fail, loudly, and the engine must never say it started. */
Test(state, a_rebuild_that_stalls_fails_the_start)
{
    pid_t pid = start(NULL);
    publish_big(BIG_N);
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0);
    unlink(logp);

    setenv("VERDICT_TEST_FAULT", "rebuild_pause", 1);
    const char *argv[] = {"verdict", "serve", "--nats-url", srv.url, "--rules", rulesp, "--workers", "2",
                          "--snapshot-interval", "0", NULL};
    pid = verdict_spawn(argv, logp);
    unsetenv("VERDICT_TEST_FAULT");
    cr_assert(file_wait_for(logp, "test fault: rebuild paused", 20000), "the rebuild did not start; see %s", logp);
    kill(srv.pid, SIGSTOP);
    /* the rebuild either gives up (fixed) or takes the stall for the end and carries on (the defect); the
     * read waits 5 s, longer while nats.c tries to recreate the ordered consumer on missed heartbeats */
    bool failed = file_wait_for(logp, "velocity rebuild incomplete", 60000);
    bool rebuilt = file_wait_for(logp, "velocity state rebuilt", 100);
    kill(srv.pid, SIGCONT);
    int status = child_wait(pid, 20000);
    if (status == -1) {
        kill(pid, SIGKILL);
        child_wait(pid, 5000);
    }
    cr_assert(!rebuilt, "a partial rebuild was taken as complete; see %s", logp);
    cr_assert(failed, "no 'velocity rebuild incomplete' logged; see %s", logp);
    cr_assert_eq(status, 1, "the start must fail (exit 1), not %d; see %s", status, logp);
    cr_assert(!file_wait_for(logp, "engine started", 10), "the engine must not start; see %s", logp);
}

/* The same stall during a reload (a KV push that needs a new velocity state): the reload is refused and the
 * running rules stay, then the same version is tried again and applies once the stream answers, with the
 * full count. Before, the partial state was swapped in: the rule on the card's 200 transactions did not fire. */
Test(state, a_rebuild_that_stalls_refuses_the_reload_and_it_is_retried)
{
    FILE *f = fopen(rulesp, "w");
    cr_assert_not_null(f);
    fprintf(f, "rule any approve \"any\" when amount_minor >= 0\n");
    fclose(f);
    pid_t pid = start("rebuild_pause"); /* no velocity feature at start: the fault waits for the reload */
    publish_big(BIG_N);
    kvStore *kv = NULL;
    cr_assert_eq(js_KeyValue(&kv, js, "verdict_rules"), NATS_OK, "the engine creates the bucket");
    cr_assert_eq(kvStore_PutString(NULL, kv, "rules",
                                   "rule many review \"200 or more\" when count(card_id, 24h) >= 200\n"
                                   "rule few approve \"fewer\" when count(card_id, 24h) < 200\n"),
                 NATS_OK);
    kvStore_Destroy(kv);
    cr_assert(file_wait_for(logp, "test fault: rebuild paused", 20000), "the rebuild did not start; see %s", logp);
    kill(srv.pid, SIGSTOP);
    bool refused = file_wait_for(logp, "velocity rebuild incomplete", 60000);
    bool swapped_partial = file_wait_for(logp, "policy swapped", 100);
    kill(srv.pid, SIGCONT);
    cr_assert(!swapped_partial, "a partial rebuild was swapped in; see %s", logp);
    cr_assert(refused, "no 'velocity rebuild incomplete' logged; see %s", logp);
    cr_assert(file_wait_for(logp, "policy swapped", 60000), "the version was not retried; see %s", logp);
    char id[32];
    publish(id, sizeof id);
    natsMsg *d = NULL;
    for (int i = 0; i < 100 && !(d = tc_find_decision(js, id)); i++)
        tc_sleep_ms(100);
    cr_assert_not_null(d);
    const char *reasons = NULL;
    natsMsgHeader_Get(d, "Verdict-Reasons", &reasons);
    cr_assert(reasons && strcmp(reasons, "many") == 0, "reasons '%s': the state missed transactions", reasons);
    natsMsg_Destroy(d);
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0);
}

/* Issue 14 item 4 through the engine: the first of 8 transactions of a card comes from a clock 4 minutes fast
 * (created_at_ms ahead of the store time). It moved the card's newest bucket forward, every later one was
 * dropped as late, and count(card_id, 1m) read 0 for all of them. */
Test(state, a_transaction_dated_ahead_does_not_blind_the_card_short_window)
{
    FILE *f = fopen(rulesp, "w");
    cr_assert_not_null(f);
    for (int k = 0; k < 10; k++)
        fprintf(f, "rule seen_%d approve \"%d earlier\" when count(card_id, 1m) == %d\n", k, k, k);
    fclose(f);
    pid_t pid = start(NULL);
    for (int i = 0; i < 8; i++) {
        char id[32];
        snprintf(id, sizeof id, "skew-%d", i);
        Transaction t;
        tc_txn(&t, id, 1000);
        if (i == 0)
            t.created_at_ms += 4 * 60 * 1000;
        cr_assert(tc_publish(js, "txn.ecom.c", &t));
        cr_assert_eq(seen_count(id), i, "%s: the card's earlier transactions in the last minute", id);
    }
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0);
}

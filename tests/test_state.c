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
    cr_assert(server_start(&srv, NULL), "nats-server did not start");
    nc = tc_connect(srv.url);
    cr_assert_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
    temp_path(logp, sizeof logp, ".log");
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
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    server_stop(&srv);
    unlink(logp);
    unlink(rulesp);
}

TestSuite(state, .init = setup, .fini = teardown, .timeout = 180);

static pid_t start(const char *fault)
{
    if (fault)
        setenv("VERDICT_TEST_FAULT", fault, 1);
    pid_t pid = tc_start_engine(srv.url, logp,
                                (const char *const[]){"--rules", rulesp, "--ack-wait", "2s", "--backoff", "",
                                                      "--max-keys", "10000", NULL});
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

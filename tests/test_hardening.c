/* test_hardening.c - regression tests for the engine defects of the hardening review (issue 14), each against
 * a real nats-server: hostile Verdict-Reply-To headers, retries of a transaction still being decided, the
 * latency budget under clock skew, a batch mixing stored and retrying decisions, the effective AckWait,
 * decisions with every rule matching, and PubAcks that outlive their publish timeout. Pure parts (identifier
 * and subject checks) are unit-tested first. */

#include "broker.h"
#include "client.h"
#include "harness.h"
#include "ident.h"
#include "replica.h"
#include "rules.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --- identifiers and subjects (pure) ------------------------------------------------------------------ */

Test(ident, subjects_from_headers_are_literal_and_printable)
{
    cr_assert(ident_subject_valid("_INBOX.abc.1"));
    cr_assert(ident_subject_valid("a"));
    cr_assert_not(ident_subject_valid(""));
    cr_assert_not(ident_subject_valid("foo\nbar"), "a bare LF closes the connection");
    cr_assert_not(ident_subject_valid("foo\r\nbar"));
    cr_assert_not(ident_subject_valid("_INBOX.a b"), "a space splits subject and reply");
    cr_assert_not(ident_subject_valid("_INBOX.a\tb"));
    cr_assert_not(ident_subject_valid("_INBOX.*"));
    cr_assert_not(ident_subject_valid("_INBOX.>"));
    cr_assert_not(ident_subject_valid("_INBOX..a"));
    cr_assert_not(ident_subject_valid(".a"));
    cr_assert_not(ident_subject_valid("a."));
    cr_assert_not(ident_subject_valid("_INBOX.\xc3\xa9"));
    char longs[300];
    memset(longs, 'a', sizeof longs - 1);
    longs[sizeof longs - 1] = 0;
    cr_assert_not(ident_subject_valid(longs));
}

Test(ident, reply_subjects_must_lie_under_a_configured_prefix)
{
    cr_assert(ident_subject_under("_INBOX.abc", "_INBOX"));
    cr_assert(ident_subject_under("_INBOX.payments.x.1", "_INBOX"));
    cr_assert(ident_subject_under("_INBOX.payments.x", "_INBOX.payments"));
    cr_assert(ident_subject_under("acme.inbox.7", "_INBOX, acme.inbox"));
    cr_assert_not(ident_subject_under("_INBOX", "_INBOX"), "the prefix itself is not an inbox");
    cr_assert_not(ident_subject_under("_INBOXX.a", "_INBOX"), "token by token, not by characters");
    cr_assert_not(ident_subject_under("decision.approve.victim-42", "_INBOX"));
    cr_assert_not(ident_subject_under("txn.req", "_INBOX"));
    cr_assert_not(ident_subject_under("dlq.poison", "_INBOX"));
    cr_assert_not(ident_subject_under("_INBOX.other.x", "_INBOX.payments"));
}

Test(ident, one_limit_for_each_identifier)
{
    char id[80];
    memset(id, 'a', sizeof id);
    id[IDENT_TXN_ID_MAX] = 0;
    cr_assert(ident_txn_id_valid(id));
    id[IDENT_TXN_ID_MAX] = 'a';
    id[IDENT_TXN_ID_MAX + 1] = 0;
    cr_assert_not(ident_txn_id_valid(id));
    cr_assert(ident_list_name_valid(id, IDENT_NAME_MAX));
    cr_assert_not(ident_list_name_valid(id, IDENT_NAME_MAX + 1));
    cr_assert(ident_rule_id_valid(id, IDENT_NAME_MAX));
    cr_assert_not(ident_rule_id_valid(id, IDENT_NAME_MAX + 1));
    cr_assert_not(ident_rule_id_valid("Upper", 5));
    cr_assert_not(ident_rule_id_valid("9lives", 6));
    cr_assert_not(ident_txn_id_valid("a.b"));
    cr_assert_not(ident_txn_id_valid(""));
}

/* Item 21: a list name the compiler accepts is one the replicas store and look up, at the limit and past it. */
Test(ident, a_list_name_compiles_exactly_when_the_replicas_can_hold_it)
{
    for (size_t len = IDENT_NAME_MAX; len <= IDENT_NAME_MAX + 1; len++) {
        char name[IDENT_NAME_MAX + 2];
        memset(name, 'l', len);
        name[len] = 0;
        char src[512];
        snprintf(src, sizeof src, "list %s\nrule r decline \"x\" when card_id in list(\"%s\")\n", name, name);
        featreg reg;
        featreg_init(&reg);
        ruleset *rs = NULL;
        rules_diag d = {0};
        vstatus s = rules_compile(src, strlen(src), "t.rules", &reg, &rs, &d);
        char key[REPLICA_KEY_MAX + 1];
        size_t k = replica_list_key(key, sizeof key, name, len, "tok_card_1", 10);
        if (len == IDENT_NAME_MAX) {
            cr_assert_eq(s, V_OK, "%s", d.text ? d.text : "");
            cr_assert_gt(k, 0, "the replica must hold a list the compiler accepts");
        } else {
            cr_assert_eq(s, V_EPARSE);
            cr_assert_eq(k, 0, "the replica must refuse what the compiler refuses");
        }
        rules_free(rs);
        rules_diag_free(&d);
    }
}

/* --- against a real server ------------------------------------------------------------------------------ */

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
    cr_assert_eq(child_wait(pid, 15000), 0, "engine did not exit 0 on SIGTERM; see %s", logp);
}

TestSuite(hardening, .init = setup, .fini = teardown, .timeout = 120);

/* Publishes raw bytes to subject with a Nats-Msg-Id and an optional Verdict-Reply-To (stored, PubAck awaited). */
static void publish_raw(const char *subject, const char *msg_id, const void *data, int len, const char *reply_to)
{
    natsMsg *m = NULL;
    cr_assert_eq(natsMsg_Create(&m, subject, NULL, data, len), NATS_OK);
    if (reply_to)
        cr_assert_eq(natsMsgHeader_Set(m, "Verdict-Reply-To", reply_to), NATS_OK);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msg_id;
    po.MaxWait = 5000;
    jsPubAck *pa = NULL;
    cr_assert_eq(js_PublishMsg(&pa, js, m, &po, NULL), NATS_OK);
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(m);
}

static void publish_txn(const char *subject, const char *txn_id, int64_t amount, const char *reply_to)
{
    Transaction t;
    tc_txn(&t, txn_id, amount);
    unsigned char buf[2048];
    int n = tc_pack(&t, buf);
    publish_raw(subject, txn_id, buf, n, reply_to);
}

static int count_in_log(const char *needle) { return tc_count_lines(logp, needle); }

/* Item 2: a header is data from whoever published the message. Before the fix a bare LF made the server close
 * the workers' connection on every delivery, and decision.approve.victim-42 wrote an entry into DECISIONS. */
Test(hardening, hostile_reply_to_headers_are_ignored_and_counted)
{
    pid_t pid = tc_start_engine(srv.url, logp, NULL);
    natsSubscription *inbox = NULL;
    cr_assert_eq(natsConnection_SubscribeSync(&inbox, nc, "_INBOX.t.>"), NATS_OK);
    cr_assert_eq(natsConnection_Flush(nc), NATS_OK);

    publish_txn("txn.req", "rt-lf", 100, "_INBOX.t\nPUB decision.approve.x 0");
    publish_txn("txn.req", "rt-space", 100, "_INBOX.t.a b");
    publish_txn("txn.req", "rt-wild", 100, "_INBOX.t.*");
    publish_txn("txn.req", "rt-decision", 100, "decision.approve.victim-42");
    publish_txn("txn.req", "rt-dlq", 100, "dlq.decode_error");
    publish_txn("txn.req", "rt-txn", 100, "txn.orders");
    /* garbage with a reply into DECISIONS: dead-lettered, nothing written at that subject */
    publish_raw("txn.req", "rt-garbage", "\xff\xff\xff", 3, "decision.approve.victim-43");
    /* a valid inbox, but on a subject the ingress never writes: anyone may publish there */
    publish_txn("txn.orders", "rt-direct", 100, "_INBOX.t.direct");
    /* the control: the ingress's own subject and a requester's inbox */
    publish_txn("txn.req", "rt-good", 100, "_INBOX.t.good");

    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", 8, 10000), 8, "every valid transaction decided once");
    cr_assert_eq(tc_wait_msgs(js, "DLQ", 1, 5000), 1);
    natsMsg *r = NULL;
    cr_assert_eq(natsSubscription_NextMsg(&r, inbox, 5000), NATS_OK, "the ingress's own reply is honoured");
    cr_assert_str_eq(natsMsg_GetSubject(r), "_INBOX.t.good");
    natsMsg_Destroy(r);
    r = NULL;
    cr_assert_neq(natsSubscription_NextMsg(&r, inbox, 500), NATS_OK, "no reply to any other inbox");
    natsMsg_Destroy(r);

    natsMsg *m = NULL;
    cr_assert_neq(js_GetLastMsg(&m, js, "DECISIONS", "decision.approve.victim-42", NULL, NULL), NATS_OK);
    cr_assert_neq(js_GetLastMsg(&m, js, "DECISIONS", "decision.approve.victim-43", NULL, NULL), NATS_OK);
    cr_assert_eq(count_in_log("Verdict-Reply-To ignored"), 8, "each refusal counted; see %s", logp);
    cr_assert_eq(count_in_log("\"msg\":\"disconnected"), 0, "the server never closed our connection; see %s", logp);

    /* the engine still decides on the same connection */
    Transaction t;
    tc_txn(&t, "rt-after", 100);
    unsigned char buf[2048];
    int n = tc_pack(&t, buf);
    cr_assert_eq(natsConnection_Request(&r, nc, "verdict.v1.decide", buf, n, 5000), NATS_OK);
    natsMsg_Destroy(r);
    natsSubscription_Destroy(inbox);
    stop_engine(pid);
}

/* A core request whose reply subject is not an inbox under --reply-prefix is refused at the door. */
Test(hardening, a_request_with_a_reply_subject_outside_the_prefix_is_refused)
{
    const char *extra[] = {"--reply-prefix", "_INBOX.payments", NULL};
    pid_t pid = tc_start_engine(srv.url, logp, extra);
    natsSubscription *sub = NULL;
    cr_assert_eq(natsConnection_SubscribeSync(&sub, nc, "_INBOX.other.1"), NATS_OK);
    Transaction t;
    tc_txn(&t, "rp-1", 100);
    unsigned char buf[2048];
    int n = tc_pack(&t, buf);
    cr_assert_eq(natsConnection_PublishRequest(nc, "verdict.v1.decide", "_INBOX.other.1", buf, n), NATS_OK);
    natsMsg *r = NULL;
    cr_assert_eq(natsSubscription_NextMsg(&r, sub, 5000), NATS_OK);
    const char *code = NULL;
    cr_assert_eq(natsMsgHeader_Get(r, "Nats-Service-Error-Code", &code), NATS_OK);
    cr_assert_str_eq(code, "400");
    natsMsg_Destroy(r);
    cr_assert_eq(tc_stream_msgs(js, "TXN"), 0, "nothing stored for a refused request");
    natsSubscription_Destroy(sub);
    stop_engine(pid);
}

/* Item 3: retries of a transaction whose decision is not stored yet. Before the fix the ingress PubAck handler
 * polled for each retry in turn on nats.c's only PubAck thread: 20 retries were answered one after another,
 * the last after about 4 s. Now each gets its answer within the budget (here 409: still being decided). */
Test(hardening, twenty_concurrent_retries_are_answered_within_the_budget)
{
    setenv("VERDICT_TEST_FAULT", "publish_fail", 1);
    const char *extra[] = {"--budget", "200ms", NULL};
    pid_t pid = tc_start_engine(srv.url, logp, extra);
    unsetenv("VERDICT_TEST_FAULT");
    Transaction t;
    tc_txn(&t, "retry-storm", 100);
    unsigned char buf[2048];
    int n = tc_pack(&t, buf);
    natsMsg *r = NULL;
    cr_assert_eq(natsConnection_Request(&r, nc, "verdict.v1.decide", buf, n, 5000), NATS_OK);
    natsMsg_Destroy(r);

    natsSubscription *sub = NULL;
    cr_assert_eq(natsConnection_SubscribeSync(&sub, nc, "_INBOX.storm.>"), NATS_OK);
    cr_assert_eq(natsConnection_Flush(nc), NATS_OK);
    int64_t t0 = mono_ns();
    for (int i = 0; i < 20; i++) {
        char inbox[64];
        snprintf(inbox, sizeof inbox, "_INBOX.storm.%d", i);
        cr_assert_eq(natsConnection_PublishRequest(nc, "verdict.v1.decide", inbox, buf, n), NATS_OK);
    }
    cr_assert_eq(natsConnection_Flush(nc), NATS_OK);
    int64_t last_ms = 0, first_ms = -1;
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(natsSubscription_NextMsg(&r, sub, 20000), NATS_OK, "retry %d not answered", i);
        if (first_ms < 0)
            first_ms = (mono_ns() - t0) / 1000000;
        const char *code = NULL;
        cr_assert_eq(natsMsgHeader_Get(r, "Nats-Service-Error-Code", &code), NATS_OK);
        cr_assert_str_eq(code, "409");
        natsMsg_Destroy(r);
        last_ms = (mono_ns() - t0) / 1000000;
    }
    fprintf(stderr, "20 concurrent retries: first answered after %lld ms, last after %lld ms\n",
            (long long)first_ms, (long long)last_ms);
    /* 200 ms budget; 1 s leaves room for a loaded CI box and is a fifth of what serial polling took */
    cr_assert_lt(last_ms, 1000, "the last of 20 retries was answered after %lld ms", (long long)last_ms);
    natsSubscription_Destroy(sub);
    stop_engine(pid);
}

/* Item 3, the other half: a retry arriving while the first copy is being decided gets that decision. */
Test(hardening, a_retry_during_the_decision_gets_the_stored_decision)
{
    pid_t pid = tc_start_engine(srv.url, logp, NULL);
    Transaction t;
    tc_txn(&t, "retry-wait", 250000);
    unsigned char buf[2048];
    int n = tc_pack(&t, buf);
    natsSubscription *sub = NULL;
    cr_assert_eq(natsConnection_SubscribeSync(&sub, nc, "_INBOX.wait.>"), NATS_OK);
    cr_assert_eq(natsConnection_PublishRequest(nc, "verdict.v1.decide", "_INBOX.wait.1", buf, n), NATS_OK);
    cr_assert_eq(natsConnection_PublishRequest(nc, "verdict.v1.decide", "_INBOX.wait.2", buf, n), NATS_OK);
    for (int i = 0; i < 2; i++) {
        natsMsg *r = NULL;
        cr_assert_eq(natsSubscription_NextMsg(&r, sub, 5000), NATS_OK);
        const char *outcome = NULL;
        cr_assert_eq(natsMsgHeader_Get(r, "Verdict-Outcome", &outcome), NATS_OK, "reply %d is a decision", i);
        cr_assert_str_eq(outcome, "review");
        natsMsg_Destroy(r);
    }
    cr_assert_eq(tc_stream_msgs(js, "DECISIONS"), 1);
    natsSubscription_Destroy(sub);
    stop_engine(pid);
}

#define FAKETIME_LIB "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"

static Decision *request_decision(arena *a, const char *txn_id, natsMsg **keep)
{
    Transaction t;
    tc_txn(&t, txn_id, 100);
    unsigned char buf[2048];
    int n = tc_pack(&t, buf);
    cr_assert_eq(natsConnection_Request(keep, nc, "verdict.v1.decide", buf, n, 5000), NATS_OK);
    Decision *d = decision_decode(a, natsMsg_GetData(*keep), (size_t)natsMsg_GetDataLength(*keep));
    cr_assert_not_null(d, "the reply is a decision");
    return d;
}

#ifndef __SANITIZE_THREAD__ /* libfaketime's interposition confuses ThreadSanitizer (a false double lock in
                               nats.c); the plain and ASan builds run this test */
/* Item 7: the engine's wall clock 30 s ahead of the server's. Before the fix every decision was
 * budget_exceeded and degraded (and, with a fallback, had its outcome replaced). */
Test(hardening, a_skewed_clock_does_not_spend_the_budget)
{
    cr_assert_eq(access(FAKETIME_LIB, R_OK), 0, "libfaketime is needed (apt-get install faketime)");
    setenv("LD_PRELOAD", FAKETIME_LIB, 1);
    setenv("FAKETIME", "+30s", 1);
    setenv("FAKETIME_DONT_FAKE_MONOTONIC", "1", 1);
    setenv("ASAN_OPTIONS", "verify_asan_link_order=0:detect_leaks=1:abort_on_error=1", 1);
    const char *extra[] = {"--fallback", "decline", NULL};
    pid_t pid = tc_start_engine(srv.url, logp, extra);
    unsetenv("LD_PRELOAD");
    unsetenv("FAKETIME");
    unsetenv("FAKETIME_DONT_FAKE_MONOTONIC");
    unsetenv("ASAN_OPTIONS");
    arena a;
    arena_init(&a, 65536);
    natsMsg *r = NULL;
    Decision *d = request_decision(&a, "skew-1", &r);
    cr_assert_eq(d->outcome, VERDICT__V1__OUTCOME__OUTCOME_APPROVE, "no fallback applied");
    cr_assert_not(d->budget_exceeded);
    cr_assert_not(d->degraded);
    cr_assert_lt(d->latency_us, 50000);
    cr_assert_geq(d->queued_us, 29000000, "the age since store is reported on its own (clocks differ)");
    const char *v = NULL;
    cr_assert_neq(natsMsgHeader_Get(r, "Verdict-Budget-Exceeded", &v), NATS_OK);
    natsMsg_Destroy(r);
    arena_free(&a);
    stop_engine(pid);
}

#endif

/* Item 7: a decision that overruns its budget is flagged exactly when its stored latency says so, and the
 * fallback outcome replaces it only for a requester who waits, never for direct-publish traffic. */
Test(hardening, the_fallback_is_only_for_a_requester_who_waits)
{
    setenv("VERDICT_TEST_FAULT", "slow_decide", 1);
    const char *extra[] = {"--fallback", "decline", "--budget", "30ms", NULL};
    pid_t pid = tc_start_engine(srv.url, logp, extra);
    unsetenv("VERDICT_TEST_FAULT");
    arena a;
    arena_init(&a, 65536);
    natsMsg *r = NULL;
    Decision *d = request_decision(&a, "slow-req", &r);
    cr_assert(d->budget_exceeded);
    cr_assert_gt(d->latency_us, 30000, "the flag matches the stored latency");
    cr_assert_eq(d->outcome, VERDICT__V1__OUTCOME__OUTCOME_DECLINE, "the requester gets the fallback");
    natsMsg_Destroy(r);

    publish_txn("txn.orders", "slow-direct", 100, NULL);
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", 2, 5000), 2);
    natsMsg *m = tc_find_decision(js, "slow-direct");
    cr_assert_not_null(m);
    d = decision_decode(&a, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    cr_assert_not_null(d);
    cr_assert(d->budget_exceeded);
    cr_assert_eq(d->outcome, VERDICT__V1__OUTCOME__OUTCOME_APPROVE, "nobody waits: decided on its merits");
    natsMsg_Destroy(m);
    arena_free(&a);
    stop_engine(pid);
}

/* Item 8: one batch holds a decision that is stored at once and one whose stream "has no leader" for 3 s.
 * Before the fix the stored one was neither answered nor acked until the retry ended, and was redelivered
 * after the effective AckWait (1 s) and answered twice. */
Test(hardening, stored_decisions_are_answered_before_the_retry_and_nothing_is_redelivered)
{
    config c;
    config_defaults(&c);
    verror e = {0};
    cr_assert_eq(broker_setup(&c, js, &e), V_OK, "%s", e.msg);
    natsSubscription *sub = NULL;
    cr_assert_eq(natsConnection_SubscribeSync(&sub, nc, "_INBOX.mix.>"), NATS_OK);
    cr_assert_eq(natsConnection_Flush(nc), NATS_OK);
    publish_txn("txn.req", "ok-1", 100, "_INBOX.mix.ok");
    publish_txn("txn.req", "retry-1", 100, "_INBOX.mix.retry");
    setenv("VERDICT_TEST_FAULT", "retry_some", 1);
    const char *extra[] = {"--workers", "1", NULL};
    int64_t t0 = mono_ns();
    pid_t pid = tc_start_engine(srv.url, logp, extra);
    unsetenv("VERDICT_TEST_FAULT");
    natsMsg *r = NULL;
    cr_assert_eq(natsSubscription_NextMsg(&r, sub, 10000), NATS_OK);
    cr_assert_str_eq(natsMsg_GetSubject(r), "_INBOX.mix.ok", "the stored decision is answered first");
    int64_t ok_ms = (mono_ns() - t0) / 1000000;
    natsMsg_Destroy(r);
    tc_sleep_ms(1800); /* past the 1 s effective AckWait, inside the 3 s outage */
    uint64_t ackp = 0, pend = 0, redelivered = 99;
    cr_assert(tc_consumer_counts(js, &ackp, &pend, &redelivered));
    cr_assert_eq(ackp, 1, "only the retrying message is held");
    cr_assert_eq(redelivered, 0, "held messages are kept in progress, never redelivered");
    cr_assert_eq(natsSubscription_NextMsg(&r, sub, 10000), NATS_OK);
    cr_assert_str_eq(natsMsg_GetSubject(r), "_INBOX.mix.retry");
    natsMsg_Destroy(r);
    r = NULL;
    cr_assert_neq(natsSubscription_NextMsg(&r, sub, 1500), NATS_OK, "each requester answered once");
    cr_assert(tc_consumer_counts(js, &ackp, &pend, &redelivered));
    cr_assert_eq(redelivered, 0, "kept in progress through the whole retry (waits grow to 1 s, AckWait is 1 s)");
    cr_assert_eq(tc_stream_msgs(js, "DECISIONS"), 2);
    cr_assert_lt(ok_ms, 15000 + 2500);
    natsSubscription_Destroy(sub);
    stop_engine(pid);
}

/* Item 8: the server redelivers after BackOff[0] whatever --ack-wait says; a BackOff too short to keep
 * messages in progress is refused with the reason, and the effective value is logged. */
Test(hardening, the_effective_ack_wait_is_read_back_and_validated)
{
    pid_t pid = tc_start_engine(srv.url, logp, NULL);
    cr_assert(file_wait_for(logp, "\"effective_ack_wait_ms\":1000", 1000),
              "BackOff 1s,... makes the effective AckWait 1 s; see %s", logp);
    stop_engine(pid);
    jsErrCode jerr = 0;
    cr_assert_eq(js_DeleteConsumer(js, "TXN", "verdict", NULL, &jerr), NATS_OK);
    const char *argv[] = {"verdict", "serve", "--nats-url", srv.url, "--backoff", "100ms,1s", NULL};
    pid = verdict_spawn(argv, logp);
    int rc = child_wait(pid, 15000);
    cr_assert_neq(rc, 0, "a 100 ms first BackOff is refused");
    cr_assert(file_wait_for(logp, "redelivers after 100 ms", 100), "the refusal says why; see %s", logp);
}

/* Item 5: 32 rules, each with a 63-character id and a 200-character reason, all matching. Before the fix the
 * decision did not fit the 8 KiB encode buffer: 3 naks, then a max_deliveries dead letter. */
Test(hardening, a_decision_with_every_rule_matching_is_stored)
{
    char rules_path[256];
    temp_path(rules_path, sizeof rules_path, ".rules");
    FILE *f = fopen(rules_path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 32; i++) {
        char id[IDENT_NAME_MAX + 1], reason[201];
        snprintf(id, sizeof id, "r%02d_", i);
        memset(id + 4, 'x', IDENT_NAME_MAX - 4);
        id[IDENT_NAME_MAX] = 0;
        memset(reason, 'y', 200);
        reason[200] = 0;
        fprintf(f, "rule %s review \"%s\" when amount_minor >= 0\n", id, reason);
    }
    fclose(f);
    const char *check[] = {"verdict", "check", rules_path, NULL};
    cr_assert_eq(child_wait(verdict_spawn(check, logp), 15000), 0, "the file passes verdict check");
    const char *extra[] = {"--rules", rules_path, NULL};
    pid_t pid = tc_start_engine(srv.url, logp, extra);
    arena a;
    arena_init(&a, 1 << 20);
    natsMsg *r = NULL;
    Decision *d = request_decision(&a, "all-match", &r);
    cr_assert_eq(d->n_reasons, 32);
    cr_assert_eq(strlen(d->reasons[31]->rule_id), IDENT_NAME_MAX);
    cr_assert_eq(tc_stream_msgs(js, "DECISIONS"), 1);
    cr_assert_eq(tc_stream_msgs(js, "DLQ"), 0);
    const char *v = NULL;
    cr_assert_eq(natsMsgHeader_Get(r, "Verdict-Reasons", &v), NATS_OK);
    cr_assert_eq(strlen(v), 32 * (IDENT_NAME_MAX + 1) - 1, "every rule id in the header");
    natsMsg_Destroy(r);
    arena_free(&a);
    stop_engine(pid);
    unlink(rules_path);
}

/* Item 10: PubAcks that come after their publish timeout (1 ms here) are paired by message identity or
 * dropped, never written into a slot the next batch reuses; under AddressSanitizer this aborts the engine
 * if a late PubAck touches freed or reused memory. Every transaction still ends with exactly one decision. */
Test(hardening, late_pubacks_never_touch_a_reused_slot)
{
    const char *extra[] = {"--publish-timeout", "1ms", NULL};
    pid_t pid = tc_start_engine(srv.url, logp, extra);
    for (int i = 0; i < 300; i++) {
        char id[32];
        snprintf(id, sizeof id, "late-%d", i);
        publish_txn("txn.orders", id, 100 + i, NULL);
    }
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", 300, 60000), 300, "see %s", logp);
    uint64_t ackp = 1, pend = 1;
    for (int i = 0; i < 100 && (ackp || pend); i++) {
        tc_sleep_ms(100);
        tc_consumer_counts(js, &ackp, &pend, NULL);
    }
    cr_assert_eq(ackp + pend, 0, "everything acked");
    tc_sleep_ms(500);
    cr_assert_eq(tc_stream_msgs(js, "DECISIONS"), 300, "exactly one decision each");
    cr_assert_gt(count_in_log("retrying the batch"), 0, "the test must make PubAcks time out; see %s", logp);
    stop_engine(pid);
}

/* Item 18: ready means subscribed and flushed: a request sent the moment "engine started" is logged is
 * answered (test_reload once failed milliseconds after that line). */
Test(hardening, a_request_at_the_moment_of_ready_is_answered)
{
    for (int round = 0; round < 3; round++) {
        pid_t pid = tc_start_engine(srv.url, logp, NULL);
        Transaction t;
        char id[32];
        snprintf(id, sizeof id, "ready-%d", round);
        tc_txn(&t, id, 100);
        unsigned char buf[2048];
        int n = tc_pack(&t, buf);
        natsMsg *r = NULL;
        cr_assert_eq(natsConnection_Request(&r, nc, "verdict.v1.decide", buf, n, 2000), NATS_OK, "round %d", round);
        natsMsg_Destroy(r);
        stop_engine(pid);
        unlink(logp);
    }
}

/* Item 11: dead letters are published with the batch, asynchronously. Before the fix each poison message was
 * published synchronously inside the batch: with DLQ unavailable each cost the 2 s publish timeout, and the
 * valid transactions of the same batch waited past the effective AckWait and were redelivered. */
Test(hardening, an_unavailable_dlq_does_not_hold_the_rest_of_the_batch)
{
    config c;
    config_defaults(&c);
    verror e = {0};
    cr_assert_eq(broker_setup(&c, js, &e), V_OK, "%s", e.msg);
    cr_assert_eq(js_DeleteStream(js, "DLQ", NULL, NULL), NATS_OK);
    for (int i = 0; i < 3; i++) {
        char id[32];
        snprintf(id, sizeof id, "dlq-down-poison-%d", i);
        publish_raw("txn.orders", id, "\xff\xff\xff", 3, NULL);
        snprintf(id, sizeof id, "dlq-down-ok-%d", i);
        publish_txn("txn.orders", id, 100, NULL);
    }
    /* the engine verifies (and so recreates) DLQ at start: hold it in the rebuild and take DLQ away again */
    setenv("VERDICT_TEST_FAULT", "slow_rebuild", 1);
    const char *argv[] = {"verdict", "serve", "--nats-url", srv.url, "--workers", "1", NULL};
    pid_t pid = verdict_spawn(argv, logp);
    unsetenv("VERDICT_TEST_FAULT");
    cr_assert(file_wait_for(logp, "\"stream\":\"DLQ\"", 10000), "see %s", logp);
    cr_assert_eq(js_DeleteStream(js, "DLQ", NULL, NULL), NATS_OK);
    cr_assert(file_wait_for(logp, "engine started", 15000), "see %s", logp);
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", 3, 1500), 3, "the valid transactions are decided at once");
    tc_sleep_ms(1500); /* past the effective AckWait */
    uint64_t ackp = 0, pend = 0, redelivered = 99;
    cr_assert(tc_consumer_counts(js, &ackp, &pend, &redelivered));
    cr_assert_eq(redelivered, 0, "nothing was redelivered while the dead letters waited");
    cr_assert_eq(ackp, 3, "the poison messages are held, in progress, until DLQ is back");
    cr_assert_eq(broker_setup(&c, js, &e), V_OK, "%s", e.msg);
    cr_assert_eq(tc_wait_msgs(js, "DLQ", 3, 10000), 3, "dead-lettered once DLQ is back; see %s", logp);
    for (int i = 0; i < 50 && ackp; i++) {
        tc_sleep_ms(100);
        tc_consumer_counts(js, &ackp, &pend, NULL);
    }
    cr_assert_eq(ackp, 0, "termed after their dead letters were stored");
    cr_assert_eq(tc_stream_msgs(js, "DECISIONS"), 3);
    stop_engine(pid);
}

/* Issue 21 (cluster faults), the engine's own exposure: the decisions stream answers Duplicate for a write it
 * does not hold (here: the dedup id of a decision that was deleted). Before the fix the transaction was acked
 * with no decision stored, silently lost; now it is stored again under a derived id and then acked. */
Test(hardening, a_duplicate_pubAck_without_a_stored_decision_is_not_trusted)
{
    config c;
    config_defaults(&c);
    verror e = {0};
    cr_assert_eq(broker_setup(&c, js, &e), V_OK, "%s", e.msg);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = "ghost-1";
    jsPubAck *pa = NULL;
    cr_assert_eq(js_Publish(&pa, js, "decision.approve.ghost-1", "x", 1, &po, NULL), NATS_OK);
    uint64_t seq = pa->Sequence;
    jsPubAck_Destroy(pa);
    cr_assert_eq(js_DeleteMsg(js, "DECISIONS", seq, NULL, NULL), NATS_OK);
    cr_assert_eq(tc_stream_msgs(js, "DECISIONS"), 0);
    publish_txn("txn.orders", "ghost-1", 100, NULL);
    pid_t pid = tc_start_engine(srv.url, logp, NULL);
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", 1, 10000), 1, "the decision is stored after all; see %s", logp);
    natsMsg *m = tc_find_decision(js, "ghost-1");
    cr_assert_not_null(m);
    const char *id = NULL;
    cr_assert_eq(natsMsgHeader_Get(m, "Nats-Msg-Id", &id), NATS_OK);
    cr_assert_str_eq(id, "ghost-1:restored");
    natsMsg_Destroy(m);
    cr_assert(tc_wait_consumer_idle(js, 5000), "acked once the decision was seen stored");
    cr_assert(file_wait_for(logp, "holds no decision for this transaction", 100));
    stop_engine(pid);
}

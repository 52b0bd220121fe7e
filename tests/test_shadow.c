/* test_shadow.c - shadow policies (docs/shadow.md) against a real nats-server: a candidate that declines one
 * more rule's matches shows exactly those transitions in `verdict shadow report`, the live decisions are the
 * same as a run without the shadow, requesters get only live decisions, a redelivery makes one shadow decision,
 * a bad candidate is refused while the engine serves live, a shadow publish failure never touches the live
 * path; and, without a broker, the candidate's decision step allocates nothing and is given the live velocity
 * values by feature name. */
#include "alloccount.h"
#include "client.h"
#include "harness.h"
#include "shadow.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static test_server srv;
static natsConnection *nc;
static jsCtx *js;
static char logp[256], outp[256], livep[256], candp[256];
static arena ar;

#define MODEL VERDICT_SOURCE_DIR "/models/verdict-gbdt.json"

/* The live policy: big amounts declined, middle ones reviewed, a card's day total reviewed; count(ip,10m) is
 * read only by the live policy (it never fires), so the candidate's velocity ids differ from the live ones. */
static const char *live_rules =
    "rule big decline \"amount at or over 5000\" when amount >= 5000\n"
    "rule mid review \"amount at or over 1000\" when amount >= 1000\n"
    "rule card_day review \"card over 20000 in a day\" when sum(amount_minor, card_id, 24h) >= 2000000\n"
    "rule ip_burst review \"ip burst\" when count(ip, 10m) >= 100000\n";
/* The candidate: the same, except that it declines what `mid` matches. */
static const char *cand_rules =
    "rule big decline \"amount at or over 5000\" when amount >= 5000\n"
    "rule mid decline \"amount at or over 1000\" when amount >= 1000\n"
    "rule card_day review \"card over 20000 in a day\" when sum(amount_minor, card_id, 24h) >= 2000000\n";

static void setup(void)
{
    tc_fixture_up(&srv, &nc, &js, logp, sizeof logp);
    temp_path(outp, sizeof outp, ".out");
    temp_path(livep, sizeof livep, ".rules");
    temp_path(candp, sizeof candp, ".rules");
    tc_write_file(livep, live_rules);
    tc_write_file(candp, cand_rules);
    arena_init(&ar, 1 << 16);
}

static void teardown(void)
{
    arena_free(&ar);
    tc_fixture_down(&srv, nc, js, logp);
    unlink(outp);
    unlink(livep);
    unlink(candp);
}

TestSuite(shadow, .init = setup, .fini = teardown, .timeout = 240);

static void stop_engine(pid_t pid)
{
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 20000), 0, "engine did not stop cleanly; see %s", logp);
}

#define N_TXN 60

static int64_t amount_of(int i)
{
    static const int64_t major[] = {50, 1500, 7000, 300, 2500, 999, 4999, 120, 5000, 1000};
    return major[i % 10] * 100;
}

static void txn_id(int i, char *out, size_t cap) { snprintf(out, cap, "sh-%03d", i); }

/* The same transactions into each prefix's stream, each published to all of them before the next, so their
 * store times (the event times the velocity windows use) are as close as they can be. */
static void publish_all(const char *const prefixes[], int np, int n)
{
    for (int i = 0; i < n; i++) {
        char id[32], card[32];
        txn_id(i, id, sizeof id);
        snprintf(card, sizeof card, "tok_card_%d", i % 4);
        Transaction t;
        tc_txn(&t, id, amount_of(i));
        t.card_id = card;
        for (int p = 0; p < np; p++) {
            char subj[64];
            snprintf(subj, sizeof subj, "%s.txn.ecom.x", prefixes[p]);
            cr_assert(tc_publish(js, subj, &t));
        }
    }
}

/* The message stored under <prefix>.<kind>.<outcome>.<txn_id> for any outcome (caller destroys), or NULL. */
static natsMsg *get_stored(const char *stream, const char *prefix, const char *kind, const char *id)
{
    static const char *outcomes[] = {"approve", "review", "decline"};
    for (int o = 0; o < 3; o++) {
        char subj[128];
        snprintf(subj, sizeof subj, "%s.%s.%s.%s", prefix, kind, outcomes[o], id);
        natsMsg *m = NULL;
        if (js_GetLastMsg(&m, js, stream, subj, NULL, NULL) == NATS_OK)
            return m;
    }
    return NULL;
}

typedef struct seen {
    int outcome;
    double score;
    char reasons[256];
    char rules_version[32];
} seen;

static bool read_decision(const char *stream, const char *prefix, const char *kind, const char *id, seen *s)
{
    natsMsg *m = get_stored(stream, prefix, kind, id);
    if (!m)
        return false;
    arena_reset(&ar);
    Decision *d = decision_decode(&ar, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    cr_assert_not_null(d);
    memset(s, 0, sizeof *s);
    s->outcome = d->outcome;
    s->score = d->score;
    for (size_t r = 0; r < d->n_reasons; r++) {
        strncat(s->reasons, d->reasons[r]->rule_id, sizeof s->reasons - strlen(s->reasons) - 2);
        strcat(s->reasons, ",");
    }
    snprintf(s->rules_version, sizeof s->rules_version, "%s", d->rules_version);
    natsMsg_Destroy(m);
    return true;
}

/* The shadow records of a stream (JSON lines in its messages), by txn_id; the count of records. */
#define REC_MAX 256
typedef struct rec {
    char txn_id[72];
    seen live, shadow;
} rec;
static rec recs[REC_MAX];

static int outcome_of(const char *o)
{
    return strcmp(o, "approve") == 0 ? 1 : strcmp(o, "review") == 0 ? 2 : strcmp(o, "decline") == 0 ? 3 : 0;
}

static int load_shadow(const char *stream)
{
    int n = 0;
    uint64_t last = 0;
    jsStreamInfo *si = NULL;
    if (js_GetStreamInfo(&si, js, stream, NULL, NULL) != NATS_OK)
        return 0;
    last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    for (uint64_t seq = 1; seq <= last; seq++) {
        natsMsg *m = NULL;
        if (js_GetMsg(&m, js, stream, seq, NULL, NULL) != NATS_OK)
            continue;
        const char *d = natsMsg_GetData(m);
        int len = natsMsg_GetDataLength(m);
        const char *rv = NULL;
        natsMsgHeader_Get(m, "Verdict-Rules-Version", &rv);
        for (int i = 0; i < len;) {
            const char *nl = memchr(d + i, '\n', (size_t)(len - i));
            int end = nl ? (int)(nl - d) : len;
            json_error_t je;
            json_t *j = json_loadb(d + i, (size_t)(end - i), 0, &je);
            cr_assert_not_null(j, "a shadow record is not JSON: %.*s", end - i, d + i);
            cr_assert_lt(n, REC_MAX);
            rec *r = &recs[n++];
            memset(r, 0, sizeof *r);
            snprintf(r->txn_id, sizeof r->txn_id, "%s", json_string_value(json_object_get(j, "txn_id")));
            r->live.outcome = outcome_of(json_string_value(json_object_get(j, "live")));
            r->shadow.outcome = outcome_of(json_string_value(json_object_get(j, "shadow")));
            r->shadow.score = json_number_value(json_object_get(j, "score"));
            size_t k;
            json_t *v;
            json_array_foreach(json_object_get(j, "reasons"), k, v)
            {
                strncat(r->shadow.reasons, json_string_value(v), sizeof r->shadow.reasons - strlen(r->shadow.reasons) - 2);
                strcat(r->shadow.reasons, ",");
            }
            snprintf(r->shadow.rules_version, sizeof r->shadow.rules_version, "%s", rv ? rv : "");
            json_decref(j);
            i = end + 1;
        }
        natsMsg_Destroy(m);
    }
    return n;
}

/* The first shadow decision of a transaction (as readers take it), and how many it has. */
static const rec *find_rec(int n, const char *id, int *count)
{
    const rec *found = NULL;
    *count = 0;
    for (int i = 0; i < n; i++)
        if (strcmp(recs[i].txn_id, id) == 0) {
            if (!found)
                found = &recs[i];
            (*count)++;
        }
    return found;
}

/* Waits until the stream holds n shadow decisions (and a moment more, to see that no more come). */
static int settle_shadow(const char *stream, int n)
{
    for (int tries = 0; tries < 200 && load_shadow(stream) < n; tries++)
        tc_sleep_ms(100);
    tc_sleep_ms(300);
    return load_shadow(stream);
}

/* Runs verdict with argv (NULL-terminated) into outp; returns its exit status. */
static int run(const char *const argv[])
{
    unlink(outp);
    pid_t pid = verdict_spawn(argv, outp);
    return child_wait(pid, 60000);
}

static long metric(int port, const char *name)
{
    static char body[1 << 17];
    cr_assert(http_get_local(port, "/metrics", body, sizeof body), "no /metrics; see %s", logp);
    char want[160];
    snprintf(want, sizeof want, "\n%s ", name);
    const char *p = strstr(body, want);
    cr_assert_not_null(p, "no metric %s in:\n%s", name, body);
    return atol(p + strlen(want));
}

/* Waits until the stream holds n messages (and a moment more, to see that no more come). */
static uint64_t settle(const char *stream, uint64_t n)
{
    tc_wait_msgs(js, stream, n, 20000);
    tc_sleep_ms(300);
    return tc_stream_msgs(js, stream);
}

Test(shadow, candidate_shows_exactly_its_transitions_and_live_is_unchanged)
{
    const char *const prefixes[] = {"sa", "sb"};
    /* run A: the live policy alone; run B: the same with the candidate in shadow. A generous budget: on a busy
     * machine a first batch may take long enough for the model to be skipped (degraded), in one run only */
    char logb[256];
    temp_path(logb, sizeof logb, ".log");
    pid_t a = tc_start_engine(srv.url, logp,
                              (const char *const[]){"--budget", "60s", "--prefix", "sa", "--rules", livep, "--model", MODEL, NULL});
    pid_t b = tc_start_engine(srv.url, logb,
                              (const char *const[]){"--budget", "60s", "--prefix", "sb", "--rules", livep, "--model", MODEL,
                                                    "--shadow-rules", candp, NULL});
    publish_all(prefixes, 2, N_TXN);
    cr_assert_eq(settle("SA_DECISIONS", N_TXN), N_TXN, "see %s", logp);
    cr_assert_eq(settle("SB_DECISIONS", N_TXN), N_TXN, "see %s", logb);
    int got = settle_shadow("SB_SHADOW", N_TXN);
    cr_assert_eq(got, N_TXN, "one shadow decision per transaction (%d); see %s", got, logb);
    cr_assert_eq(tc_stream_msgs(js, "SA_SHADOW"), 0, "no shadow stream without a candidate");

    /* the requester gets the live decision only, once, on its own inbox */
    natsInbox *inbox = NULL;
    cr_assert_eq(natsInbox_Create(&inbox), NATS_OK);
    natsSubscription *sub = NULL;
    cr_assert_eq(natsConnection_SubscribeSync(&sub, nc, (const char *)inbox), NATS_OK);
    Transaction t;
    tc_txn(&t, "sh-req-1", 250000); /* 2500.00: live review, candidate decline */
    unsigned char buf[2048];
    int n = tc_pack(&t, buf);
    cr_assert_eq(natsConnection_PublishRequest(nc, "sb.verdict.v1.decide", (const char *)inbox, buf, n), NATS_OK);
    natsMsg *r = NULL;
    cr_assert_eq(natsSubscription_NextMsg(&r, sub, 5000), NATS_OK, "no reply; see %s", logb);
    arena_reset(&ar);
    Decision *d = decision_decode(&ar, natsMsg_GetData(r), (size_t)natsMsg_GetDataLength(r));
    cr_assert_not_null(d);
    cr_assert_eq(d->outcome, VERDICT__V1__OUTCOME__OUTCOME_REVIEW, "the requester got a shadow decision");
    char live_version[32];
    snprintf(live_version, sizeof live_version, "%s", d->rules_version);
    natsMsg_Destroy(r);
    int nrec = settle_shadow("SB_SHADOW", N_TXN + 1);
    cr_assert_eq(nrec, N_TXN + 1, "see %s", logb);
    tc_sleep_ms(500);
    cr_assert_eq(natsSubscription_NextMsg(&r, sub, 200), NATS_TIMEOUT, "a second message reached the requester");
    natsSubscription_Destroy(sub);
    natsInbox_Destroy(inbox);

    /* live decisions: the same with and without the shadow; shadow ones: the live features, the candidate's
     * outcome, differing exactly where `mid` fires and `big` does not */
    int expect_changed = 0;
    for (int i = 0; i < N_TXN; i++) {
        char id[32];
        txn_id(i, id, sizeof id);
        seen la, lb;
        cr_assert(read_decision("SA_DECISIONS", "sa", "decision", id, &la), "%s not decided in run A", id);
        cr_assert(read_decision("SB_DECISIONS", "sb", "decision", id, &lb), "%s not decided in run B", id);
        int copies;
        const rec *r = find_rec(nrec, id, &copies);
        cr_assert_not_null(r, "%s has no shadow decision", id);
        cr_assert_eq(copies, 1, "%s: %d shadow decisions without a redelivery", id, copies);
        seen sh = r->shadow;
        cr_assert_eq(r->live.outcome, lb.outcome, "%s: the record's live outcome is not the stored one", id);
        cr_assert_eq(la.outcome, lb.outcome, "%s: live outcome changed by the shadow", id);
        cr_assert_eq(la.score, lb.score, "%s: live score changed by the shadow", id);
        cr_assert_str_eq(la.reasons, lb.reasons, "%s: live reasons changed by the shadow", id);
        cr_assert_str_eq(la.rules_version, lb.rules_version);
        cr_assert_str_eq(lb.rules_version, live_version, "%s: a live decision made by the candidate", id);
        cr_assert_str_neq(sh.rules_version, live_version, "%s: shadow decided by the live rules", id);
        cr_assert_eq(sh.score, lb.score, "%s: the shadow's model saw other features than live", id);
        int64_t major = amount_of(i) / 100;
        bool mid_only = major >= 1000 && major < 5000;
        if (mid_only) {
            expect_changed++;
            cr_assert_eq(lb.outcome, VERDICT__V1__OUTCOME__OUTCOME_REVIEW, "%s", id);
            cr_assert_eq(sh.outcome, VERDICT__V1__OUTCOME__OUTCOME_DECLINE, "%s", id);
        } else {
            cr_assert_eq(sh.outcome, lb.outcome, "%s: a transition the candidate does not explain (%s vs %s)", id,
                         sh.reasons, lb.reasons);
        }
    }
    cr_assert_gt(expect_changed, 0);

    /* the report says the same: review -> decline for exactly those, nothing else changed */
    const char *argv[] = {"verdict", "shadow", "report", "--prefix", "sb", "--nats-url", srv.url,
                          "--examples", "20", "--json", NULL};
    cr_assert_eq(run(argv), 0, "%s", tc_slurp(outp));
    char *out = tc_slurp(outp);
    char *line = strrchr(out, '{') ? strstr(out, "{\"") : NULL;
    cr_assert_not_null(line, "%s", out);
    json_error_t je;
    json_t *rep = json_loads(line, 0, &je);
    cr_assert_not_null(rep, "not JSON: %s\n%s", je.text, out);
    cr_assert_eq(json_integer_value(json_object_get(rep, "shadow_decisions")), N_TXN + 1, "%s", out);
    cr_assert_eq(json_integer_value(json_object_get(rep, "changed")), expect_changed + 1, "%s", out);
    cr_assert_eq(json_integer_value(json_object_get(rep, "live_missing")), 0, "%s", out);
    json_t *cell;
    size_t k;
    int cells_changed = 0;
    json_array_foreach(json_object_get(rep, "transitions"), k, cell)
    {
        if (!json_is_true(json_object_get(cell, "changed")) || json_integer_value(json_object_get(cell, "count")) == 0)
            continue;
        cells_changed++;
        cr_assert_str_eq(json_string_value(json_object_get(cell, "live")), "review", "%s", out);
        cr_assert_str_eq(json_string_value(json_object_get(cell, "shadow")), "decline", "%s", out);
        json_t *ex = json_object_get(cell, "examples");
        cr_assert_eq(json_array_size(ex), 20, "%s", out);
        size_t j;
        json_t *v;
        json_array_foreach(ex, j, v)
        {
            const char *id = json_string_value(v);
            if (strcmp(id, "sh-req-1") == 0)
                continue;
            int i = atoi(id + 3);
            int64_t major = amount_of(i) / 100;
            cr_assert(major >= 1000 && major < 5000, "example %s is not a `mid` match", id);
        }
    }
    cr_assert_eq(cells_changed, 1, "%s", out);
    json_decref(rep);

    /* readable: the table and a time range */
    const char *argv2[] = {"verdict", "shadow", "report", "--prefix", "sb", "--nats-url", srv.url, "--since", "1h",
                           NULL};
    cr_assert_eq(run(argv2), 0, "%s", tc_slurp(outp));
    out = tc_slurp(outp);
    cr_assert(strstr(out, "review  -> decline"), "%s", out);
    cr_assert(strstr(out, "live \\ shadow"), "%s", out);
    /* a prefix without a shadow: said, exit 1, nothing created */
    const char *argv4[] = {"verdict", "shadow", "report", "--prefix", "sa", "--nats-url", srv.url, NULL};
    cr_assert_eq(run(argv4), 1, "%s", tc_slurp(outp));
    cr_assert(strstr(tc_slurp(outp), "no stream SA_SHADOW"), "%s", tc_slurp(outp));
    cr_assert_eq(tc_stream_msgs(js, "SA_SHADOW"), 0);
    /* a range before any of it holds nothing */
    const char *argv3[] = {"verdict", "shadow", "report", "--prefix", "sb", "--nats-url", srv.url, "--from",
                           "2020-01-01T00:00:00Z", "--to", "2020-01-02T00:00:00Z", "--json", NULL};
    cr_assert_eq(run(argv3), 0, "%s", tc_slurp(outp));
    cr_assert(strstr(tc_slurp(outp), "\"shadow_decisions\":0"), "%s", tc_slurp(outp));
    stop_engine(a);
    stop_engine(b);
    unlink(logb);
}

/* Transactions delivered twice (their first ack lost): each keeps exactly one shadow decision in the report
 * (the first stored; the redelivery's copy is counted as repeated), live decisions are made once. */
Test(shadow, redelivery_keeps_one_shadow_decision_per_txn)
{
    int port = free_port();
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    setenv("VERDICT_TEST_FAULT", "skip_first_ack", 1);
    pid_t pid = tc_start_engine(srv.url, logp,
                                (const char *const[]){"--budget", "60s", "--rules", livep, "--shadow-rules", candp,
                                                      "--metrics-addr", addr, NULL});
    unsetenv("VERDICT_TEST_FAULT");
    int expect_changed = 0;
    for (int i = 0; i < 10; i++) {
        char id[32];
        txn_id(i, id, sizeof id);
        Transaction t;
        tc_txn(&t, id, amount_of(i));
        cr_assert(tc_publish(js, "txn.ecom.x", &t));
        int64_t major = amount_of(i) / 100;
        expect_changed += major >= 1000 && major < 5000;
    }
    cr_assert(tc_wait_consumer_idle(js, 30000), "redeliveries not settled; see %s", logp);
    long redelivered = metric(port, "verdict_redeliveries_total");
    cr_assert_gt(redelivered, 0, "no redelivery happened");
    int nrec = settle_shadow("SHADOW", 10 + (int)redelivered);
    cr_assert_eq(nrec, 10 + redelivered, "a shadow decision per delivery that stored or found its live decision");
    for (int i = 0; i < 10; i++) {
        char id[32];
        txn_id(i, id, sizeof id);
        int copies;
        cr_assert_not_null(find_rec(nrec, id, &copies), "%s", id);
    }
    cr_assert_eq(tc_stream_msgs(js, "DECISIONS"), 10);
    const char *argv[] = {"verdict", "shadow", "report", "--nats-url", srv.url, "--json", NULL};
    cr_assert_eq(run(argv), 0, "%s", tc_slurp(outp));
    char *out = tc_slurp(outp);
    char want[96];
    snprintf(want, sizeof want, "\"shadow_decisions\":10,\"changed\":%d", expect_changed);
    cr_assert(strstr(out, want), "want %s in:\n%s", want, out);
    snprintf(want, sizeof want, "\"repeated\":%ld", redelivered);
    cr_assert(strstr(out, want), "want %s in:\n%s", want, out);
    stop_engine(pid);
}

/* A candidate that does not compile is refused with file:line:col; the engine serves live decisions without a
 * shadow. Fixed and SIGHUP: in force. Broken again and SIGHUP: refused, the one in force stays. */
Test(shadow, bad_candidate_is_refused_and_live_keeps_serving)
{
    tc_write_file(candp, "rule mid decline \"x\" when amount >=\n");
    int port = free_port();
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    pid_t pid = tc_start_engine(srv.url, logp,
                                (const char *const[]){"--budget", "60s", "--rules", livep, "--shadow-rules", candp,
                                                      "--metrics-addr", addr, NULL});
    cr_assert(file_wait_for(logp, "shadow policy refused", 5000), "see %s", logp);
    char where[300];
    snprintf(where, sizeof where, "%s:2:1: error", candp);
    cr_assert(file_wait_for(logp, where, 1000), "no file:line:col in the refusal; see %s", logp);
    for (int i = 0; i < 5; i++) {
        char id[32];
        txn_id(i, id, sizeof id);
        Transaction t;
        tc_txn(&t, id, amount_of(i));
        cr_assert(tc_publish(js, "txn.ecom.x", &t));
    }
    cr_assert_eq(settle("DECISIONS", 5), 5, "live decisions; see %s", logp);
    cr_assert_eq(tc_stream_msgs(js, "SHADOW"), 0);

    tc_write_file(candp, cand_rules);
    kill(pid, SIGHUP);
    /* the message itself: the refusal's text mentions "the shadow policy in force" too */
    cr_assert(file_wait_for(logp, "\"msg\":\"shadow policy in force\"", 10000), "see %s", logp);
    for (int i = 5; i < 10; i++) {
        char id[32];
        txn_id(i, id, sizeof id);
        Transaction t;
        tc_txn(&t, id, amount_of(i));
        cr_assert(tc_publish(js, "txn.ecom.x", &t));
    }
    int got = settle_shadow("SHADOW", 5);
    if (got != 5) {
        static char body[1 << 17];
        http_get_local(port, "/metrics", body, sizeof body);
        fprintf(stderr, "DECISIONS %llu SHADOW msgs %llu\n%s\n", (unsigned long long)tc_stream_msgs(js, "DECISIONS"),
                (unsigned long long)tc_stream_msgs(js, "SHADOW"), body);
        for (int i = 0; i < got; i++)
            fprintf(stderr, "REC %s live %d shadow %d\n", recs[i].txn_id, recs[i].live.outcome, recs[i].shadow.outcome);
    }
    cr_assert_eq(got, 5, "see %s", logp);

    tc_write_file(candp, "rule oops decline \"x\" when nosuchfield > 1\n");
    kill(pid, SIGHUP);
    for (int tries = 0; tries < 100 && tc_count_lines(logp, "shadow policy refused") < 2; tries++)
        tc_sleep_ms(100);
    cr_assert_eq(tc_count_lines(logp, "shadow policy refused"), 2, "see %s", logp);
    for (int i = 10; i < 15; i++) {
        char id[32];
        txn_id(i, id, sizeof id);
        Transaction t;
        tc_txn(&t, id, amount_of(i));
        cr_assert(tc_publish(js, "txn.ecom.x", &t));
    }
    cr_assert_eq(settle_shadow("SHADOW", 10), 10, "the candidate in force stays; see %s", logp);
    cr_assert_eq(settle("DECISIONS", 15), 15);
    stop_engine(pid);
}

/* Shadow publishes that fail are counted; the live messages are decided, answered and acked as ever. */
Test(shadow, publish_failure_is_counted_and_never_naks_live)
{
    int port = free_port();
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    setenv("VERDICT_TEST_FAULT", "shadow_publish_fail", 1);
    pid_t pid = tc_start_engine(srv.url, logp,
                                (const char *const[]){"--budget", "60s", "--rules", livep, "--shadow-rules", candp, "--metrics-addr",
                                                      addr, NULL});
    unsetenv("VERDICT_TEST_FAULT");
    for (int i = 0; i < 20; i++) {
        char id[32];
        txn_id(i, id, sizeof id);
        Transaction t;
        tc_txn(&t, id, amount_of(i));
        cr_assert(tc_publish(js, "txn.ecom.x", &t));
    }
    cr_assert(tc_wait_consumer_idle(js, 15000), "see %s", logp);
    cr_assert_eq(settle("DECISIONS", 20), 20);
    cr_assert_eq(tc_stream_msgs(js, "SHADOW"), 0);
    cr_assert_eq(metric(port, "verdict_shadow_publish_failures_total"), 20);
    cr_assert_eq(metric(port, "verdict_naks_total"), 0);
    cr_assert_eq(metric(port, "verdict_redeliveries_total"), 0);
    stop_engine(pid);
}

/* --- without a broker -------------------------------------------------------------------------------- */

static policy *build(const char *text)
{
    policy *p = NULL;
    rules_diag diag = {0};
    cr_assert_eq(policy_build(text, strlen(text), "test", MODEL, &p, &diag), V_OK, "%s", diag.text);
    rules_diag_free(&diag);
    return p;
}

/* The candidate gets the live velocity values by name (its plan orders them differently), and a decision
 * allocates nothing. */
Test(shadow_eval, live_velocity_by_name_and_no_allocation)
{
    policy *live = build(live_rules), *cand = build(cand_rules);
    const velocity_plan *lp = policy_velocity_plan(live), *cp = policy_velocity_plan(cand);
    cr_assert_gt(lp->n, cp->n);
    int16_t map[FEAT_MAX];
    cr_assert(shadow_velmap(lp, cp, map, NULL, 0));
    bool moved = false;
    for (int k = 0; k < cp->n; k++) {
        cr_assert_str_eq(lp->reg->defs[lp->f[map[k]].id].name, cp->reg->defs[cp->f[k].id].name);
        moved |= map[k] != k;
    }
    cr_assert(moved, "the test needs plans that order the features differently");
    /* live values: feature j = 1000 * (j + 1); card_day fires on the candidate only if it reads live's sum */
    velvals vv = {.n = lp->n};
    for (int j = 0; j < lp->n; j++) {
        vv.num[j] = 1000.0 * (j + 1);
        vv.present[j / 64] |= (uint64_t)1 << (j % 64);
        if (strcmp(lp->reg->defs[lp->f[j].id].name, "sum(amount_minor,card_id,24h)") == 0)
            vv.num[j] = 3000000;
    }
    shadow_eval se;
    cr_assert_eq(shadow_eval_init(&se, SHADOW_RECORD_MAX), V_OK);
    Transaction t;
    tc_txn(&t, "ev-1", 5000); /* 50.00: only card_day can fire */
    shadow_input in = {.live = live, .vel = &vv, .event_ms = now_ms(), .live_score = -1};
    decide_out out;
    cr_assert(shadow_decide(&se, cand, &in, &t, &out));
    cr_assert_eq(out.outcome, VERDICT__V1__OUTCOME__OUTCOME_REVIEW, "card_day did not see live's sum");
    cr_assert_eq(out.n_reasons, 1);
    cr_assert_str_eq(out.reason_id[0], "card_day");
    /* the model (evaluated: live_score -1) sees the live features: the live policy's own score */
    fval vals[FEAT_MAX];
    decide_env lenv = {.vel_pre = &vv};
    decide_out lout;
    decide_run(live, &lenv, &t, in.event_ms, false, vals, &lout);
    cr_assert_geq(out.score, 0);
    cr_assert_eq(out.score, lout.score, "shadow score %.9f, live %.9f", out.score, lout.score);
    /* the record reads back */
    char line[SHADOW_RECORD_MAX];
    size_t len = shadow_record(line, sizeof line, "ev-1", VERDICT__V1__OUTCOME__OUTCOME_APPROVE, &out, 1);
    cr_assert_gt(len, 0);
    json_error_t je;
    json_t *j = json_loadb(line, len, 0, &je);
    cr_assert_not_null(j, "%s", line);
    cr_assert_str_eq(json_string_value(json_object_get(j, "shadow")), "review");
    cr_assert_str_eq(json_string_value(json_object_get(j, "live")), "approve");
    cr_assert_eq(json_real_value(json_object_get(j, "score")), out.score, "%s", line);
    json_decref(j);
    uint64_t before = alloc_count();
    for (int i = 0; i < 1000; i++) {
        cr_assert(shadow_decide(&se, cand, &in, &t, &out));
        cr_assert_gt(shadow_record(se.buf, se.cap, "ev-1", VERDICT__V1__OUTCOME__OUTCOME_APPROVE, &out, 1), 0);
    }
    cr_assert_eq(alloc_count() - before, 0, "a shadow decision allocated");
    shadow_eval_free(&se);
    policy_release(live);
    policy_release(cand);
}

/* A candidate reading a velocity feature the live policy does not keep is refused, with its name. */
Test(shadow_eval, candidate_with_a_velocity_feature_live_lacks_is_refused)
{
    policy *live = build(live_rules);
    char path[256];
    temp_path(path, sizeof path, ".rules");
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("rule dev review \"devices\" when distinct(ip, device_id, 24h) >= 3\n", f);
    fclose(f);
    policy *p = NULL;
    verror e = {0};
    cr_assert_neq(shadow_load(path, NULL, NULL, NULL, live, &p, &e), V_OK);
    cr_assert_null(p);
    cr_assert(strstr(e.msg, "distinct(ip,device_id,24h)"), "%s", e.msg);
    /* one that parses badly: file:line:col */
    f = fopen(path, "w");
    fputs("rule x decline \"y\" when amount >=\n", f);
    fclose(f);
    cr_assert_eq(shadow_load(path, NULL, NULL, NULL, live, &p, &e), V_EPARSE);
    char where[300];
    snprintf(where, sizeof where, "%s:2:1: error", path);
    cr_assert(strstr(e.msg, where), "%s", e.msg);
    unlink(path);
    policy_release(live);
}

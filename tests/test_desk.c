/* test_desk.c - the analysts' desk against a real nats-server (docs/desk.md): every review decision becomes one
 * case, through redeliveries and a kill -9 of the desk; of concurrent claimers and resolvers exactly one wins and
 * each resolution publishes one label, which `verdict features --labels-stream` joins; the desk refuses to listen
 * beyond loopback without users, and its API refuses a request without a session; its names follow --prefix. */
#include "cases.h"
#include "client.h"
#include "harness.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static test_server srv;
static natsConnection *nc;
static jsCtx *js;
static char logp[256], rulesp[256], deskp[256], outp[256];

static void setup(void)
{
    tc_fixture_up(&srv, &nc, &js, logp, sizeof logp);
    temp_path(rulesp, sizeof rulesp, ".rules");
    temp_path(deskp, sizeof deskp, ".log");
    temp_path(outp, sizeof outp, ".csv");
}

static void teardown(void)
{
    tc_fixture_down(&srv, nc, js, logp);
    unlink(rulesp);
    unlink(deskp);
    unlink(outp);
}

TestSuite(desk, .init = setup, .fini = teardown, .timeout = 240);

/* amounts of 500.00 and more go to review, the rest are approved */
static const char *rules_review = "rule big review \"Large amount\" when amount >= 500\n";

static uint64_t bucket_keys(kvStore *kv)
{
    kvKeysList keys = {0};
    natsStatus s = kvStore_Keys(&keys, kv, NULL);
    uint64_t n = s == NATS_OK ? (uint64_t)keys.Count : 0;
    kvKeysList_Destroy(&keys);
    return n;
}

static kvStore *cases_bucket(void)
{
    kvStore *kv = NULL;
    for (int i = 0; i < 100 && js_KeyValue(&kv, js, "verdict_cases") != NATS_OK; i++)
        tc_sleep_ms(100);
    cr_assert_not_null(kv, "no verdict_cases bucket");
    return kv;
}

static pid_t start_desk(const char *fault, int port)
{
    char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    if (fault)
        setenv("VERDICT_TEST_FAULT", fault, 1);
    const char *argv[] = {"verdict", "desk", "--nats-url", srv.url, "--listen", listen, "--ack-wait", "1s", NULL};
    pid_t pid = verdict_spawn(argv, deskp);
    unsetenv("VERDICT_TEST_FAULT");
    cr_assert(pid > 0);
    cr_assert(file_wait_for(deskp, "desk listening", 15000), "desk did not start; see %s", deskp);
    return pid;
}

Test(desk, every_review_decision_becomes_one_case_through_redeliveries_and_a_kill)
{
    tc_write_file(rulesp, rules_review);
    const char *extra[] = {"--rules", rulesp, NULL};
    pid_t eng = tc_start_engine(srv.url, logp, extra);
    enum { N = 60 };
    int reviews = 0;
    for (int i = 0; i < N; i++) {
        char id[32];
        snprintf(id, sizeof id, "dk-%03d", i);
        Transaction t;
        bool review = i % 3 != 0;
        reviews += review;
        tc_txn(&t, id, review ? 60000 + i : 1000 + i);
        cr_assert(tc_publish(js, "txn.ecom.x", &t));
    }
    cr_assert(tc_wait_consumer_idle(js, 30000), "the engine did not finish");
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", N, 10000), N);

    /* first run: nothing acked on a first delivery (every case is made, then made again on redelivery), and
     * killed mid-way */
    int port = free_port();
    pid_t d1 = start_desk("desk_noack_first", port);
    kvStore *kv = cases_bucket();
    for (int i = 0; i < 100 && bucket_keys(kv) < 10; i++)
        tc_sleep_ms(100);
    cr_assert_geq(bucket_keys(kv), 10);
    tc_sleep_ms(1500); /* past the 1 s AckWait: redeliveries are under way */
    kill(d1, SIGKILL);
    child_wait(d1, 5000);

    /* second run: catches up */
    pid_t d2 = start_desk(NULL, port);
    jsConsumerInfo *ci = NULL;
    bool idle = false;
    for (int i = 0; i < 300 && !idle; i++) {
        tc_sleep_ms(100);
        if (js_GetConsumerInfo(&ci, js, "DECISIONS", "verdict_desk", NULL, NULL) == NATS_OK) {
            idle = ci->NumAckPending == 0 && ci->NumPending == 0 && bucket_keys(kv) == (uint64_t)reviews;
            jsConsumerInfo_Destroy(ci);
            ci = NULL;
        }
    }
    cr_assert(idle, "the desk did not catch up: %llu cases of %d", (unsigned long long)bucket_keys(kv), reviews);
    cr_assert_eq(bucket_keys(kv), (uint64_t)reviews);
    /* every review decision has its case, made once: a single revision (a second Create would have failed, a
     * Put would show as a second revision) */
    for (int i = 0; i < N; i++) {
        char id[32];
        snprintf(id, sizeof id, "dk-%03d", i);
        kvEntryList hist = {0};
        natsStatus s = kvStore_History(&hist, kv, id, NULL);
        if (i % 3 == 0) {
            cr_assert_eq(s, NATS_NOT_FOUND, "an approved transaction %s has a case", id);
        } else {
            cr_assert_eq(s, NATS_OK, "no case for %s", id);
            cr_assert_eq(hist.Count, 1, "case %s has %d revisions", id, hist.Count);
        }
        kvEntryList_Destroy(&hist);
    }
    /* the redeliveries happened and found their cases; no case was made twice */
    cr_assert_gt(tc_count_lines(deskp, "case exists"), 0, "no redelivery reached the desk; see %s", deskp);
    int made = tc_count_lines(deskp, "case created");
    cr_assert_leq(made, reviews, "more 'case created' lines (%d) than review decisions (%d)", made, reviews);

    /* a resolution's label is joined by `verdict features` */
    cases *cs = NULL;
    verror e = {0};
    config cfg;
    config_defaults(&cfg);
    cr_assert_eq(cases_open(js, &cfg, &cs, &e), V_OK, "%s", e.msg);
    json_t *out = NULL;
    /* a claim is released only by its holder; releasing an open case changes nothing */
    cr_assert_eq(cases_claim(cs, "dk-001", "alice", NULL, &e), V_OK, "%s", e.msg);
    cr_assert_eq(cases_release(cs, "dk-001", "bob", NULL, &e), V_ECONFLICT);
    cr_assert(strstr(e.msg, "claimed by alice"), "message: %s", e.msg);
    cr_assert_eq(cases_release(cs, "dk-001", "alice", &out, &e), V_OK, "%s", e.msg);
    cr_assert_str_eq(json_string_value(json_object_get(out, "state")), "open");
    cr_assert_null(json_object_get(out, "claimed_by"));
    json_int_t rev = json_integer_value(json_object_get(out, "rev"));
    json_decref(out);
    cr_assert_eq(cases_release(cs, "dk-001", "alice", &out, &e), V_OK, "%s", e.msg);
    cr_assert_eq(json_integer_value(json_object_get(out, "rev")), rev, "a no-op release wrote a revision");
    json_decref(out);
    cr_assert_eq(cases_resolve(cs, "dk-001", "alice", "fraud", &out, &e), V_OK, "%s", e.msg);
    json_decref(out);
    cr_assert_eq(cases_resolve(cs, "dk-002", "bob", "legitimate", &out, &e), V_OK, "%s", e.msg);
    json_decref(out);
    cases_close(cs);
    /* another system's label (a chargeback) the same way, and one whose body names another transaction (ignored) */
    jsPubAck *pa = NULL;
    const char *cb = "{\"txn_id\":\"dk-004\",\"label\":\"chargeback\",\"source\":\"acquirer\"}";
    cr_assert_eq(js_Publish(&pa, js, "label.dk-004", cb, (int)strlen(cb), NULL, NULL), NATS_OK);
    jsPubAck_Destroy(pa);
    const char *odd = "{\"txn_id\":\"dk-999\",\"label\":\"fraud\"}";
    cr_assert_eq(js_Publish(&pa, js, "label.dk-005", odd, (int)strlen(odd), NULL, NULL), NATS_OK);
    jsPubAck_Destroy(pa);
    const char *argv[] = {"verdict",
                          "features",
                          "--nats-url",
                          srv.url,
                          "--from",
                          "1",
                          "--labels-stream",
                          "LABELS",
                          "--txn-ids",
                          "--unlabelled",
                          "skip",
                          "--features",
                          "amount,count(card_id,1h)",
                          "--out",
                          outp,
                          NULL};
    cr_assert_eq(child_wait(verdict_spawn(argv, logp), 60000), 0);
    cr_assert_eq(tc_count_lines(outp, "dk-001,"), 1);
    cr_assert_eq(tc_count_lines(outp, "dk-002,"), 1);
    cr_assert_eq(tc_count_lines(outp, ",fraud,1"), 1);
    cr_assert_eq(tc_count_lines(outp, ",legit,0"), 1);
    cr_assert_eq(tc_count_lines(outp, ",chargeback,1"), 1);
    cr_assert_eq(tc_count_lines(outp, "dk-004,"), 1);
    cr_assert_eq(tc_count_lines(outp, "dk-005,"), 0, "a label whose body names another transaction was joined");
    cr_assert_eq(tc_count_lines(outp, "dk-"), 3);

    /* the queue's age and counts: the desk's metrics and `verdict status` */
    char buf[8192], want[64];
    snprintf(want, sizeof want, "verdict_desk_cases{state=\"open\"} %d\n", reviews - 2);
    bool seen = false;
    for (int i = 0; i < 50 && !seen; i++) {
        seen = http_get_local(port, "/metrics", buf, sizeof buf) && strstr(buf, want) &&
               strstr(buf, "verdict_desk_cases{state=\"resolved\"} 2\n");
        if (!seen)
            tc_sleep_ms(100);
    }
    cr_assert(seen, "metrics: %s", buf);
    double age = -1;
    const char *a = strstr(buf, "\nverdict_desk_oldest_unresolved_age_seconds ");
    cr_assert(a && sscanf(a + strlen("\nverdict_desk_oldest_unresolved_age_seconds "), "%lf", &age) == 1);
    cr_assert(age > 0 && age < 600, "oldest unresolved age %f", age);
    const char *sargv[] = {"verdict", "status", "--nats-url", srv.url, "--json", NULL};
    unlink(outp); /* the child's stdout and stderr go there */
    pid_t sp = verdict_spawn(sargv, outp);
    cr_assert_eq(child_wait(sp, 30000), 0);
    snprintf(want, sizeof want, "\"open\":%d,\"claimed\":0,\"resolved\":2", reviews - 2);
    cr_assert_eq(tc_count_lines(outp, want), 1, "verdict status --json does not say %s", want);

    kvStore_Destroy(kv);
    kill(d2, SIGTERM);
    cr_assert_eq(child_wait(d2, 10000), 0);
    kill(eng, SIGTERM);
    child_wait(eng, 15000);
}

/* ---- concurrent analysts -------------------------------------------------------------------------------- */

enum { ANALYSTS = 8, CASES = 12 };

typedef struct worker {
    cases *cs;
    const char *txn_id;
    int idx;
    bool claim;
    vstatus st;
    pthread_barrier_t *go;
} worker;

static void *resolver(void *arg)
{
    worker *w = arg;
    char name[16];
    snprintf(name, sizeof name, "analyst%d", w->idx);
    verror e = {0};
    pthread_barrier_wait(w->go);
    w->st = w->claim ? cases_claim(w->cs, w->txn_id, name, NULL, &e)
                     : cases_resolve(w->cs, w->txn_id, name, w->idx % 2 ? "fraud" : "legitimate", NULL, &e);
    return NULL;
}

static int race(cases *cs, const char *txn_id, bool claim, int *winner)
{
    pthread_t th[ANALYSTS];
    worker w[ANALYSTS];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, ANALYSTS);
    for (int i = 0; i < ANALYSTS; i++) {
        w[i] = (worker){.cs = cs, .txn_id = txn_id, .idx = i, .claim = claim, .go = &go};
        cr_assert_eq(pthread_create(&th[i], NULL, resolver, &w[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < ANALYSTS; i++) {
        pthread_join(th[i], NULL);
        if (w[i].st == V_OK) {
            ok++;
            *winner = i;
        } else {
            cr_assert_eq(w[i].st, V_ECONFLICT, "analyst%d got %d, not a conflict", i, w[i].st);
        }
    }
    pthread_barrier_destroy(&go);
    return ok;
}

Test(desk, of_concurrent_claimers_and_resolvers_exactly_one_wins_and_each_resolution_has_one_label)
{
    config cfg;
    config_defaults(&cfg);
    cases *cs = NULL;
    verror e = {0};
    cr_assert_eq(cases_open(js, &cfg, &cs, &e), V_OK, "%s", e.msg);
    for (int k = 0; k < CASES; k++) {
        char id[32];
        snprintf(id, sizeof id, "race-%02d", k);
        Decision d;
        verdict__v1__decision__init(&d);
        d.txn_id = id;
        d.outcome = VERDICT__V1__OUTCOME__OUTCOME_REVIEW;
        d.score = 0.5;
        d.decided_at_ms = now_ms();
        bool created = false;
        cr_assert_eq(cases_create(cs, &d, (uint64_t)k + 1, &created, &e), V_OK, "%s", e.msg);
        cr_assert(created);
        cr_assert_eq(cases_create(cs, &d, (uint64_t)k + 1, &created, &e), V_OK, "%s", e.msg);
        cr_assert(!created, "a second create of %s made a case", id);

        int winner = -1;
        if (k % 2 == 0) { /* half of them claimed first: one claimer wins, then only they can resolve */
            cr_assert_eq(race(cs, id, true, &winner), 1, "claims of %s: not exactly one winner", id);
            json_t *c = NULL;
            cr_assert_eq(cases_get(cs, id, &c, &e), V_OK);
            char want[16];
            snprintf(want, sizeof want, "analyst%d", winner);
            cr_assert_str_eq(json_string_value(json_object_get(c, "claimed_by")), want);
            json_decref(c);
            int rw = -1;
            cr_assert_eq(race(cs, id, false, &rw), 1, "resolutions of claimed %s: not exactly one winner", id);
            cr_assert_eq(rw, winner, "%s was resolved by analyst%d, not its claimer analyst%d", id, rw, winner);
        } else {
            cr_assert_eq(race(cs, id, false, &winner), 1, "resolutions of %s: not exactly one winner", id);
        }
        json_t *c = NULL;
        cr_assert_eq(cases_get(cs, id, &c, &e), V_OK);
        char want[16];
        snprintf(want, sizeof want, "analyst%d", winner);
        cr_assert_str_eq(json_string_value(json_object_get(c, "state")), "resolved");
        cr_assert_str_eq(json_string_value(json_object_get(c, "resolved_by")), want);
        cr_assert(json_is_integer(json_object_get(c, "label_seq")), "no label recorded for %s", id);
        json_decref(c);
        /* the label: exactly one on label.<id>, the winner's */
        char subj[48];
        snprintf(subj, sizeof subj, "label.%s", id);
        jsStreamInfo *si = NULL;
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Stream.Info.SubjectsFilter = subj;
        cr_assert_eq(js_GetStreamInfo(&si, js, "LABELS", &jo, NULL), NATS_OK);
        cr_assert_eq(si->State.Subjects ? si->State.Subjects->Count : 0, 1);
        cr_assert_eq(si->State.Subjects->List[0].Msgs, 1, "%s has %llu labels", id,
                     (unsigned long long)si->State.Subjects->List[0].Msgs);
        jsStreamInfo_Destroy(si);
        natsMsg *m = NULL;
        cr_assert_eq(js_GetLastMsg(&m, js, "LABELS", subj, NULL, NULL), NATS_OK);
        json_t *lab = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, NULL);
        cr_assert_not_null(lab);
        cr_assert_str_eq(json_string_value(json_object_get(lab, "label")), winner % 2 ? "fraud" : "legit");
        cr_assert_str_eq(json_string_value(json_object_get(lab, "by")), want);
        json_decref(lab);
        natsMsg_Destroy(m);
    }
    cr_assert_eq(tc_stream_msgs(js, "LABELS"), CASES);
    /* a repair of a labelled case publishes nothing */
    bool done = true;
    cr_assert_eq(cases_repair_label(cs, "race-00", &done, &e), V_OK);
    cr_assert(!done);
    cr_assert_eq(tc_stream_msgs(js, "LABELS"), CASES);
    cases_close(cs);
}

Test(desk, a_resolution_whose_label_was_lost_gets_it_from_the_repair_pass)
{
    config cfg;
    config_defaults(&cfg);
    cases *cs = NULL;
    verror e = {0};
    cr_assert_eq(cases_open(js, &cfg, &cs, &e), V_OK, "%s", e.msg);
    Decision d;
    verdict__v1__decision__init(&d);
    d.txn_id = "lost-1";
    d.outcome = VERDICT__V1__OUTCOME__OUTCOME_REVIEW;
    d.decided_at_ms = now_ms() - 60000;
    bool created = false;
    cr_assert_eq(cases_create(cs, &d, 1, &created, &e), V_OK, "%s", e.msg);
    /* what a desk killed between its resolution and the label leaves: resolved, no label_seq, no label */
    json_t *c = NULL;
    cr_assert_eq(cases_get(cs, "lost-1", &c, &e), V_OK);
    uint64_t rev = (uint64_t)json_integer_value(json_object_get(c, "rev"));
    json_object_del(c, "rev");
    json_object_set_new(c, "state", json_string("resolved"));
    json_object_set_new(c, "resolution", json_string("fraud"));
    json_object_set_new(c, "resolved_by", json_string("carol"));
    json_object_set_new(c, "resolved_at_ms", json_integer(now_ms() - 30000));
    char *v = json_dumps(c, JSON_COMPACT);
    cr_assert_eq(kvStore_Update(NULL, cases_kv(cs), "lost-1", v, (int)strlen(v), rev), NATS_OK);
    free(v);
    json_decref(c);
    cr_assert_eq(tc_stream_msgs(js, "LABELS"), 0);
    pid_t dk = start_desk(NULL, free_port()); /* no DECISIONS here: the repair runs all the same */
    cr_assert_eq(tc_wait_msgs(js, "LABELS", 1, 15000), 1, "no label published by the repair; see %s", deskp);
    bool marked = false;
    for (int i = 0; i < 50 && !marked; i++) {
        cr_assert_eq(cases_get(cs, "lost-1", &c, &e), V_OK);
        marked = json_is_integer(json_object_get(c, "label_seq"));
        json_decref(c);
        if (!marked)
            tc_sleep_ms(100);
    }
    cr_assert(marked, "the repaired label is not recorded in the case");
    natsMsg *m = NULL;
    cr_assert_eq(js_GetLastMsg(&m, js, "LABELS", "label.lost-1", NULL, NULL), NATS_OK);
    cr_assert_not_null(strstr(natsMsg_GetData(m), "\"label\":\"fraud\""));
    cr_assert_not_null(strstr(natsMsg_GetData(m), "\"by\":\"carol\""));
    natsMsg_Destroy(m);
    kill(dk, SIGTERM);
    cr_assert_eq(child_wait(dk, 10000), 0);
    cr_assert_eq(tc_stream_msgs(js, "LABELS"), 1);
    cases_close(cs);
}

/* ---- access ----------------------------------------------------------------------------------------------- */

/* A request to the desk on 127.0.0.1:port from the loopback address src (NULL: the system's choice); the status
 * code, the response (headers and body) into out. */
static int http_req_from(const char *src, int port, const char *method, const char *path, const char *hdrs,
                         const char *body, char *out, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct sockaddr_in from = {.sin_family = AF_INET};
    if (fd >= 0 && src &&
        (inet_pton(AF_INET, src, &from.sin_addr) != 1 || bind(fd, (struct sockaddr *)&from, sizeof from) != 0)) {
        close(fd);
        return -1;
    }
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%sContent-Length: %zu\r\n\r\n%s",
                     method, path, hdrs ? hdrs : "", body ? strlen(body) : 0, body ? body : "");
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    size_t len = 0;
    ssize_t r;
    while (len < cap - 1 && (r = read(fd, out + len, cap - 1 - len)) > 0)
        len += (size_t)r;
    out[len] = 0;
    close(fd);
    int code = -1;
    sscanf(out, "HTTP/1.%*d %d", &code);
    return code;
}

static int http_req(int port, const char *method, const char *path, const char *hdrs, const char *body, char *out,
                    size_t cap)
{
    return http_req_from(NULL, port, method, path, hdrs, body, out, cap);
}

Test(desk, refuses_to_listen_beyond_loopback_without_users)
{
    char listen[32];
    snprintf(listen, sizeof listen, "0.0.0.0:%d", free_port());
    const char *argv[] = {"verdict", "desk", "--nats-url", srv.url, "--listen", listen, NULL};
    cr_assert_eq(child_wait(verdict_spawn(argv, deskp), 10000), 2);
    cr_assert_eq(tc_count_lines(deskp, "refusing to listen"), 1);
}

Test(desk, the_api_needs_a_session_and_a_login_needs_the_secret)
{
    int port = free_port();
    char listen[32];
    snprintf(listen, sizeof listen, "0.0.0.0:%d", port);
    setenv("VERDICT_DESK_USERS", "alice:correct-horse,bob:battery", 1);
    const char *argv[] = {"verdict", "desk", "--nats-url", srv.url, "--listen", listen, NULL};
    pid_t d = verdict_spawn(argv, deskp);
    unsetenv("VERDICT_DESK_USERS");
    cr_assert(file_wait_for(deskp, "desk listening", 15000), "desk did not start; see %s", deskp);
    char buf[16384];
    cr_assert_eq(http_req(port, "GET", "/api/cases", NULL, NULL, buf, sizeof buf), 401);
    cr_assert_eq(http_req(port, "GET", "/api/cases/abc",
                          "Authorization: Bearer "
                          "0000000000000000000000000000000000000000000000000000000000000000\r\n",
                          NULL, buf, sizeof buf),
                 401);
    cr_assert_eq(
        http_req(port, "POST", "/api/login", NULL, "{\"user\":\"alice\",\"secret\":\"wrong\"}", buf, sizeof buf), 401);
    cr_assert_eq(http_req(port, "POST", "/api/login", NULL, "{\"user\":\"mallory\",\"secret\":\"\"}", buf, sizeof buf),
                 401);
    cr_assert_eq(http_req(port, "POST", "/api/login", NULL, "{\"user\":\"alice\",\"secret\":\"correct-horse\"}", buf,
                          sizeof buf),
                 200);
    const char *sid = strstr(buf, "\"session\":\"");
    cr_assert_not_null(sid);
    char hdr[128];
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %.64s\r\n", sid + 11);
    int code = http_req(port, "GET", "/api/cases", hdr, NULL, buf, sizeof buf);
    cr_assert_eq(code, 200, "%s", buf);
    cr_assert_not_null(strstr(buf, "\"cases\":[]"));
    /* an action without the page's header is refused (a cross-site form cannot set it) */
    cr_assert_eq(http_req(port, "POST", "/api/cases/x1/claim", hdr, "{}", buf, sizeof buf), 403);
    /* the page and the metrics need no login */
    cr_assert_eq(http_req(port, "GET", "/", NULL, NULL, buf, sizeof buf), 200);
    cr_assert_not_null(strstr(buf, "Verdict desk"));
    cr_assert_eq(http_req(port, "GET", "/metrics", NULL, NULL, buf, sizeof buf), 200);
    cr_assert_not_null(strstr(buf, "verdict_desk_oldest_unresolved_age_seconds"));
    /* the secrets are not in the log */
    cr_assert_eq(tc_count_lines(deskp, "correct-horse"), 0);
    cr_assert_eq(tc_count_lines(deskp, "\"login refused\""), 2);
    kill(d, SIGTERM);
    cr_assert_eq(child_wait(d, 10000), 0);
}

/* The desk's names follow --prefix as the engine's do: bucket and consumer with '_', subjects with '.', the stream
 * upper case. */
Test(desk, names_follow_the_prefix)
{
    config c;
    config_defaults(&c);
    cases_names n;
    cases_names_of(&c, &n);
    cr_assert_str_eq(n.bucket, "verdict_cases");
    cr_assert_str_eq(n.labels_stream, "LABELS");
    cr_assert_str_eq(n.label_prefix, "label");
    cr_assert_str_eq(n.consumer, "verdict_desk");
    cr_assert_str_eq(n.review_filter, "decision.review.>");
    bool help;
    verror e = {0};
    char *argv[] = {"desk", "--prefix", "acme"};
    cr_assert_eq(config_parse(&c, 3, argv, &help, NULL, NULL, &e), V_OK, "%s", e.msg);
    cases_names_of(&c, &n);
    cr_assert_str_eq(n.bucket, "acme_verdict_cases");
    cr_assert_str_eq(n.labels_stream, "ACME_LABELS");
    cr_assert_str_eq(n.label_prefix, "acme.label");
    cr_assert_str_eq(n.consumer, "acme_verdict_desk");
    cr_assert_str_eq(n.review_filter, "acme.decision.review.>");
}

/* The seconds of the Retry-After header in a raw response; -1 without one. */
static int retry_after(const char *resp)
{
    const char *h = strstr(resp, "Retry-After: ");
    return h ? atoi(h + 13) : -1;
}

static int login(const char *src, int port, const char *user, const char *secret, char *buf, size_t cap)
{
    char body[160];
    snprintf(body, sizeof body, "{\"user\":\"%s\",\"secret\":\"%s\"}", user, secret);
    return http_req_from(src, port, "POST", "/api/login", NULL, body, buf, cap);
}

/* Password guessing is throttled: after --login-max-failures wrong secrets a user name and the client address are
 * blocked (429, Retry-After), the right secret included, for the back-off, which doubles with the next block; the
 * user is blocked from another address too, and a success clears the user's count. */
Test(desk, failed_logins_block_the_user_and_the_address_for_a_growing_back_off)
{
    int port = free_port();
    char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    setenv("VERDICT_DESK_USERS", "alice:correct-horse,bob:battery", 1);
    const char *argv[] = {
        "verdict",         "desk", "--nats-url",          srv.url, "--listen", listen, "--login-max-failures", "3",
        "--login-backoff", "2s",   "--login-backoff-max", "4s",    NULL};
    pid_t d = verdict_spawn(argv, deskp);
    unsetenv("VERDICT_DESK_USERS");
    cr_assert(file_wait_for(deskp, "desk listening", 15000), "desk did not start; see %s", deskp);
    char buf[16384];
    /* below the limit a wrong secret is an ordinary 401, and the right one still works and clears the count */
    cr_assert_eq(login("127.0.0.1", port, "alice", "wrong", buf, sizeof buf), 401);
    cr_assert_eq(login("127.0.0.1", port, "alice", "correct-horse", buf, sizeof buf), 200, "%s", buf);
    /* three wrong secrets for alice from three addresses: alice is blocked, from every address, the right secret
     * included; the addresses (one failure each) are not */
    const char *from[] = {"127.0.0.2", "127.0.0.3", "127.0.0.4"};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(login(from[i], port, "alice", "wrong", buf, sizeof buf), 401, "attempt %d: %s", i, buf);
    cr_assert_eq(login("127.0.0.1", port, "alice", "correct-horse", buf, sizeof buf), 429, "not blocked: %s", buf);
    int ra = retry_after(buf);
    cr_assert(ra >= 1 && ra <= 2, "Retry-After %d: %s", ra, buf);
    cr_assert_not_null(strstr(buf, "too many failed logins"));
    cr_assert_eq(login("127.0.0.2", port, "bob", "battery", buf, sizeof buf), 200, "%s", buf);
    /* two more failures from 127.0.0.1 (three with the first) block that address for every user */
    for (int i = 0; i < 2; i++)
        cr_assert_eq(login("127.0.0.1", port, "mallory", "guess", buf, sizeof buf), 401, "attempt %d: %s", i, buf);
    int64_t blocked_at = now_ms();
    cr_assert_eq(login("127.0.0.1", port, "bob", "battery", buf, sizeof buf), 429, "address not blocked: %s", buf);
    cr_assert_eq(login("127.0.0.5", port, "bob", "battery", buf, sizeof buf), 200, "%s", buf);
    /* after the back-off the right secret works */
    while (now_ms() - blocked_at < 2100)
        tc_sleep_ms(50);
    cr_assert_eq(login("127.0.0.1", port, "alice", "correct-horse", buf, sizeof buf), 200, "after the back-off: %s",
                 buf);
    /* the address's next block is twice as long (three names, so that only the address is blocked) */
    const char *names[] = {"eve", "trudy", "oscar"};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(login("127.0.0.1", port, names[i], "guess", buf, sizeof buf), 401, "attempt %d: %s", i, buf);
    cr_assert_eq(login("127.0.0.1", port, "bob", "battery", buf, sizeof buf), 429);
    ra = retry_after(buf);
    cr_assert(ra >= 3 && ra <= 4, "the second block's Retry-After is %d, not 4: %s", ra, buf);
    /* refusals are audited, without the secrets */
    cr_assert_eq(tc_count_lines(deskp, "\"login throttled\""), 3);
    cr_assert_eq(tc_count_lines(deskp, "\"logins blocked after failures\""), 3);
    cr_assert_eq(tc_count_lines(deskp, "correct-horse"), 0);
    cr_assert_eq(tc_count_lines(deskp, "battery"), 0);
    kill(d, SIGTERM);
    cr_assert_eq(child_wait(d, 10000), 0);
}

/* ---- retention ------------------------------------------------------------------------------------------- */

static void make_case(cases *cs, const char *id)
{
    Decision d;
    verdict__v1__decision__init(&d);
    d.txn_id = (char *)id;
    d.outcome = VERDICT__V1__OUTCOME__OUTCOME_REVIEW;
    d.score = 0.7;
    d.decided_at_ms = now_ms() - 600000;
    bool created = false;
    verror e = {0};
    cr_assert_eq(cases_create(cs, &d, 1, &created, &e), V_OK, "%s", e.msg);
    cr_assert(created);
}

/* Rewrites a case as resolved at_ms (as time passing would leave it); label_seq removed when !labelled, as a
 * desk killed between the resolution and its label leaves it. */
static void backdate_resolution(cases *cs, const char *id, int64_t at_ms, bool labelled)
{
    json_t *c = NULL;
    verror e = {0};
    cr_assert_eq(cases_get(cs, id, &c, &e), V_OK, "%s", e.msg);
    uint64_t rev = (uint64_t)json_integer_value(json_object_get(c, "rev"));
    json_object_del(c, "rev");
    json_object_set_new(c, "state", json_string("resolved"));
    json_object_set_new(c, "resolution", json_string("fraud"));
    json_object_set_new(c, "resolved_by", json_string("carol"));
    json_object_set_new(c, "resolved_at_ms", json_integer(at_ms));
    if (!labelled)
        json_object_del(c, "label_seq");
    char *v = json_dumps(c, JSON_COMPACT);
    cr_assert_eq(kvStore_Update(NULL, cases_kv(cs), id, v, (int)strlen(v), rev), NATS_OK);
    free(v);
    json_decref(c);
}

static bool case_exists(cases *cs, const char *id)
{
    json_t *c = NULL;
    verror e = {0};
    vstatus st = cases_get(cs, id, &c, &e);
    json_decref(c);
    cr_assert(st == V_OK || st == V_ENOTFOUND, "%s", e.msg);
    return st == V_OK;
}

/* --case-retention: resolved cases whose label is out are purged from the bucket and leave the queue once their
 * resolution is older than the retention; a younger resolution, open and claimed cases (however old) stay; a
 * resolved case without its label gets the label first; LABELS keeps every label. */
Test(desk, resolved_cases_older_than_the_retention_are_purged_and_their_labels_stay)
{
    config cfg;
    config_defaults(&cfg);
    cases *cs = NULL;
    verror e = {0};
    cr_assert_eq(cases_open(js, &cfg, &cs, &e), V_OK, "%s", e.msg);
    const char *all[] = {"ret-old-1", "ret-old-2", "ret-unlabelled", "ret-young", "ret-open", "ret-claimed"};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        make_case(cs, all[i]);
    int64_t long_ago = now_ms() - 5 * 60000;
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(cases_resolve(cs, all[i], "carol", "fraud", NULL, &e), V_OK, "%s", e.msg);
        backdate_resolution(cs, all[i], long_ago, true);
    }
    backdate_resolution(cs, "ret-unlabelled", long_ago, false);
    cr_assert_eq(cases_resolve(cs, "ret-young", "carol", "legitimate", NULL, &e), V_OK, "%s", e.msg);
    cr_assert_eq(cases_claim(cs, "ret-claimed", "dave", NULL, &e), V_OK, "%s", e.msg);
    cr_assert_eq(tc_stream_msgs(js, "LABELS"), 3);

    int port = free_port();
    char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    const char *argv[] = {"verdict", "desk", "--nats-url", srv.url, "--listen", listen, "--case-retention", "1m", NULL};
    pid_t d = verdict_spawn(argv, deskp);
    cr_assert(file_wait_for(deskp, "desk listening", 15000), "desk did not start; see %s", deskp);
    /* the sweep runs at start and every 10 s at most; the unlabelled case is labelled by the repair pass first */
    bool gone = false;
    for (int i = 0; i < 250 && !gone; i++) {
        gone = !case_exists(cs, "ret-old-1") && !case_exists(cs, "ret-old-2") && !case_exists(cs, "ret-unlabelled");
        if (!gone)
            tc_sleep_ms(100);
    }
    cr_assert(gone, "old resolved cases still in the bucket; see %s", deskp);
    cr_assert(case_exists(cs, "ret-young"), "a resolution younger than the retention was purged");
    json_t *c = NULL;
    cr_assert_eq(cases_get(cs, "ret-open", &c, &e), V_OK, "an open case was removed");
    cr_assert_str_eq(json_string_value(json_object_get(c, "state")), "open");
    json_decref(c);
    cr_assert_eq(cases_get(cs, "ret-claimed", &c, &e), V_OK, "a claimed case was removed");
    cr_assert_str_eq(json_string_value(json_object_get(c, "claimed_by")), "dave");
    json_decref(c);
    cr_assert_eq(bucket_keys(cases_kv(cs)), 3);
    /* the labels stay, one each, the unlabelled case's published before its removal */
    cr_assert_eq(tc_stream_msgs(js, "LABELS"), 4);
    natsMsg *m = NULL;
    cr_assert_eq(js_GetLastMsg(&m, js, "LABELS", "label.ret-unlabelled", NULL, NULL), NATS_OK);
    natsMsg_Destroy(m);
    cr_assert_eq(js_GetLastMsg(&m, js, "LABELS", "label.ret-old-1", NULL, NULL), NATS_OK);
    natsMsg_Destroy(m);
    /* and the queue API no longer lists them */
    char buf[16384], hdr[128];
    cr_assert_eq(http_req(port, "POST", "/api/login", NULL, "{\"user\":\"tester\"}", buf, sizeof buf), 200, "%s", buf);
    const char *sid = strstr(buf, "\"session\":\"");
    cr_assert_not_null(sid);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %.64s\r\n", sid + 11);
    bool listed = false;
    for (int i = 0; i < 50 && !listed; i++) {
        cr_assert_eq(http_req(port, "GET", "/api/cases?state=all", hdr, NULL, buf, sizeof buf), 200, "%s", buf);
        listed = strstr(buf, "\"matched\":3") != NULL;
        if (!listed)
            tc_sleep_ms(100);
    }
    cr_assert(listed, "the queue: %s", buf);
    cr_assert_null(strstr(buf, "ret-old"), "%s", buf);
    cr_assert_null(strstr(buf, "ret-unlabelled"), "%s", buf);
    cr_assert_not_null(strstr(buf, "\"resolved\":1"), "%s", buf);
    cr_assert_not_null(strstr(buf, "ret-open"));
    cr_assert_not_null(strstr(buf, "ret-claimed"));
    cr_assert_eq(http_get_local(port, "/metrics", buf, sizeof buf), true);
    cr_assert_not_null(strstr(buf, "verdict_desk_cases_purged_total 3\n"), "%s", buf);
    cr_assert_eq(tc_count_lines(deskp, "resolved case purged"), 3);
    kill(d, SIGTERM);
    cr_assert_eq(child_wait(d, 10000), 0);
    cases_close(cs);
}

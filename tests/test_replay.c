/* test_replay.c - `verdict replay` and `verdict features` against a real nats-server: both compute a
 * transaction's features as serving does (velocity state in TXN stream order, warmed over the window before
 * the range), so replaying the running policy over a decided range changes no decision, no score and no rule
 * firing, and the training table of stream-read transactions gives the scores the engine served. Also the
 * range flags (--from/--to, --last) and strict parsing.
 *
 * Engines run with --workers 1: until serving's single sequencing stage lands (issue 15 item 1), two workers
 * may count a card's transactions out of stream order, and these tests compare against serving exactly. */
#include "client.h"
#include "gbdt.h"
#include "harness.h"
#include "simgen.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static test_server srv;
static natsConnection *nc;
static jsCtx *js;
static char logp[256], rulesp[256], outp[256];

static void setup(void)
{
    tc_fixture_up(&srv, &nc, &js, logp, sizeof logp);
    temp_path(rulesp, sizeof rulesp, ".rules");
    temp_path(outp, sizeof outp, ".out");
}

static void teardown(void)
{
    tc_fixture_down(&srv, nc, js, logp);
    unlink(rulesp);
    unlink(outp);
}

TestSuite(replay, .init = setup, .fini = teardown, .timeout = 240);

static const char *model_path = VERDICT_SOURCE_DIR "/models/verdict-gbdt.json";

/* A velocity rule that starts firing for a card from its 30th transaction in 10 minutes, and an amount rule. */
static const char *rules_velocity = "rule card_burst review \"30 or more on the card in 10 minutes\"\n"
                                    "  when count(card_id, 10m) >= 30\n"
                                    "rule big decline \"big\" when amount >= 800\n"
                                    "rule elevated review \"model\" when score >= 0.6\n";

/* Publishes n transactions over 5 cards (card k = i % 5), amounts varying, with one undecodable message at
 * position poison_at (if >= 0). */
static void publish_txns(int n, int poison_at)
{
    for (int i = 0; i < n; i++) {
        if (i == poison_at) {
            jsPubAck *pa = NULL;
            cr_assert_eq(js_Publish(&pa, js, "txn.poison", "\xff\xff\xff", 3, NULL, NULL), NATS_OK);
            jsPubAck_Destroy(pa);
        }
        char id[32], card[32];
        snprintf(id, sizeof id, "rp-%04d", i);
        snprintf(card, sizeof card, "tok_card_%d", i % 5);
        Transaction t;
        tc_txn(&t, id, 1000 + (i * 7919) % 95000);
        t.card_id = card;
        cr_assert(tc_publish(js, "txn.ecom.x", &t));
    }
}

/* Runs verdict with argv (NULL-terminated, argv[0] ignored) into outp (truncated first); returns the status. */
static int run(const char *const argv[])
{
    unlink(outp);
    pid_t pid = verdict_spawn(argv, outp);
    return child_wait(pid, 120000);
}

/* The live / replay / both counts of a rule in replay's rule table. */
static void rule_counts(const char *out, const char *rule, long *live, long *rep, long *both)
{
    char want[64];
    snprintf(want, sizeof want, "\n%s ", rule);
    const char *l = strstr(out, want);
    cr_assert_not_null(l, "no line for rule %s in:\n%s", rule, out);
    cr_assert_eq(sscanf(l + strlen(want), "%ld %ld %ld", live, rep, both), 3, "%s", out);
}

/* Serves n transactions (one poison among them) with the rules and the shipped model, one worker, then stops. */
static void serve_decided(int n, const char *rules)
{
    tc_write_file(rulesp, rules);
    pid_t pid = tc_start_engine(
        srv.url, logp,
        (const char *const[]){"--workers", "1", "--rules", rulesp, "--model", model_path, "--budget", "60s", NULL});
    publish_txns(n, n / 2);
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", (uint64_t)n, 60000), (uint64_t)n, "see %s", logp);
    cr_assert(tc_wait_consumer_idle(js, 30000));
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0);
}

Test(replay, the_running_policy_replays_unchanged_and_its_velocity_rule_fires_as_it_did_live)
{
    serve_decided(300, rules_velocity);
    /* seq 151 was the poison (dead-lettered and deleted from TXN); the range starts mid-history, where each
     * card already has ~20 transactions */
    const char *argv[] = {"verdict",  "replay", "--nats-url", srv.url, "--rules", rulesp, "--model",
                          model_path, "--from", "102",        "--to",  "301",     NULL};
    cr_assert_eq(run(argv), 0, "see %s", outp);
    char *out = tc_slurp(outp);
    cr_assert(strstr(out, "199 transactions"), "%s", out);
    cr_assert(strstr(out, "199 with a stored decision"), "%s", out);
    cr_assert(strstr(out, "0 of 199 decided transactions would change (0.00%)"), "%s", out);
    cr_assert(strstr(out, "model scores: 0 of 199 differ"), "%s", out);
    long live, rep, both;
    rule_counts(out, "card_burst", &live, &rep, &both);
    /* a card's 31st transaction is at seq 152: the rule fires from there on only because the ~20 transactions
     * per card before seq 102 were counted first (from the range alone it would fire from about seq 252) */
    cr_assert_gt(live, 50, "%s", out);
    cr_assert_eq(rep, live, "%s", out);
    cr_assert_eq(both, live, "%s", out);
    long burst = live;
    rule_counts(out, "big", &live, &rep, &both);
    cr_assert(live > 0 && rep == live && both == live, "%s", out);

    /* the candidate declines the burst: it fires on exactly the transactions it fired on live, and no
     * transaction it did not flag changes */
    char candp[300];
    snprintf(candp, sizeof candp, "%s.cand", rulesp);
    tc_write_file(candp, "rule card_burst decline \"30 or more on the card in 10 minutes\"\n"
                         "  when count(card_id, 10m) >= 30\n"
                         "rule big decline \"big\" when amount >= 800\n"
                         "rule elevated review \"model\" when score >= 0.6\n");
    const char *cargv[] = {"verdict", "replay",   "--nats-url", srv.url, "--rules", candp,
                           "--model", model_path, "--from",     "102",   "--json",  NULL};
    cr_assert_eq(run(cargv), 0, "see %s", outp);
    out = tc_slurp(outp);
    cr_assert(strstr(out, "\"transactions\":199,"), "%s", out);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 -c 'import json, sys; json.load(open(sys.argv[1]))' %s", outp);
    cr_assert_eq(system(cmd), 0, "--json is not one JSON object: %s", out);
    cr_assert_null(strstr(out, "\"approve->decline\""), "a transaction the burst rule did not flag changed: %s", out);
    cr_assert(strstr(out, "\"review->decline\""), "%s", out);
    char want[96];
    snprintf(want, sizeof want, "\"card_burst\":{\"live\":%ld,\"replay\":%ld,\"both\":%ld}", burst, burst, burst);
    cr_assert(strstr(out, want), "want %s in %s", want, out);
    unlink(candp);
}

Test(replay, lists_are_their_current_values)
{
    tc_write_file(rulesp, "list blocked_cards \"stolen\"\n"
                          "rule blocked decline \"blocked card\" when card_id in list(\"blocked_cards\")\n");
    pid_t pid = tc_start_engine(srv.url, logp,
                                (const char *const[]){"--workers", "1", "--rules", rulesp, "--budget", "60s", NULL});
    const char *add[] = {"verdict", "lists", "add", "blocked_cards", "tok_card_1", "--nats-url", srv.url, NULL};
    cr_assert_eq(run(add), 0, "see %s", outp);
    tc_sleep_ms(1000); /* the engine's replica applies it */
    publish_txns(50, -1);
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", 50, 60000), 50u, "see %s", logp);
    cr_assert(tc_wait_consumer_idle(js, 30000));
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0);
    const char *argv[] = {"verdict", "replay", "--nats-url", srv.url, "--rules", rulesp, "--from", "1", NULL};
    cr_assert_eq(run(argv), 0, "see %s", outp);
    char *out = tc_slurp(outp);
    cr_assert(strstr(out, "0 of 50 decided transactions would change"), "%s", out);
    long live, rep, both;
    rule_counts(out, "blocked", &live, &rep, &both);
    cr_assert(live == 10 && rep == 10 && both == 10, "%s", out);
    /* taken off the list since: the replay reads the list as it is now */
    const char *rm[] = {"verdict", "lists", "rm", "blocked_cards", "tok_card_1", "--nats-url", srv.url, NULL};
    cr_assert_eq(run(rm), 0, "see %s", outp);
    cr_assert_eq(run(argv), 0, "see %s", outp);
    out = tc_slurp(outp);
    cr_assert(strstr(out, "10 of 50 decided transactions would change"), "%s", out);
    cr_assert(strstr(out, "decline -> approve: 10"), "%s", out);
}

Test(replay, from_and_to_select_exactly_that_range)
{
    /* more decisions than --to: the old code compared --to with DECISIONS' last sequence and replayed 0 */
    serve_decided(150, "rule big decline \"big\" when amount >= 800\n");
    const char *argv[] = {"verdict", "replay", "--nats-url", srv.url, "--rules", rulesp,
                          "--from",  "1",      "--to",       "40",    NULL};
    cr_assert_eq(run(argv), 0, "see %s", outp);
    char *out = tc_slurp(outp);
    cr_assert(strstr(out, "seq 1..40: 40 transactions"), "%s", out);
    cr_assert(strstr(out, "0 of 40 decided transactions would change"), "%s", out);
    const char *argv2[] = {"verdict", "replay", "--nats-url", srv.url, "--rules", rulesp, "--from=130", NULL};
    cr_assert_eq(run(argv2), 0, "see %s", outp);
    out = tc_slurp(outp);
    /* seq 76 is the poison: 130..151 holds 22 transactions */
    cr_assert(strstr(out, "seq 130..151: 22 transactions"), "%s", out);
    const char *argv3[] = {"verdict", "replay", "--nats-url", srv.url, "--rules", rulesp, "--last", "5", NULL};
    cr_assert_eq(run(argv3), 0, "see %s", outp);
    cr_assert(strstr(tc_slurp(outp), "seq 147..151: 5 transactions"), "%s", tc_slurp(outp));
}

Test(replay, a_window_cut_by_retention_is_reported)
{
    serve_decided(60, rules_velocity);
    const char *argv[] = {"verdict", "replay", "--nats-url", srv.url, "--rules", rulesp, "--from", "40", NULL};
    cr_assert_eq(run(argv), 0, "see %s", outp);
    cr_assert_null(strstr(tc_slurp(outp), "no longer holds"), "%s", tc_slurp(outp));
    /* what retention does to the oldest messages: TXN now starts at seq 21, inside the window before seq 40 */
    jsOptions o;
    jsOptions_Init(&o);
    o.Stream.Purge.Sequence = 21;
    cr_assert_eq(js_PurgeStream(js, "TXN", &o, NULL), NATS_OK);
    cr_assert_eq(run(argv), 0, "see %s", outp);
    cr_assert(strstr(tc_slurp(outp), "warning: TXN no longer holds the whole window before the range"), "%s",
              tc_slurp(outp));
}

Test(replay, undecodable_messages_in_txn_are_skipped_as_serving_skips_them)
{
    /* no engine: the poison stays in TXN, as it does until an engine dead-letters it */
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = "TXN";
    const char *subjects[] = {"txn.>"};
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    jsStreamInfo *si = NULL;
    cr_assert_eq(js_AddStream(&si, js, &sc, NULL, NULL), NATS_OK);
    jsStreamInfo_Destroy(si);
    publish_txns(10, 5);
    tc_write_file(rulesp, rules_velocity);
    const char *argv[] = {"verdict", "replay", "--nats-url", srv.url, "--rules", rulesp, "--from", "1", NULL};
    cr_assert_eq(run(argv), 0, "see %s", outp);
    char *out = tc_slurp(outp);
    cr_assert(strstr(out, "stream DECISIONS does not exist"), "%s", out);
    cr_assert(strstr(out, "seq 1..11: 10 transactions"), "%s", out);
    cr_assert(strstr(out, "0 with a stored decision, 1 undecodable"), "%s", out);
    const char *fargv[] = {"verdict", "features", "--nats-url", srv.url, "--from", "1", "--txn-ids", NULL};
    cr_assert_eq(run(fargv), 0, "see %s", outp);
    out = tc_slurp(outp);
    cr_assert(strstr(out, "TXN seq 1..11, 1 undecodable (skipped)"), "%s", out);
    cr_assert(strstr(out, "features: 10 rows"), "%s", out);
    /* the card's count goes on across the skipped message: rp-0009 (card 4) sees rp-0004 in
     * count(card_id,10m), the 9th feature of the default columns */
    const char *l = strstr(out, "\nrp-0009,");
    cr_assert_not_null(l, "%s", out);
    l++;
    for (int i = 0; i < 9; i++)
        l = strchr(l, ',') + 1;
    cr_assert(strncmp(l, "1,", 2) == 0, "count(card_id,10m) of rp-0009: %.10s", l);
}

/* Usage errors: exit 2 with a message naming the flag, before any connection (the URL is never dialled). */
static void refused(const char *want, const char *a1, const char *a2, const char *a3, const char *a4)
{
    const char *argv[] = {"verdict", "replay", "--nats-url", "nats://127.0.0.1:1", "--rules", rulesp, a1, a2,
                          a3,        a4,       NULL};
    cr_assert_eq(run(argv), 2, "%s %s %s %s: see %s", a1, a2, a3 ? a3 : "", a4 ? a4 : "", outp);
    cr_assert(strstr(tc_slurp(outp), want), "want '%s', got: %s", want, tc_slurp(outp));
}

Test(replay, bad_ranges_and_numbers_are_refused)
{
    tc_write_file(rulesp, "rule big decline \"big\" when amount >= 800\n");
    refused("--last must be between 1 and", "--last", "0", NULL, NULL);
    refused("--last needs a whole number, got '-5'", "--last", "-5", NULL, NULL);
    refused("--from needs a whole number, got '1x'", "--from", "1x", NULL, NULL);
    refused("--to (5) is before --from (10)", "--from", "10", "--to", "5");
    refused("--last cannot be combined with --from or --to", "--last", "10", "--from", "1");
    refused("--to needs --from", "--to", "5", NULL, NULL);
    refused("--samples must be between 0 and 10", "--samples", "11", NULL, NULL);
    refused("--from needs a value", "--from", NULL, NULL, NULL);
    refused("--from needs a whole number, got ''", "--from=", NULL, NULL, NULL);
}

/* ---- verdict features ------------------------------------------------------------------------------------ */

TestSuite(features, .init = setup, .fini = teardown, .timeout = 240);

/* One row of a --txn-ids table whose columns are the model's features: txn_id, values, label, is_fraud. */
typedef struct row {
    char txn_id[72], label[72], is_fraud[8];
    fval vals[FEAT_MAX]; /* by the test registry's ids */
} row;

/* Parses a line into r (ids[i] = the test registry's id of column i); false on a malformed line. */
static bool parse_row(char *line, const int *ids, int nf, row *r)
{
    for (int i = 0; i < FEAT_MAX; i++)
        r->vals[i] = (fval){.type = FT_NUM, .present = false};
    int col = 0;
    /* strsep keeps empty fields, which are missing values */
    char *cur = line;
    char *f;
    while ((f = strsep(&cur, ",\n")) != NULL && col < nf + 3) {
        if (col == 0)
            snprintf(r->txn_id, sizeof r->txn_id, "%s", f);
        else if (col <= nf) {
            if (f[0])
                r->vals[ids[col - 1]] = (fval){.type = FT_NUM, .present = true, .num = strtod(f, NULL)};
        } else if (col == nf + 1)
            snprintf(r->label, sizeof r->label, "%s", f);
        else
            snprintf(r->is_fraud, sizeof r->is_fraud, "%s", f);
        col++;
    }
    return col == nf + 3;
}

Test(features, a_stream_range_gives_the_features_serving_used_and_joins_labels_from_a_stream)
{
    tc_write_file(rulesp, "rule elevated review \"model\" when score >= 0.6\n");
    pid_t pid = tc_start_engine(
        srv.url, logp,
        (const char *const[]){"--workers", "1", "--rules", rulesp, "--model", model_path, "--budget", "60s", NULL});
    /* a small population, so cards, devices and accounts come back within the windows */
    simgen_cfg gc = {.seed = 7, .cards = 40, .fraud_rate = 0.05};
    simgen *g = simgen_create(&gc);
    cr_assert_not_null(g);
    enum { N = 600, FROM = 201 };
    static char labels_of[N][32];
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = "LABELS";
    const char *subjects[] = {"labels.>"};
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    jsStreamInfo *si = NULL;
    cr_assert_eq(js_AddStream(&si, js, &sc, NULL, NULL), NATS_OK);
    jsStreamInfo_Destroy(si);
    for (int i = 0; i < N; i++) {
        Transaction t;
        const char *label = simgen_next(g, &t);
        snprintf(labels_of[i], sizeof labels_of[i], "%s", label);
        cr_assert(tc_publish(js, "txn.ecom.sim", &t));
        if (i % 3 == 0) { /* every third one labelled, a wrong label first and then corrected */
            char subj[96];
            snprintf(subj, sizeof subj, "labels.%s", t.txn_id);
            cr_assert_eq(js_Publish(NULL, js, subj, "legit", 5, NULL, NULL), NATS_OK);
            cr_assert_eq(js_Publish(NULL, js, subj, label, (int)strlen(label), NULL, NULL), NATS_OK);
        }
    }
    simgen_destroy(g);
    /* not a label (ignored and counted): the second transaction stays unlabelled */
    cr_assert_eq(js_Publish(NULL, js, "labels.t7-00000002", "not a label!", 12, NULL, NULL), NATS_OK);
    cr_assert_eq(tc_wait_msgs(js, "DECISIONS", N, 60000), (uint64_t)N, "see %s", logp);
    cr_assert(tc_wait_consumer_idle(js, 30000));
    kill(pid, SIGTERM);
    cr_assert_eq(child_wait(pid, 15000), 0);

    char tablep[300];
    snprintf(tablep, sizeof tablep, "%s.csv", outp);
    char from[16];
    snprintf(from, sizeof from, "%d", FROM);
    const char *argv[] = {"verdict",  "features",  "--nats-url",      srv.url,  "--from", from,   "--model",
                          model_path, "--txn-ids", "--labels-stream", "LABELS", "--out",  tablep, NULL};
    cr_assert_eq(run(argv), 0, "see %s", outp);
    cr_assert(strstr(tc_slurp(outp), "1 messages of LABELS are not labels"), "%s", tc_slurp(outp));

    static featreg reg;
    featreg_init(&reg);
    gbdt *m = NULL;
    verror e = {0};
    cr_assert_eq(gbdt_load_file(model_path, &reg, &m, &e), V_OK, "%s", e.msg);
    int nf = gbdt_num_features(m), ids[FEAT_MAX];
    for (int i = 0; i < nf; i++)
        ids[i] = gbdt_feature_id(m, i);
    int c10m = featreg_find(&reg, "count(card_id,10m)", strlen("count(card_id,10m)"));
    int c24h = featreg_find(&reg, "count(account_id,24h)", strlen("count(account_id,24h)"));
    cr_assert(c10m >= 0 && c24h >= 0);

    FILE *f = fopen(tablep, "r");
    cr_assert_not_null(f);
    static char line[8192];
    cr_assert_not_null(fgets(line, sizeof line, f));
    cr_assert(strncmp(line, "txn_id,\"amount\"", 15) == 0, "header: %s", line);
    static row r;
    arena a;
    cr_assert_eq(arena_init(&a, 1 << 16), V_OK);
    int rows = 0, with_count = 0, labelled = 0;
    double first_c24h = -1;
    while (fgets(line, sizeof line, f)) {
        cr_assert(parse_row(line, ids, nf, &r), "malformed row %d: %s", rows, line);
        int i = atoi(strrchr(r.txn_id, '-') + 1) - 1; /* simgen ids count from 1 */
        cr_assert_eq(i, FROM - 1 + rows, "rows are in stream order");
        natsMsg *dm = tc_find_decision(js, r.txn_id);
        cr_assert_not_null(dm, "no decision for %s", r.txn_id);
        arena_reset(&a);
        Decision *d = decision_decode(&a, natsMsg_GetData(dm), (size_t)natsMsg_GetDataLength(dm));
        cr_assert_not_null(d);
        float want = gbdt_predict(m, r.vals);
        cr_assert_eq(d->score, (double)want, "%s: served %.9g, the table's row gives %.9g", r.txn_id, d->score,
                     (double)want);
        natsMsg_Destroy(dm);
        if (r.vals[c10m].present && r.vals[c10m].num > 0)
            with_count++;
        if (rows == 0)
            first_c24h = r.vals[c24h].num;
        if (i % 3 == 0) {
            cr_assert_str_eq(r.label, labels_of[i], "%s", r.txn_id);
            cr_assert_str_eq(r.is_fraud, strcmp(labels_of[i], "legit") ? "1" : "0");
            labelled++;
        } else {
            cr_assert_str_eq(r.label, "", "%s is not labelled", r.txn_id);
            cr_assert_str_eq(r.is_fraud, "");
        }
        rows++;
    }
    fclose(f);
    arena_free(&a);
    gbdt_free(m);
    unlink(tablep);
    cr_assert_eq(rows, N - FROM + 1);
    int want_labelled = 0;
    for (int i = FROM - 1; i < N; i++)
        want_labelled += i % 3 == 0;
    cr_assert_eq(labelled, want_labelled);
    cr_assert_gt(with_count, rows / 4, "velocity features take part (%d rows with a card count)", with_count);
    cr_assert_gt(first_c24h, 0, "the range's first row counts the transactions before the range");
}

Test(features, a_file_of_the_simulator_s_transactions_with_its_labels_gives_the_simulator_s_table)
{
    char txnsp[300], ap[300], bp[300], labp[300];
    snprintf(txnsp, sizeof txnsp, "%s.pb", outp);
    snprintf(ap, sizeof ap, "%s.a", outp);
    snprintf(bp, sizeof bp, "%s.b", outp);
    snprintf(labp, sizeof labp, "%s.labels", outp);
    const char *sim[] = {"verdict", "features",  "--count",    "3000", "--seed", "3", "--fraud-rate",
                         "0.1",     "--txn-ids", "--txns-out", txnsp,  "--out",  ap,  NULL};
    cr_assert_eq(run(sim), 0, "see %s", outp);
    /* labels from the table: txn_id,label */
    FILE *in = fopen(ap, "r"), *lf = fopen(labp, "w");
    cr_assert(in && lf);
    static char line[8192];
    cr_assert_not_null(fgets(line, sizeof line, in));
    fputs("txn_id,label\n", lf);
    while (fgets(line, sizeof line, in)) {
        char *id_end = strchr(line, ','), *lab = line + strlen(line) - 1;
        *lab = 0; /* the newline */
        char *is_fraud = strrchr(line, ',');
        *is_fraud = 0;
        lab = strrchr(line, ',') + 1;
        *id_end = 0;
        fprintf(lf, "%s,%s\n", line, lab);
    }
    fclose(in);
    fclose(lf);
    const char *file[] = {"verdict", "features", "--input", txnsp, "--labels", labp, "--txn-ids", "--out", bp, NULL};
    cr_assert_eq(run(file), 0, "see %s", outp);
    char *a = strdup(tc_slurp(ap));
    cr_assert_gt(strlen(a), 3000 * 20);
    cr_assert_str_eq(tc_slurp(bp), a, "the file and the simulator give different tables");
    free(a);
    unlink(txnsp);
    unlink(ap);
    unlink(bp);
    unlink(labp);
}

Test(features, train_model_reads_the_table_and_its_model_reads_the_same_columns)
{
    if (system("/usr/bin/python3 -c 'import xgboost, sklearn' 2>/dev/null") != 0)
        cr_skip_test("python3-xgboost or python3-sklearn is not installed");
    char tablep[300], modelp[300], cmd[2048];
    snprintf(tablep, sizeof tablep, "%s.csv", outp);
    snprintf(modelp, sizeof modelp, "%s.model.json", outp);
    /* a table as from real history: txn ids, and a fifth of the rows unlabelled */
    const char *sim[] = {"verdict",
                         "features",
                         "--count",
                         "2000",
                         "--seed",
                         "5",
                         "--fraud-rate",
                         "0.2",
                         "--txn-ids",
                         "--features",
                         "amount,mcc,cross_border,count(card_id,1h),distinct(card_id,device_id,24h)",
                         "--out",
                         tablep,
                         NULL};
    cr_assert_eq(run(sim), 0, "see %s", outp);
    snprintf(cmd, sizeof cmd,
             "awk -F, 'NR > 1 && NR %% 5 == 0 {$(NF-1) = \"\"; $NF = \"\"} {print}' OFS=, %s > %s.u && mv %s.u %s",
             tablep, tablep, tablep, tablep);
    cr_assert_eq(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tools/train_model.py --table %s --trees 5 --out %s > %s 2>&1",
             VERDICT_SOURCE_DIR, tablep, modelp, outp);
    cr_assert_eq(system(cmd), 0, "train_model.py failed: %s", tc_slurp(outp));
    cr_assert(strstr(tc_slurp(outp), "rows without a label left out"), "%s", tc_slurp(outp));
    cr_assert(strstr(tc_slurp(outp), "5 features"), "%s", tc_slurp(outp));
    /* the engine loads the model, and a table for it has the training table's columns */
    static featreg reg;
    featreg_init(&reg);
    gbdt *m = NULL;
    verror e = {0};
    cr_assert_eq(gbdt_load_file(modelp, &reg, &m, &e), V_OK, "%s", e.msg);
    cr_assert_eq(gbdt_num_features(m), 5);
    gbdt_free(m);
    const char *again[] = {"verdict", "features", "--count", "1", "--model", modelp, "--txn-ids", NULL};
    cr_assert_eq(run(again), 0, "see %s", outp);
    FILE *f = fopen(tablep, "r");
    static char header[4096];
    cr_assert_not_null(fgets(header, sizeof header, f));
    fclose(f);
    cr_assert(strstr(tc_slurp(outp), header), "the model's table header differs from %s", header);
    unlink(tablep);
    unlink(modelp);
    snprintf(cmd, sizeof cmd, "%s", modelp);
    char *dot = strrchr(cmd, '.');
    strcpy(dot, ".metrics.txt");
    unlink(cmd);
}

static void features_refused(const char *want, const char *const args[])
{
    const char *argv[16] = {"verdict", "features", "--nats-url", "nats://127.0.0.1:1"};
    int n = 4;
    while (*args && n < 15)
        argv[n++] = *args++;
    argv[n] = NULL;
    cr_assert_eq(run(argv), 2, "%s: see %s", want, outp);
    cr_assert(strstr(tc_slurp(outp), want), "want '%s', got: %s", want, tc_slurp(outp));
}

Test(features, bad_flags_are_refused)
{
    features_refused("--count must be between 1 and", (const char *const[]){"--count", "0", NULL});
    features_refused("--count needs a whole number, got '12k'", (const char *const[]){"--count", "12k", NULL});
    features_refused("--seed needs a whole number, got '-1'", (const char *const[]){"--seed", "-1", NULL});
    features_refused("--fraud-rate needs a number between 0 and 1", (const char *const[]){"--fraud-rate", "1.5", NULL});
    features_refused("--to needs --from", (const char *const[]){"--to", "9", NULL});
    features_refused("--to (1) is before --from (9)", (const char *const[]){"--from", "9", "--to", "1", NULL});
    features_refused("are for the simulator", (const char *const[]){"--input", "x.pb", "--count", "5", NULL});
    features_refused("the simulator labels its own", (const char *const[]){"--labels", "l.csv", NULL});
    features_refused("--since needs a duration", (const char *const[]){"--since", "yesterday", NULL});
    features_refused("--unlabelled must be keep, legit or skip", (const char *const[]){"--unlabelled", "drop", NULL});
    features_refused("--features and --model both",
                     (const char *const[]){"--features", "amount", "--model", "m.json", NULL});
    features_refused("unknown argument '--frob'", (const char *const[]){"--frob", NULL});
    features_refused("--out needs a value", (const char *const[]){"--out", NULL});
}

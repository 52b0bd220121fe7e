/* test_bench.c - smoke tests of `verdict bench`: runs briefly and checks that the JSON line parses and carries
 * every documented key, that several latency rates give one entry each, and that bad flags are refused. No
 * timing assertions: performance is judged by the benchmark, not by tests. */
#include "client.h"
#include "harness.h"

#include <criterion/criterion.h>
#include <math.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The last line of out that starts with '{', parsed. */
static json_t *last_json(const char *out)
{
    FILE *f = fopen(out, "r");
    cr_assert_not_null(f);
    char line[16384], last[16384] = "";
    while (fgets(line, sizeof line, f))
        if (line[0] == '{')
            strcpy(last, line);
    fclose(f);
    json_error_t err;
    json_t *j = json_loads(last, 0, &err);
    cr_assert_not_null(j, "last line is JSON: %s", last);
    return j;
}

/* Runs `verdict` with argv, its output into out; it must exit 0 within ms. Its last JSON line, parsed. */
static json_t *run_json(const char *const *argv, const char *out, int ms)
{
    pid_t pid = verdict_spawn(argv, out);
    cr_assert_eq(child_wait(pid, ms), 0, "verdict %s %s failed; see %s", argv[1], argv[2], out);
    return last_json(out);
}

static const char *latency_keys[] = {"decide_p50_us",    "decide_p99_us",   "decide_p999_us",  "decide_max_us",
                                     "baseline_p50_us",  "baseline_p99_us", "baseline_p999_us", "baseline_max_us",
                                     "ratio_p99",        "over_budget",     "rate",             "sent"};

Test(bench, json_line_has_every_key, .timeout = 120)
{
    char out[256];
    temp_path(out, sizeof out, ".json");
    const char *argv[] = {"verdict", "bench", "all", "--seconds", "2", "--count", "300", "--rate", "100",
                          "--json", NULL};
    json_t *j = run_json(argv, out, 90000);
    const char *keys[] = {"decisions_per_s",  "passthrough_per_s", "ratio",           "engine_cpu_us",
                          "server_cpu_us",    "engine_user_us",    "engine_sys_us",   "engine_cswitches",
                          "passthrough_engine_user_us", "passthrough_engine_sys_us", "passthrough_engine_cswitches"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        cr_assert(json_is_number(json_object_get(j, keys[i])), "key %s present and numeric", keys[i]);
    for (size_t i = 0; i < sizeof latency_keys / sizeof latency_keys[0]; i++)
        cr_assert(json_is_number(json_object_get(j, latency_keys[i])), "key %s present and numeric",
                  latency_keys[i]);
    cr_assert_eq(json_integer_value(json_object_get(j, "rate")), 100);
    cr_assert(json_number_value(json_object_get(j, "decisions_per_s")) > 0);
    /* the engine's CPU per decision is split into user and system time, and they add up to engine_cpu_us */
    double split = json_number_value(json_object_get(j, "engine_user_us")) +
                   json_number_value(json_object_get(j, "engine_sys_us"));
    cr_assert(split > 0 && fabs(split - json_number_value(json_object_get(j, "engine_cpu_us"))) < 0.05,
              "user + system %.2f against engine_cpu_us %.2f", split,
              json_number_value(json_object_get(j, "engine_cpu_us")));
    cr_assert(json_integer_value(json_object_get(j, "answered")) > 0);
    json_decref(j);
    unlink(out);
}

/* --rounds: the throughput bench repeats its ABBA block on fresh streams and reports each round's ratio and,
 * as "ratio", their median (of two rounds, the mean); a count outside 1-50 is refused. */
Test(bench, throughput_rounds_report_each_ratio_and_their_median, .timeout = 120)
{
    char out[256];
    temp_path(out, sizeof out, ".json");
    /* 3,000 a stream: with 300 an engine had often drained its stream while starting, before the timing from
     * ready began, and a run measured 0/s (1 of 6 runs here, once in CI) */
    const char *argv[] = {"verdict", "bench", "throughput", "--seconds", "2", "--count", "3000", "--rounds", "2",
                          "--json", NULL};
    json_t *j = run_json(argv, out, 90000);
    cr_assert_eq(json_integer_value(json_object_get(j, "rounds")), 2);
    json_t *rr = json_object_get(j, "ratio_rounds");
    cr_assert(json_is_array(rr) && json_array_size(rr) == 2, "ratio_rounds has one entry a round");
    double a = json_number_value(json_array_get(rr, 0)), b = json_number_value(json_array_get(rr, 1));
    cr_assert(a > 0 && b > 0, "each round decided: %.3f %.3f", a, b);
    cr_assert(fabs(json_number_value(json_object_get(j, "ratio")) - (a + b) / 2) < 0.002, "ratio %.3f, rounds %.3f %.3f",
              json_number_value(json_object_get(j, "ratio")), a, b);
    json_decref(j);
    unlink(out);
    const char *bad[] = {"0", "51", "x"};
    for (size_t i = 0; i < 3; i++) {
        const char *argv2[] = {"verdict", "bench", "throughput", "--rounds", bad[i], NULL};
        pid_t pid = verdict_spawn(argv2, out);
        cr_assert_eq(child_wait(pid, 10000), 2, "--rounds %s is refused", bad[i]);
        cr_assert(file_wait_for(out, "--rounds takes a number from 1 to 50", 1000), "--rounds %s: the reason", bad[i]);
    }
    unlink(out);
}

/* --nats-url: a second run on the same server measures again (a run deletes the streams it made), and a stream
 * an interrupted run left behind is refused with its name, never measured as 0/s and never deleted. */
Test(bench, throughput_runs_again_on_the_same_server_and_refuses_a_leftover, .timeout = 150)
{
    test_server srv;
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    char out[256];
    tc_fixture_up(&srv, &nc, &js, out, sizeof out);
    const char *argv[] = {"verdict", "bench", "throughput", "--nats-url", srv.url, "--seconds", "4", "--count",
                          "300", "--rounds", "1", "--json", NULL};
    for (int run = 0; run < 2; run++) {
        json_t *j = run_json(argv, out, 60000);
        cr_assert(json_number_value(json_object_get(j, "decisions_per_s")) > 0, "run %d decided", run + 1);
        cr_assert(json_number_value(json_object_get(j, "passthrough_per_s")) > 0, "run %d passed through", run + 1);
        json_decref(j);
    }
    jsStreamNamesList *names = NULL;
    natsStatus s = js_StreamNames(&names, js, NULL, NULL);
    cr_assert(s == NATS_NOT_FOUND || (s == NATS_OK && names->Count == 0), "the runs left %d streams",
              s == NATS_OK ? names->Count : -1);
    jsStreamNamesList_Destroy(names);
    /* what an interrupted run leaves: one of its streams */
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = "BT1_TXN";
    const char *subj[] = {"bt1.txn.>"};
    sc.Subjects = subj;
    sc.SubjectsLen = 1;
    cr_assert_eq(js_AddStream(NULL, js, &sc, NULL, NULL), NATS_OK);
    char out3[256];
    temp_path(out3, sizeof out3, ".log");
    pid_t pid = verdict_spawn(argv, out3);
    cr_assert_eq(child_wait(pid, 30000), 1, "a leftover stream makes the run fail");
    cr_assert(file_wait_for(out3, "stream BT1_TXN is already on the server", 1000), "the refusal names the stream");
    cr_assert_eq(tc_count_lines(out3, "decisions/s"), 0, "no table of zeros: %s", tc_slurp(out3));
    unlink(out3);
    cr_assert_eq(tc_stream_msgs(js, "BT1_TXN"), 0);
    jsStreamInfo *si = NULL;
    cr_assert_eq(js_GetStreamInfo(&si, js, "BT1_TXN", NULL, NULL), NATS_OK, "the leftover is not deleted");
    jsStreamInfo_Destroy(si);
    tc_fixture_down(&srv, nc, js, out);
}

/* --rates: one run per rate, in order, each with every latency key, and the first rate's keys at the top level;
 * --out writes each rate's series, percentile curve and timeline, into a directory it creates when there is
 * none (it used to fail after the first rate's runs, "cannot write into", and stop). */
Test(bench, several_rates_one_entry_each, .timeout = 120)
{
    char out[256], parent[256], dir[300];
    temp_path(out, sizeof out, ".json");
    temp_path(parent, sizeof parent, ".d");
    snprintf(dir, sizeof dir, "%s/plots", parent); /* neither exists yet */
    const char *argv[] = {"verdict", "bench", "latency", "--seconds", "1", "--rates", "50,120", "--out", dir,
                          "--json", NULL};
    long long started = (long long)now_us();
    json_t *j = run_json(argv, out, 90000);
    long long ended = (long long)now_us();
    cr_assert_eq(json_integer_value(json_object_get(j, "rate")), 50);
    json_t *runs = json_object_get(j, "latency_runs");
    cr_assert(json_is_array(runs));
    cr_assert_eq(json_array_size(runs), 2);
    const int want[] = {50, 120};
    for (size_t r = 0; r < 2; r++) {
        json_t *run = json_array_get(runs, r);
        for (size_t i = 0; i < sizeof latency_keys / sizeof latency_keys[0]; i++)
            cr_assert(json_is_number(json_object_get(run, latency_keys[i])), "run %zu: key %s", r, latency_keys[i]);
        cr_assert_eq(json_integer_value(json_object_get(run, "rate")), want[r]);
        cr_assert_eq(json_integer_value(json_object_get(run, "sent")), want[r]);
        char path[512];
        const char *kinds[] = {"series", "percentiles", "timeline"};
        for (int k = 0; k < 3; k++) {
            snprintf(path, sizeof path, "%s/latency-%d-%s.tsv", dir, want[r], kinds[k]);
            cr_assert_eq(access(path, R_OK), 0, "%s written", path);
            if (k == 2) { /* the timeline says when each side's first request was due, on the wall clock */
                const char *text = tc_slurp(path); /* its own static buffer */
                long long d = 0, b = 0;
                cr_assert_eq(sscanf(text, "# t0_unix_us decide=%lld baseline=%lld", &d, &b), 2, "%.200s", text);
                cr_assert(started < b && b < d && d < ended,
                          "pass-through first, then the engine, within the run: "
                          "%lld %lld %lld %lld",
                          started, b, d, ended);
            }
            unlink(path);
        }
    }
    json_decref(j);
    rmdir(dir);
    rmdir(parent);
    unlink(out);
}

/* `max` in --rates: a ramp of pass-through runs from 1,000/s up by a quarter finds the highest rate it sustains
 * (every request answered, p99 within the budget; here a budget of 10 s, so only answering counts), up to
 * --max-rate, and that rate is then measured like the others. The probes' streams are deleted as they end, so
 * the measured runs do not share the server with them; the measured runs' streams stay. */
Test(bench, max_rate_is_found_by_a_ramp_then_measured, .timeout = 150)
{
    test_server srv;
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    char out[256];
    tc_fixture_up(&srv, &nc, &js, out, sizeof out);
    const char *argv[] = {"verdict", "bench",      "latency", "--nats-url", srv.url, "--seconds", "1", "--rates",
                          "300,max", "--max-rate", "1300",    "--budget",   "10s",   "--json",    NULL};
    json_t *j = run_json(argv, out, 110000);
    cr_assert_eq(json_integer_value(json_object_get(j, "rate")), 300, "the first rate's keys at the top level");
    cr_assert_eq(json_integer_value(json_object_get(j, "sustained_rate")), 1300, "the ramp stops at --max-rate");
    json_t *probes = json_object_get(j, "sustained_probes");
    cr_assert(json_is_array(probes));
    cr_assert_eq(json_array_size(probes), 2, "1000/s, then a quarter more, capped at 1300/s");
    const int want[] = {1000, 1300};
    for (size_t i = 0; i < 2; i++) {
        json_t *p = json_array_get(probes, i);
        cr_assert_eq(json_integer_value(json_object_get(p, "rate")), want[i]);
        cr_assert_eq(json_integer_value(json_object_get(p, "sent")), want[i], "one second at the rate");
        cr_assert_eq(json_integer_value(json_object_get(p, "answered")), want[i], "every request answered");
        cr_assert(json_integer_value(json_object_get(p, "p99_us")) > 0);
    }
    json_t *runs = json_object_get(j, "latency_runs");
    cr_assert_eq(json_array_size(runs), 2);
    json_t *mx = json_array_get(runs, 1);
    cr_assert_eq(json_integer_value(json_object_get(mx, "rate")), 1300, "max is measured at the rate found");
    cr_assert_eq(json_integer_value(json_object_get(mx, "sent")), 1300);
    cr_assert_eq(json_integer_value(json_object_get(mx, "baseline_sent")), 1300);
    json_decref(j);
    jsStreamNamesList *names = NULL;
    cr_assert_eq(js_StreamNames(&names, js, NULL, NULL), NATS_OK);
    int probes_left = 0, measured = 0;
    for (int i = 0; i < names->Count; i++) {
        probes_left += strncmp(names->List[i], "LM", 2) == 0;
        measured += strcmp(names->List[i], "LT1_TXN") == 0 || strcmp(names->List[i], "LP1_TXN") == 0;
    }
    jsStreamNamesList_Destroy(names);
    cr_assert_eq(probes_left, 0, "the probes' streams are deleted");
    cr_assert_eq(measured, 2, "the measured run's streams (engine and pass-through at the rate found) stay");
    tc_fixture_down(&srv, nc, js, out);
}

/* An --out that cannot be a directory is refused before any run, with the reason. */
Test(bench, an_out_directory_that_cannot_be_made_is_refused_at_once, .timeout = 30)
{
    char out[256];
    temp_path(out, sizeof out, ".txt");
    const char *argv[] = {"verdict", "bench", "latency", "--seconds", "5", "--out", "/dev/null/plots", NULL};
    pid_t pid = verdict_spawn(argv, out);
    cr_assert_eq(child_wait(pid, 5000), 2, "not refused within 5 s with exit 2; see %s", out);
    char *text = tc_slurp(out);
    cr_assert(strstr(text, "/dev/null/plots") && strstr(text, "Not a directory"), "output lacks the reason: %s", text);
    unlink(out);
}

Test(bench, bad_rates_refused, .timeout = 30)
{
    const char *bad[] = {"500,abc", "0", "500,,x", "-5", "1,2,3,4,5,6,7,8,9", "max,max", "maximum"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char out[256];
        temp_path(out, sizeof out, ".log");
        const char *argv[] = {"verdict", "bench", "latency", "--rates", bad[i], NULL};
        pid_t pid = verdict_spawn(argv, out);
        cr_assert_eq(child_wait(pid, 20000), 2, "--rates %s refused as a usage error", bad[i]);
        cr_assert(file_wait_for(out, "--rates", 1000), "the message names the flag");
        unlink(out);
    }
    const char *bad_max[] = {"0", "100001", "x", "12x"};
    for (size_t i = 0; i < sizeof bad_max / sizeof bad_max[0]; i++) {
        char out[256];
        temp_path(out, sizeof out, ".log");
        const char *argv[] = {"verdict", "bench", "latency", "--rates", "max", "--max-rate", bad_max[i], NULL};
        pid_t pid = verdict_spawn(argv, out);
        cr_assert_eq(child_wait(pid, 20000), 2, "--max-rate %s refused as a usage error", bad_max[i]);
        cr_assert(file_wait_for(out, "--max-rate", 1000), "the message names the flag");
        unlink(out);
    }
}

/* `bench failover`: an owner and a hot standby, one kill -9 and one SIGTERM of the owner under traffic; every
 * transaction has exactly one decision, and each gap is reported. */
Test(bench, failover_reports_both_gaps_and_exactly_one_decision_each, .timeout = 120)
{
    char out[256];
    temp_path(out, sizeof out, ".json");
    const char *argv[] = {"verdict", "bench", "failover", "--kills", "1", "--rate", "200", "--lease-ttl", "1s",
                          "--json", NULL};
    json_t *j = run_json(argv, out, 100000);
    cr_assert(json_is_true(json_object_get(j, "exactly_once")), "see %s", out);
    const char *keys[] = {"kill9_p50_ms", "kill9_max_ms", "sigterm_p50_ms", "sigterm_max_ms"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        cr_assert(json_integer_value(json_object_get(j, keys[i])) > 0, "key %s present and positive", keys[i]);
    json_int_t published = json_integer_value(json_object_get(j, "published"));
    cr_assert_gt(published, 0);
    cr_assert_eq(json_integer_value(json_object_get(j, "decisions")), published);
    cr_assert_eq(json_integer_value(json_object_get(j, "dead_letters")), 0);
    cr_assert(json_is_integer(json_object_get(j, "publish_errors")), "failed PubAcks are reported; see %s", out);
    cr_assert_eq(json_integer_value(json_object_get(j, "publish_errors")), 0);
    json_decref(j);
    unlink(out);
}

/* bench durability: the four setups (one server and a three-node cluster, each with the default sync_interval
 * and with `always`) run in one invocation, each confirmed by its server's /varz, and every one decides all of
 * its transactions. Behaviour only: the figures are not judged here. */
Test(bench, durability_runs_four_setups, .timeout = 180)
{
    char out[256];
    temp_path(out, sizeof out, ".json");
    const char *argv[] = {"verdict", "bench", "durability", "--count", "40", "--rounds", "1", "--json", NULL};
    json_t *j = run_json(argv, out, 150000);
    cr_assert_str_eq(json_string_value(json_object_get(j, "bench")), "durability");
    json_t *setups = json_object_get(j, "setups");
    cr_assert(json_is_array(setups));
    cr_assert_eq(json_array_size(setups), 4);
    const char *names[] = {"r1-default", "r1-always", "r3-default", "r3-always"};
    const char *sync[] = {"default", "always", "default", "always"};
    const int replicas[] = {1, 1, 3, 3};
    for (size_t i = 0; i < 4; i++) {
        json_t *s = json_array_get(setups, i);
        cr_assert_str_eq(json_string_value(json_object_get(s, "name")), names[i]);
        cr_assert_str_eq(json_string_value(json_object_get(s, "sync")), sync[i]);
        cr_assert_eq(json_integer_value(json_object_get(s, "replicas")), replicas[i]);
        cr_assert_eq(json_integer_value(json_object_get(s, "incomplete")), 0, "%s decided every transaction", names[i]);
        cr_assert(json_number_value(json_object_get(s, "decisions_per_s")) > 0, "%s decided", names[i]);
        cr_assert(json_integer_value(json_object_get(s, "probe_p50_us")) > 0, "%s probed its PubAck latency", names[i]);
        cr_assert(json_string_length(json_object_get(s, "filesystem")) > 0, "%s names the store's filesystem",
                  names[i]);
    }
    cr_assert(file_wait_for(out, "ratio always/default", 0), "the table gives the ratios");
    json_decref(j);
    unlink(out);
}

/* bench scale: 1, 2 and 3 partitioned engines each decide the burst (exactly one decision per transaction, no
 * dead letter), the failover round ends with every partition of the killed engine decided by another, and the
 * JSON carries every documented key. Sanity bounds only, no performance judged. */
Test(bench, scale_runs_one_two_three_engines_and_a_kill, .timeout = 90)
{
    char out[256];
    temp_path(out, sizeof out, ".json");
    const char *argv[] = {"verdict", "bench", "scale", "--count", "600", "--kills", "1", "--rate", "200",
                          "--partitions", "4", "--lease-ttl", "1500ms", "--json", NULL};
    json_t *j = run_json(argv, out, 80000);
    cr_assert_str_eq(json_string_value(json_object_get(j, "bench")), "scale");
    cr_assert_eq(json_integer_value(json_object_get(j, "partitions")), 4);
    cr_assert_eq(json_integer_value(json_object_get(j, "count")), 600);
    const char *nums[] = {"decisions_per_s_1", "decisions_per_s_2", "decisions_per_s_3", "speedup_2", "speedup_3",
                          "failover_p50_ms",   "failover_max_ms",   "failover_partitions_per_kill"};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++)
        cr_assert(json_number_value(json_object_get(j, nums[i])) > 0, "key %s present and positive; see %s", nums[i],
                  out);
    cr_assert_lt(json_integer_value(json_object_get(j, "failover_max_ms")), 15000);
    json_t *runs = json_object_get(j, "runs");
    cr_assert(json_is_array(runs));
    cr_assert_eq(json_array_size(runs), 3);
    const char *run_keys[] = {"decisions_per_s", "seconds", "publish_ms", "cpu_engines_us_per_decision",
                              "cpu_server_us_per_decision"};
    for (size_t r = 0; r < 3; r++) {
        json_t *run = json_array_get(runs, r);
        cr_assert_eq(json_integer_value(json_object_get(run, "engines")), (json_int_t)r + 1);
        cr_assert_eq(json_integer_value(json_object_get(run, "decisions")), 600, "run %zu: one decision each", r);
        cr_assert_eq(json_integer_value(json_object_get(run, "dead_letters")), 0);
        for (size_t i = 0; i < sizeof run_keys / sizeof run_keys[0]; i++)
            cr_assert(json_number_value(json_object_get(run, run_keys[i])) > 0, "run %zu: key %s", r, run_keys[i]);
        const char *counts[] = {"catch_up_reads", "catch_up_msgs", "catch_up_msgs_per_decision"};
        for (size_t i = 0; i < 3; i++)
            cr_assert(json_number_value(json_object_get(run, counts[i])) >= 0 &&
                          json_is_number(json_object_get(run, counts[i])),
                      "run %zu: key %s", r, counts[i]);
    }
    /* with two engines each counts the other's partitions through its catch-up */
    cr_assert_gt(json_integer_value(json_object_get(json_array_get(runs, 1), "catch_up_msgs")), 0);
    json_int_t txns = json_integer_value(json_object_get(j, "transactions"));
    cr_assert_gt(txns, 3 * 600);
    cr_assert_eq(json_integer_value(json_object_get(j, "decisions")), txns, "exactly one decision each; see %s", out);
    cr_assert_eq(json_integer_value(json_object_get(j, "dead_letters")), 0);
    cr_assert_eq(json_integer_value(json_object_get(j, "publish_errors")), 0);
    cr_assert(json_is_true(json_object_get(j, "exactly_once")));
    cr_assert(json_string_length(json_object_get(j, "replication_lag")) > 0, "says why there is no lag");
    json_decref(j);
    unlink(out);
}

Test(bench, scale_bad_options_refused, .timeout = 30)
{
    const char *bad[][2] = {{"--partitions", "2"}, {"--count", "0"}, {"--kills", "x"}, {"--rate", "-1"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char out[256];
        temp_path(out, sizeof out, ".log");
        const char *argv[] = {"verdict", "bench", "scale", bad[i][0], bad[i][1], NULL};
        pid_t pid = verdict_spawn(argv, out);
        cr_assert_eq(child_wait(pid, 20000), 2, "%s %s refused as a usage error", bad[i][0], bad[i][1]);
        unlink(out);
    }
}

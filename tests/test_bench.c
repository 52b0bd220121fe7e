/* test_bench.c - smoke test of `verdict bench`: runs briefly and checks that the JSON line parses and carries
 * every documented key. No timing assertions: performance is judged by the benchmark, not by tests. */
#include "harness.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

Test(bench, json_line_has_every_key, .timeout = 120)
{
    char out[256];
    temp_path(out, sizeof out, ".json");
    const char *argv[] = {"verdict", "bench", "all", "--seconds", "2", "--count", "300", "--rate", "100",
                          "--json", NULL};
    pid_t pid = verdict_spawn(argv, out);
    cr_assert_eq(child_wait(pid, 90000), 0, "bench failed; see %s", out);
    FILE *f = fopen(out, "r");
    cr_assert_not_null(f);
    char line[4096], last[4096] = "";
    while (fgets(line, sizeof line, f))
        if (line[0] == '{')
            strcpy(last, line);
    fclose(f);
    json_error_t err;
    json_t *j = json_loads(last, 0, &err);
    cr_assert_not_null(j, "last line is JSON: %s", last);
    const char *keys[] = {"decisions_per_s", "passthrough_per_s", "ratio",           "decide_p50_us",
                          "decide_p99_us",   "decide_p999_us",    "baseline_p50_us", "baseline_p99_us",
                          "ratio_p99"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        cr_assert(json_is_number(json_object_get(j, keys[i])), "key %s present and numeric", keys[i]);
    cr_assert(json_number_value(json_object_get(j, "decisions_per_s")) > 0);
    cr_assert(json_integer_value(json_object_get(j, "answered")) > 0);
    json_decref(j);
    unlink(out);
}

/* test_gbdt.c - the model evaluator equals xgboost's own predictions (fixture made by tools/gen_gbdt_fixture.py
 * with python3-xgboost, 6000 rows with ~10% missing values), refuses what it does not understand with a
 * message that says why, and allocates nothing per prediction. */
#include "alloccount.h"
#include "featreg.h"
#include "gbdt.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIX VERDICT_SOURCE_DIR "/tests/fixtures/gbdt"

static featreg reg;

Test(gbdt, scores_equal_xgboost_on_6000_rows_with_missing_values)
{
    featreg_init(&reg);
    gbdt *m = NULL;
    verror e = {0};
    cr_assert_eq(gbdt_load_file(FIX "/model.json", &reg, &m, &e), V_OK, "%s", e.msg);
    cr_assert_eq(gbdt_num_trees(m), 40);
    int nf = gbdt_num_features(m);
    cr_assert_eq(nf, 7);
    FILE *f = fopen(FIX "/rows.csv", "r");
    cr_assert_not_null(f);
    char line[1024];
    cr_assert_not_null(fgets(line, sizeof line, f)); /* header */
    static fval vals[FEAT_MAX];
    int rows = 0, missing = 0;
    double worst = 0;
    while (fgets(line, sizeof line, f)) {
        for (int i = 0; i < reg.n; i++)
            vals[i] = (fval){.type = (uint8_t)reg.defs[i].type, .present = false};
        char *p = line;
        for (int c = 0; c < nf; c++) {
            char *comma = strchr(p, ',');
            cr_assert_not_null(comma);
            fval *v = &vals[gbdt_feature_id(m, c)];
            if (comma == p) {
                missing++;
            } else {
                double x = strtod(p, NULL);
                v->present = true;
                if (v->type == FT_BOOL)
                    v->b = x != 0;
                else
                    v->num = x;
            }
            p = comma + 1;
        }
        double want = strtod(p, NULL);
        double got = gbdt_predict(m, vals);
        double d = fabs(got - want);
        if (d > worst)
            worst = d;
        cr_assert_leq(d, 1e-6, "row %d: engine %.9g, xgboost %.9g", rows + 2, got, want);
        rows++;
    }
    fclose(f);
    cr_assert_geq(rows, 5000);
    cr_assert_gt(missing, rows / 2, "the fixture exercises missing values");
    cr_log_info("%d rows, %d missing cells, worst |engine - xgboost| = %.3g", rows, missing, worst);
    gbdt_free(m);
}

Test(gbdt, prediction_allocates_nothing)
{
    featreg_init(&reg);
    gbdt *m = NULL;
    verror e = {0};
    cr_assert_eq(gbdt_load_file(FIX "/model.json", &reg, &m, &e), V_OK, "%s", e.msg);
    static fval vals[FEAT_MAX];
    for (int i = 0; i < reg.n; i++)
        vals[i] = (fval){.type = (uint8_t)reg.defs[i].type, .present = true, .num = 3};
    uint64_t before = alloc_count();
    volatile float s = 0;
    for (int i = 0; i < 10000; i++)
        s += gbdt_predict(m, vals);
    cr_assert_eq(alloc_count() - before, 0);
    gbdt_free(m);
}

/* A one-tree model: split on feature 0 at 10, leaves -1 (left) and 2 (right); default_left per argument. */
static const char *tiny(char *buf, size_t cap, const char *objective, const char *booster, const char *names,
                       int default_left)
{
    snprintf(buf, cap,
             "{\"learner\":{\"feature_names\":%s,\"gradient_booster\":{\"name\":\"%s\",\"model\":{"
             "\"gbtree_model_param\":{\"num_parallel_tree\":\"1\",\"num_trees\":\"1\"},\"trees\":[{"
             "\"left_children\":[1,-1,-1],\"right_children\":[2,-1,-1],\"split_indices\":[0,0,0],"
             "\"split_conditions\":[10,-1,2],\"default_left\":[%d,0,0],\"split_type\":[0,0,0]}]}},"
             "\"learner_model_param\":{\"base_score\":\"5E-1\"},\"objective\":{\"name\":\"%s\"}}}",
             names, booster, default_left, objective);
    return buf;
}

static void refused(const char *json, const char *want)
{
    featreg_init(&reg);
    gbdt *m = NULL;
    verror e = {0};
    cr_assert_eq(gbdt_load_buffer(json, strlen(json), "t.json", &reg, &m, &e), V_EPARSE, "accepted: %s", json);
    cr_assert_null(m);
    cr_assert(strstr(e.msg, want), "message '%s' lacks '%s'", e.msg, want);
    cr_assert(strncmp(e.msg, "t.json", 6) == 0 && strstr(e.msg, "model refused: "), "%s", e.msg);
}

Test(gbdt, semantics_of_a_tiny_model)
{
    char b[2048];
    featreg_init(&reg);
    gbdt *m = NULL;
    verror e = {0};
    const char *j = tiny(b, sizeof b, "binary:logistic", "gbtree", "[\"amount\"]", 1);
    cr_assert_eq(gbdt_load_buffer(j, strlen(j), "t.json", &reg, &m, &e), V_OK, "%s", e.msg);
    static fval vals[FEAT_MAX];
    vals[FEAT_AMOUNT] = (fval){.type = FT_NUM, .present = true, .num = 9.99};
    cr_assert_float_eq(gbdt_margin(m, vals), -1.0, 1e-9, "x < split goes left");
    vals[FEAT_AMOUNT].num = 10;
    cr_assert_float_eq(gbdt_margin(m, vals), 2.0, 1e-9, "x == split goes right");
    vals[FEAT_AMOUNT].present = false;
    cr_assert_float_eq(gbdt_margin(m, vals), -1.0, 1e-9, "missing follows default_left");
    cr_assert_float_eq(gbdt_predict(m, vals), 1.0 / (1.0 + exp(1.0)), 1e-7, "sigmoid of the margin");
    cr_assert_eq(strlen(gbdt_version(m)), 16);
    gbdt_free(m);
    j = tiny(b, sizeof b, "binary:logistic", "gbtree", "[\"amount\"]", 0);
    cr_assert_eq(gbdt_load_buffer(j, strlen(j), "t.json", &reg, &m, &e), V_OK);
    cr_assert_float_eq(gbdt_margin(m, vals), 2.0, 1e-9, "missing goes right when default_left is 0");
    gbdt_free(m);
}

Test(gbdt, refusals_say_why)
{
    char b[2048];
    refused("{not json", "not valid JSON");
    refused("{\"x\":1}", "no 'learner' object");
    refused(tiny(b, sizeof b, "reg:squarederror", "gbtree", "[\"amount\"]", 1), "objective 'reg:squarederror'");
    refused(tiny(b, sizeof b, "binary:logistic", "dart", "[\"amount\"]", 1), "booster 'dart'");
    refused(tiny(b, sizeof b, "binary:logistic", "gbtree", "[\"amout\"]", 1), "feature 'amout' is not in the feature registry");
    refused(tiny(b, sizeof b, "binary:logistic", "gbtree", "[\"card_id\"]", 1), "feature 'card_id' is a string");
    refused(tiny(b, sizeof b, "binary:logistic", "gbtree", "[]", 1), "feature_names is missing or empty");
    const char *bad_child = "{\"learner\":{\"feature_names\":[\"amount\"],\"gradient_booster\":{\"name\":\"gbtree\","
                            "\"model\":{\"trees\":[{\"left_children\":[0,-1,-1],\"right_children\":[2,-1,-1],"
                            "\"split_indices\":[0,0,0],\"split_conditions\":[1,1,1],\"default_left\":[0,0,0]}]}},"
                            "\"learner_model_param\":{\"base_score\":\"0.5\"},\"objective\":{\"name\":"
                            "\"binary:logistic\"}}}";
    refused(bad_child, "out of range");
    featreg_init(&reg);
    gbdt *m = NULL;
    verror e = {0};
    cr_assert_eq(gbdt_load_file("/nonexistent/m.json", &reg, &m, &e), V_EIO);
    cr_assert(strstr(e.msg, "/nonexistent/m.json: cannot open"));
}

/* Found while writing tests/fuzz/fuzz_gbdt.c (its oracle: every prediction is a probability): a leaf value
 * that is finite in JSON but overflows float32 (1e39) loaded as infinity, and one tree at +inf with another
 * at -inf scored NaN, which no rule threshold matches. A base_score that leaves no finite margin (1e-45) made
 * the margin infinite the same way. Both are refused now. */
Test(gbdt, leaves_and_base_score_beyond_float32_are_refused)
{
    char b[2048];
    const char *two_trees =
        "{\"learner\":{\"feature_names\":[\"amount\"],\"gradient_booster\":{\"name\":\"gbtree\",\"model\":{"
        "\"trees\":[{\"left_children\":[1,-1,-1],\"right_children\":[2,-1,-1],\"split_indices\":[0,0,0],"
        "\"split_conditions\":[10,1e39,1e39],\"default_left\":[1,0,0]},"
        "{\"left_children\":[1,-1,-1],\"right_children\":[2,-1,-1],\"split_indices\":[0,0,0],"
        "\"split_conditions\":[10,-1e39,-1e39],\"default_left\":[1,0,0]}]}},"
        "\"learner_model_param\":{\"base_score\":\"0.5\"},\"objective\":{\"name\":\"binary:logistic\"}}}";
    refused(two_trees, "leaf value is not a finite float32 number");
    tiny(b, sizeof b, "binary:logistic", "gbtree", "[\"amount\"]", 1);
    char *bs = strstr(b, "5E-1");
    cr_assert_not_null(bs);
    char tiny_base[2100];
    snprintf(tiny_base, sizeof tiny_base, "%.*s1E-45%s", (int)(bs - b), b, bs + 4);
    refused(tiny_base, "base_score");
}

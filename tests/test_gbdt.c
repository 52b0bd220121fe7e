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

/* Scores every row of a fixture CSV (the model's feature columns, empty = missing, then xgboost's prediction)
 * and asserts each equals xgboost's to 1e-6. Returns the number of rows; *missing counts the empty cells. */
static int score_rows(const gbdt *m, const char *csv, int *missing)
{
    int nf = gbdt_num_features(m);
    FILE *f = fopen(csv, "r");
    cr_assert_not_null(f, "%s", csv);
    char line[1024];
    cr_assert_not_null(fgets(line, sizeof line, f)); /* header */
    static fval vals[FEAT_MAX];
    int rows = 0;
    double worst = 0;
    *missing = 0;
    while (fgets(line, sizeof line, f)) {
        for (int i = 0; i < reg.n; i++)
            vals[i] = (fval){.type = (uint8_t)reg.defs[i].type, .present = false};
        char *p = line;
        for (int c = 0; c < nf; c++) {
            char *comma = strchr(p, ',');
            cr_assert_not_null(comma);
            fval *v = &vals[gbdt_feature_id(m, c)];
            if (comma == p) {
                (*missing)++;
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
        cr_assert_leq(d, 1e-6, "%s row %d: engine %.9g, xgboost %.9g", csv, rows + 2, got, want);
        rows++;
    }
    fclose(f);
    cr_log_info("%s: %d rows, %d missing cells, worst |engine - xgboost| = %.3g", csv, rows, *missing, worst);
    return rows;
}

Test(gbdt, scores_equal_xgboost_on_6000_rows_with_missing_values)
{
    featreg_init(&reg);
    gbdt *m = NULL;
    verror e = {0};
    cr_assert_eq(gbdt_load_file(FIX "/model.json", &reg, &m, &e), V_OK, "%s", e.msg);
    cr_assert_eq(gbdt_num_trees(m), 40);
    cr_assert_eq(gbdt_num_features(m), 7);
    int missing;
    int rows = score_rows(m, FIX "/rows.csv", &missing);
    cr_assert_geq(rows, 5000);
    cr_assert_gt(missing, rows / 2, "the fixture exercises missing values");
    gbdt_free(m);
}

/* num_parallel_tree=4 (a boosted forest, 4 trees per round): xgboost sums every tree, as the engine does, so
 * such a model is accepted and exact (issue 15 found docs/model.md saying it had to be 1). */
Test(gbdt, a_boosted_forest_of_4_parallel_trees_equals_xgboost)
{
    featreg_init(&reg);
    gbdt *m = NULL;
    verror e = {0};
    cr_assert_eq(gbdt_load_file(FIX "/forest.json", &reg, &m, &e), V_OK, "%s", e.msg);
    cr_assert_eq(gbdt_num_trees(m), 40, "10 rounds of 4 parallel trees");
    int missing;
    int rows = score_rows(m, FIX "/forest_rows.csv", &missing);
    cr_assert_eq(rows, 2000);
    cr_assert_gt(missing, rows / 2);
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

/* dst = src with the first occurrence of from replaced by to. */
static const char *subst(char *dst, size_t cap, const char *src, const char *from, const char *to)
{
    const char *at = strstr(src, from);
    cr_assert_not_null(at, "'%s' not in %s", from, src);
    int n = snprintf(dst, cap, "%.*s%s%s", (int)(at - src), src, to, at + strlen(from));
    cr_assert(n > 0 && (size_t)n < cap);
    return dst;
}

static gbdt *accepted(const char *json)
{
    featreg_init(&reg);
    gbdt *m = NULL;
    verror e = {0};
    cr_assert_eq(gbdt_load_buffer(json, strlen(json), "t.json", &reg, &m, &e), V_OK, "%s: %s", e.msg, json);
    return m;
}

/* Issue 15: xgboost writes NaN as the threshold of a categorical split, and jansson refuses the bare NaN token,
 * so a categorical model was refused as "not valid JSON: invalid token near 'NaN'". The fixture is a real one
 * (tools/gen_gbdt_fixture.py: channel_code as a category). */
Test(gbdt, a_categorical_model_is_refused_as_categorical_not_as_bad_json)
{
    char *json;
    size_t len;
    verror e = {0};
    cr_assert_eq(file_read(FIX "/categorical.json", (size_t)1 << 20, &json, &len, &e), V_OK, "%s", e.msg);
    cr_assert(strstr(json, "NaN"), "the fixture holds xgboost's NaN threshold");
    refused(json, "feature 'channel_code' is categorical");
    /* without the feature type, the split itself is refused as categorical */
    char b[8192];
    refused(subst(b, sizeof b, json, "\"c\"", "\"q\""), "tree 0 has categorical splits");
    free(json);
}

Test(gbdt, nan_and_infinity_tokens_get_a_clear_message)
{
    char t[2048], b[2048];
    tiny(t, sizeof t, "binary:logistic", "gbtree", "[\"amount\"]", 1);
    refused(subst(b, sizeof b, t, "[10,-1,2]", "[NaN,-1,2]"), "tree 0 node 0: the split threshold is NaN");
    refused(subst(b, sizeof b, t, "[10,-1,2]", "[10,NaN,2]"), "tree 0 node 1: the leaf value is NaN");
    refused(subst(b, sizeof b, t, "[10,-1,2]", "[Infinity,-1,2]"),
            "tree 0 node 0: the split threshold is not a finite");
    refused(subst(b, sizeof b, t, "[10,-1,2]", "[10,-1,-Infinity]"), "tree 0 node 2: the leaf value is not a finite");
    refused(subst(b, sizeof b, t, "\"5E-1\"", "NaN"), "base_score is NaN");
    refused(subst(b, sizeof b, t, "\"5E-1\"", "\"NaN\""), "base_score nan is not a probability");
    /* a string that spells NaN is a string; a word that only starts like one is still bad JSON */
    refused(subst(b, sizeof b, t, "[\"amount\"]", "[\"NaN\"]"), "feature 'NaN' is not in the feature registry");
    refused(subst(b, sizeof b, t, "[10,-1,2]", "[NaNa,-1,2]"), "not valid JSON");
    refused(subst(b, sizeof b, t, "[10,-1,2]", "[-Inf,-1,2]"), "not valid JSON");
    /* NaN in a field the evaluator does not read (xgboost's training statistics) does not matter */
    gbdt *m =
        accepted(subst(b, sizeof b, t, "\"split_type\"", "\"loss_changes\":[NaN,Infinity,-Infinity],\"split_type\""));
    static fval vals[FEAT_MAX];
    vals[FEAT_AMOUNT] = (fval){.type = FT_NUM, .present = true, .num = 12};
    cr_assert_float_eq(gbdt_margin(m, vals), 2.0, 1e-9);
    gbdt_free(m);
}

/* Issue 15: xgboost >= 3.1 writes base_score as a list in a string ("[5E-1]"), one value per output; it was
 * refused as missing. One value is the base score; more is a multi-output model, which is refused. */
Test(gbdt, base_score_as_a_list_string)
{
    char t[2048], b[2048];
    tiny(t, sizeof t, "binary:logistic", "gbtree", "[\"amount\"]", 1);
    static fval vals[FEAT_MAX];
    vals[FEAT_AMOUNT] = (fval){.type = FT_NUM, .present = true, .num = 9.99};
    gbdt *m = accepted(subst(b, sizeof b, t, "\"5E-1\"", "\"[5E-1]\""));
    cr_assert_float_eq(gbdt_margin(m, vals), -1.0, 1e-9, "base_score [0.5] is a margin of 0");
    gbdt_free(m);
    m = accepted(subst(b, sizeof b, t, "\"5E-1\"", "\"[2.5E-1]\""));
    cr_assert_float_eq(gbdt_margin(m, vals), -1.0 - log(3.0), 1e-6, "base_score [0.25] is a margin of -ln 3");
    gbdt_free(m);
    refused(subst(b, sizeof b, t, "\"5E-1\"", "\"[5E-1,2E-1]\""), "base_score holds 2 values");
    refused(subst(b, sizeof b, t, "\"5E-1\"", "\"[5E-1, 2E-1, 3E-1]\""), "base_score holds 3 values");
    refused(subst(b, sizeof b, t, "\"5E-1\"", "\"[]\""), "base_score is missing or not a number");
    refused(subst(b, sizeof b, t, "\"5E-1\"", "\"[5E-1\""), "base_score is missing or not a number");
    refused(subst(b, sizeof b, t, "\"5E-1\"", "\"[5E-1]x\""), "base_score is missing or not a number");
    refused(subst(b, sizeof b, t, "\"5E-1\"", "\"[1.5]\""), "base_score 1.5 is not a probability");
    /* xgboost >= 2 can grow one tree for several outputs (vector leaves, tree_info all 0): num_target says so */
    refused(subst(b, sizeof b, t, "\"5E-1\"", "\"[5E-1]\",\"num_target\":\"2\""), "num_target is 2");
    gbdt_free(accepted(subst(b, sizeof b, t, "\"5E-1\"", "\"[5E-1]\",\"num_target\":\"1\"")));
}

/* A chain tree of the given depth on amount: split k (node 2k) sends amount < k + 1 to leaf 2k + 1 of value k
 * and the rest on; the last leaf (node 2 * depth) has value depth. */
static char *chain(int depth)
{
    size_t cap = 64 + (size_t)depth * 64;
    char *lc = malloc(cap), *rc = malloc(cap), *si = malloc(cap), *sc = malloc(cap), *dl = malloc(cap);
    cr_assert(lc && rc && si && sc && dl);
    size_t a = 0, b = 0, c = 0, d = 0, f = 0;
    for (int i = 0; i <= 2 * depth; i++) {
        bool split = i % 2 == 0 && i < 2 * depth;
        const char *sep = i ? "," : "";
        a += (size_t)snprintf(lc + a, cap - a, "%s%d", sep, split ? i + 1 : -1);
        b += (size_t)snprintf(rc + b, cap - b, "%s%d", sep, split ? i + 2 : -1);
        c += (size_t)snprintf(si + c, cap - c, "%s0", sep);
        d += (size_t)snprintf(sc + d, cap - d, "%s%d", sep, split ? i / 2 + 1 : i / 2);
        f += (size_t)snprintf(dl + f, cap - f, "%s0", sep);
    }
    size_t jcap = 5 * cap + 512;
    char *json = malloc(jcap);
    cr_assert_not_null(json);
    snprintf(json, jcap,
             "{\"learner\":{\"feature_names\":[\"amount\"],\"gradient_booster\":{\"name\":\"gbtree\",\"model\":{"
             "\"trees\":[{\"left_children\":[%s],\"right_children\":[%s],\"split_indices\":[%s],"
             "\"split_conditions\":[%s],\"default_left\":[%s]}]}},"
             "\"learner_model_param\":{\"base_score\":\"5E-1\"},\"objective\":{\"name\":\"binary:logistic\"}}}",
             lc, rc, si, sc, dl);
    free(lc);
    free(rc);
    free(si);
    free(sc);
    free(dl);
    return json;
}

/* docs/model.md: a tree may be at most 64 deep (the root at depth 0, as xgboost's max_depth counts). */
Test(gbdt, depth_limit_is_64_exactly)
{
    char *j = chain(64);
    gbdt *m = accepted(j);
    free(j);
    static fval vals[FEAT_MAX];
    vals[FEAT_AMOUNT] = (fval){.type = FT_NUM, .present = true};
    const double at[] = {0.5, 1.5, 31.5, 63.5, 64, 1e9};
    const double want[] = {0, 1, 31, 63, 64, 64};
    for (size_t i = 0; i < ARRAY_LEN(at); i++) {
        vals[FEAT_AMOUNT].num = at[i];
        cr_assert_float_eq(gbdt_margin(m, vals), want[i], 1e-9, "amount %g", at[i]);
    }
    gbdt_free(m);
    j = chain(65);
    refused(j, "tree 0 is 65 deep, at most 64 is supported");
    free(j);
}

/* The 9 built-in features a model can read (numbers and booleans; the other 14 built-ins are strings or the
 * score), then count(card_id,1m) .. count(card_id,<n - 9>m); one split on the last. */
static char *wide(int n)
{
    static const char *const builtin[] = {"created_at_ms", "amount_minor",        "mcc",
                                          "amount",        "hour_of_day",         "day_of_week",
                                          "cross_border",  "ip_country_mismatch", "channel_code"};
    size_t cap = (size_t)n * 32 + 1024;
    char *json = malloc(cap);
    cr_assert_not_null(json);
    size_t k = (size_t)snprintf(json, cap, "{\"learner\":{\"feature_names\":[");
    for (int i = 0; i < n; i++) {
        if (i < 9)
            k += (size_t)snprintf(json + k, cap - k, "%s\"%s\"", i ? "," : "", builtin[i]);
        else
            k += (size_t)snprintf(json + k, cap - k, ",\"count(card_id,%dm)\"", i - 8);
    }
    snprintf(json + k, cap - k,
             "],\"gradient_booster\":{\"name\":\"gbtree\",\"model\":{\"trees\":[{\"left_children\":[1,-1,-1],"
             "\"right_children\":[2,-1,-1],\"split_indices\":[%d,0,0],\"split_conditions\":[3,-1,2],"
             "\"default_left\":[1,0,0]}]}},\"learner_model_param\":{\"base_score\":\"5E-1\"},"
             "\"objective\":{\"name\":\"binary:logistic\"}}}",
             n - 1);
    return json;
}

/* "At most 256 features" is the feature registry's size: the 23 built-ins and every velocity, list, profile and
 * attribute feature of the rules and the model share it. With no rules a model can name the 9 numeric or
 * boolean built-ins and 233 more: 242 features. */
Test(gbdt, feature_limit_is_the_shared_registry_of_256)
{
    cr_assert_eq(FEAT_MAX, 256);
    cr_assert_eq(FEAT_BUILTIN_COUNT, 23);
    char *j = wide(242);
    gbdt *m = accepted(j);
    cr_assert_eq(gbdt_num_features(m), 242);
    cr_assert_eq(reg.n, FEAT_MAX, "the registry is full");
    static fval vals[FEAT_MAX];
    for (int i = 0; i < reg.n; i++)
        vals[i] = (fval){.type = (uint8_t)reg.defs[i].type, .present = false};
    int last = gbdt_feature_id(m, 241);
    cr_assert_str_eq(reg.defs[last].name, "count(card_id,233m)");
    vals[last] = (fval){.type = FT_NUM, .present = true, .num = 5};
    cr_assert_float_eq(gbdt_margin(m, vals), 2.0, 1e-9, "the 242nd feature is read");
    gbdt_free(m);

    /* a rule's feature takes a place too: the same model no longer fits */
    featreg_init(&reg);
    verror e = {0};
    cr_assert_geq(featreg_resolve(&reg, "count(card_id,24h)", 18, &e), 0, "%s", e.msg);
    cr_assert_eq(gbdt_load_buffer(j, strlen(j), "t.json", &reg, &m, &e), V_EPARSE);
    cr_assert(strstr(e.msg, "feature 'count(card_id,233m)' does not fit: the feature registry holds 256 features"),
              "%s", e.msg);
    cr_assert(strstr(e.msg, "this model names 242"), "%s", e.msg);
    free(j);

    j = wide(243);
    refused(j, "feature 'count(card_id,234m)' does not fit: the feature registry holds 256 features");
    free(j);
}

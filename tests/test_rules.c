/* test_rules.c - the rule language: each diagnostic at its line:column, every operator, precedence, the
 * three-valued treatment of missing values, outcome precedence, the shipped rules, and zero allocation. */
#include "alloccount.h"
#include "featreg.h"
#include "rules.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static featreg reg;
static fval vals[FEAT_MAX];

static ruleset *compile_ok(const char *src)
{
    featreg_init(&reg);
    ruleset *rs = NULL;
    rules_diag d = {0};
    vstatus s = rules_compile(src, strlen(src), "t.rules", &reg, &rs, &d);
    cr_assert_eq(s, V_OK, "did not compile:\n%s", d.text ? d.text : "");
    rules_diag_free(&d);
    return rs;
}

/* Compiles src expecting failure; asserts the first error's position and that its message contains want. */
static void compile_err(const char *src, int line, int col, const char *want)
{
    featreg_init(&reg);
    ruleset *rs = NULL;
    rules_diag d = {0};
    vstatus s = rules_compile(src, strlen(src), "t.rules", &reg, &rs, &d);
    cr_assert_eq(s, V_EPARSE, "compiled but should not: %s", src);
    cr_assert_null(rs);
    cr_assert_geq(d.errors, 1);
    cr_assert_eq(d.first_line, line, "line %d, want %d:\n%s", d.first_line, line, d.text);
    cr_assert_eq(d.first_col, col, "col %d, want %d:\n%s", d.first_col, col, d.text);
    cr_assert(strstr(d.text, want), "message lacks '%s':\n%s", want, d.text);
    char pos[32];
    snprintf(pos, sizeof pos, "t.rules:%d:%d: error:", line, col);
    cr_assert(strstr(d.text, pos), "no '%s' in:\n%s", pos, d.text);
    cr_assert(strstr(d.text, "^\n"), "no caret line:\n%s", d.text);
    rules_diag_free(&d);
}

/* Transaction-like values, all present. */
static void base_vals(void)
{
    for (int i = 0; i < reg.n; i++) {
        vals[i].type = (uint8_t)reg.defs[i].type;
        vals[i].present = false;
        vals[i].num = 0;
    }
#define S(id, s) vals[id] = (fval){.type = FT_STR, .present = true, .str = {.ptr = (s), .len = sizeof(s) - 1}}
#define N(id, x) vals[id] = (fval){.type = FT_NUM, .present = true, .num = (x)}
    S(FEAT_TXN_ID, "t1");
    S(FEAT_CARD_ID, "card_1");
    S(FEAT_CURRENCY, "EUR");
    S(FEAT_CHANNEL, "ecom");
    S(FEAT_CARD_COUNTRY, "DE");
    S(FEAT_MERCHANT_COUNTRY, "FR");
    S(FEAT_CARD_BIN, "411111");
    N(FEAT_AMOUNT_MINOR, 12345);
    N(FEAT_AMOUNT, 123.45);
    N(FEAT_MCC, 5411);
    N(FEAT_HOUR_OF_DAY, 3);
    vals[FEAT_CROSS_BORDER] = (fval){.type = FT_BOOL, .present = true, .b = true};
}

/* Evaluates "rule r decline \"x\" when <cond>" over base_vals (plus tweak) and returns 1/0/-1. */
static int cond(const char *c)
{
    char src[1024];
    snprintf(src, sizeof src, "list blocked_cards\nrule r decline \"x\" when %s\n", c);
    ruleset *rs = compile_ok(src);
    base_vals();
    int v = rules_eval_one(rs, 0, vals);
    rules_free(rs);
    return v;
}

/* ---- diagnostics: one test per message, each at its line:column ---- */

Test(rules_errors, unknown_field_with_suggestion) { compile_err("rule a decline \"x\" when amout > 5", 1, 25, "unknown field 'amout' (did you mean 'amount'?)"); }
Test(rules_errors, string_compared_with_number) { compile_err("rule a decline \"x\"\n  when card_country == 5", 2, 21, "cannot compare string 'card_country' with number '5'"); }
Test(rules_errors, window_not_a_duration) { compile_err("rule a review \"x\" when count(card_id, 10) > 3", 1, 39, "the window must be a duration"); }
Test(rules_errors, window_out_of_range) { compile_err("rule a review \"x\" when count(card_id, 30s) > 3", 1, 39, "between 1m and 24h"); }
Test(rules_errors, undeclared_list) { compile_err("rule a decline \"x\" when card_id in list(\"nope\")", 1, 41, "list \"nope\" is not declared"); }
Test(rules_errors, missing_and) { compile_err("rule a decline \"x\" when amount > 5 amount < 3", 1, 36, "a missing `and`/`or`?"); }
Test(rules_errors, ordering_strings) { compile_err("rule a decline \"x\" when card_id < \"b\"", 1, 33, "only numbers are ordered"); }
Test(rules_errors, arithmetic_on_string) { compile_err("rule a decline \"x\" when card_id + 1 > 2", 1, 33, "arithmetic needs a number"); }
Test(rules_errors, and_on_number) { compile_err("rule a decline \"x\" when amount and true", 1, 32, "`and` needs a boolean"); }
Test(rules_errors, condition_not_boolean) { compile_err("rule a decline \"x\" when amount + 1", 1, 25, "a rule's condition needs a boolean"); }
Test(rules_errors, unterminated_string) { compile_err("rule a decline \"x\" when card_id == \"abc", 1, 36, "unterminated string"); }
Test(rules_errors, single_equals) { compile_err("rule a decline \"x\" when amount = 5", 1, 32, "use == to compare"); }
Test(rules_errors, unexpected_character) { compile_err("rule a decline \"x\" when amount > 5 @", 1, 36, "unexpected character '@'"); }
Test(rules_errors, unknown_outcome) { compile_err("rule a block \"x\" when amount > 5", 1, 8, "expected an outcome"); }
Test(rules_errors, missing_reason) { compile_err("rule a decline when amount > 5", 1, 16, "expected the reason text"); }
Test(rules_errors, missing_when) { compile_err("rule a decline \"x\" amount > 5", 1, 20, "expected `when`"); }
Test(rules_errors, duplicate_rule_id) { compile_err("rule a decline \"x\" when amount > 5\nrule a review \"y\" when amount > 1", 2, 6, "rule id a is used twice"); }
Test(rules_errors, unknown_function) { compile_err("rule a decline \"x\" when avg(amount) > 5", 1, 25, "unknown function 'avg'"); }
Test(rules_errors, unknown_profile_field) { compile_err("rule a decline \"x\" when profile.age > 5", 1, 33, "unknown profile field 'age'"); }
Test(rules_errors, velocity_key_must_be_string) { compile_err("rule a decline \"x\" when count(amount_minor, 1h) > 5", 1, 31, "must be a string field"); }
Test(rules_errors, set_element_type) { compile_err("rule a decline \"x\" when mcc in [5411, \"x\"]", 1, 39, "this element is a string"); }
Test(rules_errors, chained_comparison) { compile_err("rule a decline \"x\" when 1 < amount < 5", 1, 36, "comparisons do not chain"); }
Test(rules_errors, list_needs_a_field) { compile_err("list l\nrule a decline \"x\" when (card_id) in list(\"l\")", 2, 35, "list membership tests a field directly"); }
Test(rules_errors, duration_outside_window) { compile_err("rule a decline \"x\" when amount > 10m", 1, 34, "a duration is only valid as the window"); }
Test(rules_errors, too_deep) {
    char src[512] = "rule a decline \"x\" when ";
    for (int i = 0; i < 70; i++)
        strcat(src, "(");
    strcat(src, "true");
    compile_err(src, 1, 25 + 64, "nested more than 64 deep");
}
Test(rules_errors, no_rules) { compile_err("# nothing\nlist l\n", 1, 1, "no rules"); }
Test(rules_errors, top_level_garbage) { compile_err("when amount > 5", 1, 1, "expected `rule` or `list`"); }

Test(rules_errors, every_error_reported_and_good_rules_ignored)
{
    const char *src = "rule a decline \"x\" when amout > 5\n"
                      "rule ok review \"fine\" when amount > 1\n"
                      "rule b review \"y\"\n  when card_country == 5\n"
                      "rule c review \"z\" when count(card_id, 10) > 3\n";
    featreg_init(&reg);
    ruleset *rs = NULL;
    rules_diag d = {0};
    cr_assert_eq(rules_compile(src, strlen(src), "t.rules", &reg, &rs, &d), V_EPARSE);
    cr_assert_eq(d.errors, 3, "%s", d.text);
    cr_assert(strstr(d.text, "t.rules:4:21:") && strstr(d.text, "t.rules:5:39:"), "%s", d.text);
    rules_diag_free(&d);
}

Test(rules_errors, nul_bytes_refused)
{
    featreg_init(&reg);
    ruleset *rs = NULL;
    rules_diag d = {0};
    cr_assert_eq(rules_compile("rule a\0", 7, "t.rules", &reg, &rs, &d), V_EPARSE);
    cr_assert(strstr(d.text, "NUL"));
    rules_diag_free(&d);
}

Test(rules_errors, unreadable_file)
{
    featreg_init(&reg);
    ruleset *rs = NULL;
    rules_diag d = {0};
    cr_assert_eq(rules_compile_file("/nonexistent/x.rules", &reg, &rs, &d), V_EIO);
    cr_assert(strstr(d.text, "/nonexistent/x.rules: error: cannot open"));
    rules_diag_free(&d);
}

/* ---- the evaluator ---- */

Test(rules_eval, arithmetic_and_comparisons)
{
    cr_assert_eq(cond("amount_minor == 12345"), 1);
    cr_assert_eq(cond("amount_minor != 12345"), 0);
    cr_assert_eq(cond("amount > 123.44 and amount < 123.46"), 1);
    cr_assert_eq(cond("amount >= 123.45 and amount <= 123.45"), 1);
    cr_assert_eq(cond("amount_minor / 100 == amount"), 1);
    cr_assert_eq(cond("amount_minor % 100 == 45"), 1);
    cr_assert_eq(cond("amount_minor - 45 == 12300"), 1);
    cr_assert_eq(cond("2 + 3 * 4 == 14"), 1, "* binds tighter than +");
    cr_assert_eq(cond("(2 + 3) * 4 == 20"), 1);
    cr_assert_eq(cond("10 - 4 - 3 == 3"), 1, "- is left-associative");
    cr_assert_eq(cond("-amount < 0"), 1);
    cr_assert_eq(cond("1_000_000 == 1000000"), 1);
    cr_assert_eq(cond("card_country == \"DE\""), 1);
    cr_assert_eq(cond("card_country != \"DE\""), 0);
    cr_assert_eq(cond("cross_border == true"), 1);
    cr_assert_eq(cond("cross_border"), 1);
}

Test(rules_eval, logic_and_precedence)
{
    cr_assert_eq(cond("true or false and false"), 1, "and binds tighter than or");
    cr_assert_eq(cond("(true or false) and false"), 0);
    cr_assert_eq(cond("not false and true"), 1, "not binds tighter than and");
    cr_assert_eq(cond("not (amount > 100)"), 0);
    cr_assert_eq(cond("not not cross_border"), 1);
}

Test(rules_eval, sets_and_prefixes)
{
    cr_assert_eq(cond("mcc in [5411, 5812]"), 1);
    cr_assert_eq(cond("mcc in [7995]"), 0);
    cr_assert_eq(cond("mcc not in [7995]"), 1);
    cr_assert_eq(cond("currency in [\"USD\", \"EUR\"]"), 1);
    cr_assert_eq(cond("card_bin starts_with \"4111\""), 1);
    cr_assert_eq(cond("card_bin starts_with [\"5500\", \"41\"]"), 1);
    cr_assert_eq(cond("card_bin starts_with \"41111122\""), 0, "a prefix longer than the value");
    cr_assert_eq(cond("mcc in [-1, 5411]"), 1);
}

Test(rules_eval, missing_values_are_unknown_and_never_fire)
{
    /* device_id and profile fields are missing in base_vals */
    cr_assert_eq(cond("device_id == \"d\""), -1);
    cr_assert_eq(cond("device_id != \"d\""), -1);
    cr_assert_eq(cond("not (device_id == \"d\")"), -1, "not unknown is unknown");
    cr_assert_eq(cond("profile.account_age_days < 7"), -1);
    cr_assert_eq(cond("profile.account_age_days + 1 > 0"), -1, "arithmetic on missing is missing");
    cr_assert_eq(cond("device_id == \"d\" and false"), 0, "false dominates and");
    cr_assert_eq(cond("device_id == \"d\" or true"), 1, "true dominates or");
    cr_assert_eq(cond("device_id == \"d\" or false"), -1);
    cr_assert_eq(cond("device_id in [\"a\"]"), -1);
    cr_assert_eq(cond("device_id is missing"), 1);
    cr_assert_eq(cond("device_id is present"), 0);
    cr_assert_eq(cond("card_id is not missing"), 1);
    cr_assert_eq(cond("score >= 0.9"), -1, "no model score: model rules stay silent");
    cr_assert_eq(cond("amount / 0 > 1"), -1, "division by zero is missing");
}

Test(rules_eval, attributes_and_lists)
{
    ruleset *rs = compile_ok("list blocked_cards\n"
                             "rule a decline \"x\" when card_id in list(\"blocked_cards\")\n"
                             "rule b review \"y\" when attributes.three_ds == \"failed\"\n");
    base_vals();
    int lid = featreg_find(&reg, "in_list(card_id,blocked_cards)", 30);
    int aid = featreg_find(&reg, "attributes.three_ds", 19);
    cr_assert(lid >= FEAT_BUILTIN_COUNT && aid >= FEAT_BUILTIN_COUNT);
    cr_assert_eq(rules_eval_one(rs, 0, vals), -1, "replica not loaded: unknown");
    vals[lid] = (fval){.type = FT_BOOL, .present = true, .b = true};
    vals[aid] = (fval){.type = FT_STR, .present = true, .str = {"failed", 6}};
    cr_assert_eq(rules_eval_one(rs, 0, vals), 1);
    cr_assert_eq(rules_eval_one(rs, 1, vals), 1);
    rules_free(rs);
}

Test(rules_eval, velocity_names_bind_to_registry_features)
{
    ruleset *rs = compile_ok("rule v review \"x\" when count(card_id, 10m) >= 5 and sum(amount_minor, card_id, 24h) > 100"
                             " and distinct(card_id, device_id, 24h) > 2\n");
    cr_assert_geq(featreg_find(&reg, "count(card_id,10m)", 18), FEAT_BUILTIN_COUNT);
    cr_assert_geq(featreg_find(&reg, "sum(amount_minor,card_id,24h)", 29), FEAT_BUILTIN_COUNT);
    cr_assert_geq(featreg_find(&reg, "distinct(card_id,device_id,24h)", 31), FEAT_BUILTIN_COUNT);
    base_vals();
    cr_assert_eq(rules_eval_one(rs, 0, vals), -1, "no velocity state: unknown");
    vals[featreg_find(&reg, "count(card_id,10m)", 18)] = (fval){.type = FT_NUM, .present = true, .num = 5};
    vals[featreg_find(&reg, "sum(amount_minor,card_id,24h)", 29)] = (fval){.type = FT_NUM, .present = true, .num = 101};
    vals[featreg_find(&reg, "distinct(card_id,device_id,24h)", 31)] = (fval){.type = FT_NUM, .present = true, .num = 3};
    cr_assert_eq(rules_eval_one(rs, 0, vals), 1);
    rules_free(rs);
}

/* ---- outcomes ---- */

static const char *outcome_src = "list vip\n"
                                 "rule small approve \"small\" when amount < 10\n"
                                 "rule mid review \"mid\" when amount >= 100\n"
                                 "rule big decline \"big\" when amount >= 1000\n"
                                 "rule vip allow \"vip merchant\" when merchant_id in list(\"vip\")\n";

Test(rules_outcome, most_severe_match_wins_and_all_matches_are_reported)
{
    ruleset *rs = compile_ok(outcome_src);
    base_vals();
    rules_result r;
    vals[FEAT_AMOUNT].num = 5000;
    rules_eval(rs, vals, &r);
    cr_assert_eq(r.outcome, RO_DECLINE);
    cr_assert_eq(r.n_matches, 2);
    cr_assert_str_eq(rules_id(rs, r.match[0]), "mid", "matches in file order");
    cr_assert_str_eq(rules_id(rs, r.match[1]), "big");
    vals[FEAT_AMOUNT].num = 500;
    rules_eval(rs, vals, &r);
    cr_assert_eq(r.outcome, RO_REVIEW);
    vals[FEAT_AMOUNT].num = 5;
    rules_eval(rs, vals, &r);
    cr_assert_eq(r.outcome, RO_APPROVE);
    cr_assert_eq(r.n_matches, 1, "an approve rule is reported as a reason");
    vals[FEAT_AMOUNT].num = 50;
    rules_eval(rs, vals, &r);
    cr_assert_eq(r.outcome, RO_APPROVE);
    cr_assert_eq(r.n_matches, 0, "no match approves with no reason");
    rules_free(rs);
}

Test(rules_outcome, allow_overrides_decline_and_is_reported_with_it)
{
    ruleset *rs = compile_ok(outcome_src);
    base_vals();
    int vip = featreg_find(&reg, "in_list(merchant_id,vip)", 24);
    vals[vip] = (fval){.type = FT_BOOL, .present = true, .b = true};
    vals[FEAT_AMOUNT].num = 5000;
    rules_result r;
    rules_eval(rs, vals, &r);
    cr_assert_eq(r.outcome, RO_APPROVE);
    cr_assert(r.allowed);
    cr_assert_eq(r.n_matches, 3, "the overridden matches stay visible");
    rules_free(rs);
}

Test(rules_outcome, many_matches_are_capped_but_counted)
{
    char src[16384] = "";
    for (int i = 0; i < 40; i++)
        snprintf(src + strlen(src), sizeof src - strlen(src), "rule r%d review \"x\" when amount > %d\n", i, i);
    ruleset *rs = compile_ok(src);
    base_vals();
    rules_result r;
    rules_eval(rs, vals, &r);
    cr_assert_eq(r.n_matches, RULES_MAX_MATCHES);
    cr_assert_eq(r.n_matched_total, 40);
    rules_free(rs);
}

/* ---- the shipped rules ---- */

Test(rules_default, compiles_and_decides_known_cases)
{
    featreg_init(&reg);
    ruleset *rs = NULL;
    rules_diag d = {0};
    cr_assert_eq(rules_compile_file(VERDICT_SOURCE_DIR "/rules/default.rules", &reg, &rs, &d), V_OK, "%s", d.text);
    cr_assert_geq(rules_count(rs), 15);
    base_vals();
    rules_result r;
    rules_eval(rs, vals, &r);
    cr_assert_eq(r.outcome, RO_DECLINE, "411111 is a retired test BIN");
    S(FEAT_CARD_BIN, "520000");
    vals[FEAT_CROSS_BORDER].b = false;
    rules_eval(rs, vals, &r);
    cr_assert_eq(r.outcome, RO_APPROVE);
    cr_assert_eq(r.n_matches, 0);
    int score = FEAT_SCORE;
    vals[score] = (fval){.type = FT_NUM, .present = true, .num = 0.95};
    rules_eval(rs, vals, &r);
    cr_assert_eq(r.outcome, RO_DECLINE);
    cr_assert_str_eq(rules_id(rs, r.match[0]), "model_high_risk");
    rules_free(rs);
    rules_diag_free(&d);
}

Test(rules_default, version_is_a_content_hash)
{
    ruleset *a = compile_ok("rule a review \"x\" when amount > 1\n");
    ruleset *b = compile_ok("rule a review \"x\" when amount > 1\n");
    ruleset *c = compile_ok("rule a review \"x\" when amount > 2\n");
    cr_assert_str_eq(rules_version(a), rules_version(b));
    cr_assert_str_neq(rules_version(a), rules_version(c));
    cr_assert_eq(strlen(rules_version(a)), 16);
    rules_free(a);
    rules_free(b);
    rules_free(c);
}

Test(rules_eval, evaluation_allocates_nothing)
{
    featreg_init(&reg);
    ruleset *rs = NULL;
    rules_diag d = {0};
    cr_assert_eq(rules_compile_file(VERDICT_SOURCE_DIR "/rules/default.rules", &reg, &rs, &d), V_OK);
    base_vals();
    rules_result r;
    uint64_t before = alloc_count();
    for (int i = 0; i < 10000; i++) {
        vals[FEAT_AMOUNT].num = i;
        rules_eval(rs, vals, &r);
    }
    cr_assert_eq(alloc_count() - before, 0);
    rules_free(rs);
}

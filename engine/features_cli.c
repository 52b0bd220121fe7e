/* features_cli.c - `verdict features`: the training table, computed by the engine itself.
 *
 * One source of truth for features: the same registry, transaction/derived stage and velocity state that
 * decide in production compute every column here, over transactions from the synthetic payments world (in
 * event-time order, each from the state before it, as live). A model trained on this table reads exactly
 * what the engine will give it. */
#include "cli.h"
#include "featreg.h"
#include "simgen.h"
#include "velocity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The shipped model's inputs (docs/model.md). */
static const char *default_features =
    "amount,amount_minor,mcc,hour_of_day,day_of_week,cross_border,ip_country_mismatch,channel_code,"
    "count(card_id,10m),count(card_id,1h),count(card_id,24h),sum(amount_minor,card_id,1h),"
    "sum(amount_minor,card_id,24h),distinct(card_id,device_id,24h),distinct(card_id,ip_country,24h),"
    "distinct(card_id,merchant_country,24h),count(device_id,1h),distinct(ip,card_id,1h),count(account_id,24h)";

static void features_help(void)
{
    printf("usage: verdict features [--count N] [--seed N] [--fraud-rate R] [--features LIST] [--out FILE]\n\n"
           "Generates N transactions (default 200000) from the synthetic payments world (seed, default 1) and\n"
           "writes a CSV: one column per feature, computed by the engine exactly as it decides (velocity from\n"
           "the state before each transaction, in event-time order), then `label` (the fraud pattern or legit)\n"
           "and `is_fraud` (0/1). Empty cells are missing values. tools/train_model.py trains on it.\n\n"
           "  --features LIST   comma-separated canonical feature names (default: the shipped model's)\n"
           "  --fraud-rate R    share of transactions in fraud patterns (default 0.02)\n"
           "  --out FILE        write there instead of stdout\n");
}

/* Splits a comma list at top level (commas inside parentheses belong to the name). */
static int split_features(const char *s, char names[][FEAT_NAME_MAX], int max)
{
    int n = 0, depth = 0;
    size_t len = 0;
    for (const char *p = s;; p++) {
        if (*p == 0 || (*p == ',' && depth == 0)) {
            if (len && n < max) {
                names[n][len] = 0;
                n++;
            }
            len = 0;
            if (*p == 0)
                break;
            continue;
        }
        depth += *p == '(' ? 1 : *p == ')' ? -1 : 0;
        if (*p != ' ' && n < max && len < FEAT_NAME_MAX - 1)
            names[n][len++] = *p;
    }
    return n;
}

int cmd_features(int argc, char **argv)
{
    long count = 200000;
    uint64_t seed = 1;
    double fraud_rate = 0;
    const char *list = default_features, *outp = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            features_help();
            return 0;
        } else if (strcmp(a, "--count") == 0 && v && atol(v) > 0) {
            count = atol(v);
            i++;
        } else if (strcmp(a, "--seed") == 0 && v) {
            seed = strtoull(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--fraud-rate") == 0 && v && atof(v) > 0 && atof(v) < 1) {
            fraud_rate = atof(v);
            i++;
        } else if (strcmp(a, "--features") == 0 && v) {
            list = v;
            i++;
        } else if (strcmp(a, "--out") == 0 && v) {
            outp = v;
            i++;
        } else {
            fprintf(stderr, "verdict features: unknown or incomplete option '%s' (see --help)\n", a);
            return 2;
        }
    }
    static featreg reg;
    featreg_init(&reg);
    static char names[FEAT_MAX][FEAT_NAME_MAX];
    int nf = split_features(list, names, FEAT_MAX);
    int ids[FEAT_MAX];
    for (int i = 0; i < nf; i++) {
        verror e = {0};
        ids[i] = featreg_resolve(&reg, names[i], strlen(names[i]), &e);
        if (ids[i] < 0) {
            fprintf(stderr, "verdict features: %s\n", e.msg);
            return 2;
        }
        if (reg.defs[ids[i]].type == FT_STR) {
            fprintf(stderr, "verdict features: '%s' is a string; a model reads numbers and booleans\n", names[i]);
            return 2;
        }
    }
    velocity *vel = NULL;
    verror e = {0};
    velocity_cfg vc = {.max_keys = 200000};
    static velocity_plan vp;
    velocity_plan_init(&vp, &reg);
    if (velocity_new(&vp, &vc, &vel, &e) != V_OK) {
        fprintf(stderr, "verdict features: %s\n", e.msg);
        return 1;
    }
    simgen_cfg gc = {.seed = seed, .fraud_rate = fraud_rate};
    simgen *g = simgen_create(&gc);
    FILE *out = outp ? fopen(outp, "w") : stdout;
    if (!g || !out) {
        fprintf(stderr, "verdict features: cannot %s\n", !g ? "create the generator" : "open the output file");
        velocity_free(vel);
        simgen_destroy(g);
        return 1;
    }
    for (int i = 0; i < nf; i++)
        fprintf(out, "%s\"%s\"", i ? "," : "", reg.defs[ids[i]].name);
    fprintf(out, ",label,is_fraud\n");
    static fval vals[FEAT_MAX];
    long fraud = 0;
    int64_t t0 = mono_ns(), last = t0;
    for (long k = 0; k < count; k++) {
        Transaction t;
        const char *label = simgen_next(g, &t);
        features_from_txn(&reg, &t, t.created_at_ms, vals);
        velocity_features_and_add(vel, &vp, vals, t.created_at_ms);
        for (int i = 0; i < nf; i++) {
            const fval *v = &vals[ids[i]];
            if (i)
                fputc(',', out);
            if (!v->present)
                continue;
            if (v->type == FT_BOOL)
                fputc(v->b ? '1' : '0', out);
            else
                fprintf(out, "%.17g", v->num);
        }
        bool is_fraud = simgen_is_fraud(label);
        fraud += is_fraud;
        fprintf(out, ",%s,%d\n", label, is_fraud ? 1 : 0);
        if (mono_ns() - last > 2000000000LL) {
            last = mono_ns();
            fprintf(stderr, "features: %ld/%ld transactions\n", k + 1, count);
        }
    }
    fprintf(stderr, "features: %ld transactions, %ld fraud (%.2f%%), %d features, %.1f s\n", count, fraud,
            100.0 * (double)fraud / (double)count, nf, (double)(mono_ns() - t0) / 1e9);
    if (outp)
        fclose(out);
    simgen_destroy(g);
    velocity_free(vel);
    return 0;
}

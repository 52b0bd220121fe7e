/* bench_eval.c - `verdict bench eval` and `verdict bench model`: the decision step without a broker.
 *
 * eval: realistic synthetic transactions, pre-encoded, each decoded (arena) and decided by the default rules,
 * the shipped model and live velocity state, as a worker does; reports ns per transaction, the stage split and
 * the allocation count over the timed loop (counted by alloccount.h, not assumed).
 * model: ns per prediction of the shipped model on the same feature rows, single row at a time and over a
 * batch of rows, and xgboost's own single-row predict on the same rows in the same run, for the ratio. */
#include "alloccount.h"
#include "cli.h"
#include "codec.h"
#include "decide.h"
#include "gbdt.h"
#include "simgen.h"
#include "velocity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RULES_DEFAULT VERDICT_SOURCE_DIR "/rules/default.rules"
#define MODEL_DEFAULT VERDICT_SOURCE_DIR "/models/verdict-gbdt.json"

typedef struct args {
    int count;
    bool json;
    const char *rules, *model;
} args;

static int parse(int argc, char **argv, const char *what, args *a)
{
    *a = (args){.count = 100000, .rules = RULES_DEFAULT, .model = MODEL_DEFAULT};
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(s, what))
            continue;
        if (!strcmp(s, "--json"))
            a->json = true;
        else if (!strcmp(s, "--count") && v && atoi(v) > 0)
            a->count = atoi(v), i++;
        else if (!strcmp(s, "--rules") && v)
            a->rules = v, i++;
        else if (!strcmp(s, "--model") && v)
            a->model = v, i++;
        else if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            printf("usage: verdict bench %s [--count N] [--rules FILE] [--model FILE] [--json]\n"
                   "No broker: %s. Defaults: rules/default.rules, models/verdict-gbdt.json, 100000 transactions.\n",
                   what, strcmp(what, "eval") == 0 ? "decode + features + velocity + model + rules per transaction"
                                                   : "model predictions vs xgboost's Python single-row predict");
            return 0;
        } else {
            fprintf(stderr, "verdict bench %s: unknown option '%s'\n", what, s);
            return 2;
        }
    }
    return -1;
}

/* count synthetic transactions, encoded back to back; offsets in off[count+1]. */
static unsigned char *encode_txns(int count, size_t **off_out)
{
    simgen_cfg gc = {.seed = 7};
    simgen *g = simgen_create(&gc);
    size_t cap = (size_t)count * 400, n = 0;
    unsigned char *buf = malloc(cap);
    size_t *off = malloc(((size_t)count + 1) * sizeof *off);
    if (!g || !buf || !off) {
        simgen_destroy(g);
        free(buf);
        free(off);
        return NULL;
    }
    for (int i = 0; i < count; i++) {
        Transaction t;
        simgen_next(g, &t);
        size_t need = verdict__v1__transaction__get_packed_size(&t);
        if (n + need > cap) {
            cap *= 2;
            unsigned char *nb = realloc(buf, cap);
            if (!nb)
                break;
            buf = nb;
        }
        off[i] = n;
        n += verdict__v1__transaction__pack(&t, buf + n);
        off[i + 1] = n;
    }
    simgen_destroy(g);
    *off_out = off;
    return buf;
}

int bench_eval(int argc, char **argv)
{
    args a;
    int rc = parse(argc, argv, "eval", &a);
    if (rc >= 0)
        return rc;
    policy *p = NULL;
    rules_diag d = {0};
    if (policy_load(a.rules, a.model, &p, &d) != V_OK) {
        fprintf(stderr, "%sverdict bench eval: the rules or model do not load\n", d.text ? d.text : "");
        rules_diag_free(&d);
        return 1;
    }
    velocity *vel = NULL;
    verror e = {0};
    velocity_cfg vc = {.max_keys = 100000};
    size_t *off = NULL;
    unsigned char *buf = encode_txns(a.count, &off);
    arena ar;
    if (!buf || velocity_new(policy_velocity_plan(p), &vc, &vel, &e) != V_OK || arena_init(&ar, 1 << 20) != V_OK) {
        fprintf(stderr, "verdict bench eval: setup failed: %s\n", e.msg);
        return 1;
    }
    static fval vals[FEAT_MAX];
    decide_env env = {.vel = vel};
    decide_out out;
    int64_t stage[3] = {0};
    long outcomes[4] = {0};
    /* warm-up pass over the first tenth (fills caches and velocity keys), then the timed pass */
    for (int pass = 0; pass < 2; pass++) {
        int n = pass == 0 ? a.count / 10 : a.count;
        uint64_t allocs0 = alloc_count();
        int64_t t0 = mono_ns();
        for (int i = 0; i < n; i++) {
            arena_reset(&ar);
            Transaction *t = NULL;
            poison_reason why;
            if (txn_decode(&ar, (const char *)buf + off[i], off[i + 1] - off[i], 65536, &t, &why, NULL) != V_OK)
                continue;
            decide_run(p, &env, t, t->created_at_ms, false, vals, &out);
            if (pass) {
                stage[0] += out.features_ns;
                stage[1] += out.model_ns;
                stage[2] += out.rules_ns;
                outcomes[out.outcome & 3]++;
            }
        }
        int64_t ns = mono_ns() - t0;
        uint64_t allocs = alloc_count() - allocs0;
        if (pass == 0)
            continue;
        double per = (double)ns / n;
        printf("\n  verdict bench eval: %d transactions, rules %s (%d rules), model %s\n", n, policy_rules_version(p),
               rules_count(policy_rules(p)), policy_model_version(p));
        printf("  ------------------------------------------------------------\n");
        printf("  per transaction  %8.0f ns  (decode + features + velocity + model + rules)\n", per);
        printf("    features+velocity %6.0f ns   model %6.0f ns   rules %6.0f ns\n", (double)stage[0] / n,
               (double)stage[1] / n, (double)stage[2] / n);
        printf("  allocations      %8llu over %d transactions (target 0)\n", (unsigned long long)allocs, n);
        printf("  outcomes         approve %ld, review %ld, decline %ld\n", outcomes[1], outcomes[2], outcomes[3]);
        if (a.json)
            printf("{\"bench\":\"eval\",\"ns_per_txn\":%.0f,\"features_ns\":%.0f,\"model_ns\":%.0f,\"rules_ns\":%.0f,"
                   "\"allocs_per_txn\":%.6f,\"transactions\":%d}\n",
                   per, (double)stage[0] / n, (double)stage[1] / n, (double)stage[2] / n, (double)allocs / n, n);
    }
    arena_free(&ar);
    velocity_free(vel);
    free(buf);
    free(off);
    policy_release(p);
    return 0;
}

int bench_model(int argc, char **argv)
{
    args a;
    int rc = parse(argc, argv, "model", &a);
    if (rc >= 0)
        return rc;
    if (a.count > 20000)
        a.count = 20000;
    static featreg reg;
    featreg_init(&reg);
    gbdt *m = NULL;
    verror e = {0};
    if (gbdt_load_file(a.model, &reg, &m, &e) != V_OK) {
        fprintf(stderr, "verdict bench model: %s\n", e.msg);
        return 1;
    }
    /* feature rows from the engine's own path (simgen + velocity), kept for both sides */
    velocity *vel = NULL;
    velocity_cfg vc = {.max_keys = 100000};
    static velocity_plan vp;
    velocity_plan_init(&vp, &reg);
    if (velocity_new(&vp, &vc, &vel, &e) != V_OK) {
        fprintf(stderr, "verdict bench model: %s\n", e.msg);
        return 1;
    }
    int nf = gbdt_num_features(m), n = a.count;
    fval *rows = calloc((size_t)n * FEAT_MAX, sizeof *rows);
    char csv[] = "/tmp/verdict-bench-model-XXXXXX";
    int fd = mkstemp(csv);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    simgen_cfg gc = {.seed = 9};
    simgen *g = simgen_create(&gc);
    if (!rows || !f || !g) {
        fprintf(stderr, "verdict bench model: setup failed\n");
        return 1;
    }
    for (int i = 0; i < n; i++) {
        Transaction t;
        simgen_next(g, &t);
        fval *v = &rows[(size_t)i * FEAT_MAX];
        features_from_txn(&reg, &t, t.created_at_ms, v);
        velocity_features_and_add(vel, &vp, v, t.created_at_ms);
        for (int c = 0; c < nf; c++) {
            const fval *x = &v[gbdt_feature_id(m, c)];
            fprintf(f, c ? "," : "");
            if (x->present)
                fprintf(f, "%.17g", x->type == FT_BOOL ? (x->b ? 1.0 : 0.0) : x->num);
        }
        fprintf(f, "\n");
    }
    fclose(f);
    simgen_destroy(g);
    volatile float sink = 0;
    uint64_t allocs0 = alloc_count();
    int64_t t0 = mono_ns();
    for (int rep = 0; rep < 5; rep++)
        for (int i = 0; i < n; i++)
            sink += gbdt_predict(m, &rows[(size_t)i * FEAT_MAX]);
    double single = (double)(mono_ns() - t0) / (5.0 * n);
    /* batched: the same rows, one after another, as a batch of a worker would be */
    static float out[20000];
    t0 = mono_ns();
    for (int rep = 0; rep < 5; rep++) {
        for (int i = 0; i < n; i++)
            out[i] = gbdt_predict(m, &rows[(size_t)i * FEAT_MAX]);
        sink += out[n - 1];
    }
    double batched = (double)(mono_ns() - t0) / (5.0 * n);
    uint64_t allocs = alloc_count() - allocs0;
    /* xgboost's own single-row predict on the same rows (Debian's python3-xgboost) */
    char cmd[2048];
    int py_rows = n < 2000 ? n : 2000;
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import sys,time,numpy as np,xgboost as xgb\n"
             "b=xgb.Booster(model_file='%s')\n"
             "X=np.genfromtxt('%s',delimiter=',',max_rows=%d)\n"
             "X=X.reshape(-1,%d)\n"
             "b.inplace_predict(X[:1])\n"
             "t=time.perf_counter()\n"
             "for i in range(len(X)): b.inplace_predict(X[i:i+1])\n"
             "print((time.perf_counter()-t)/len(X)*1e9)\" 2>/dev/null",
             a.model, csv, py_rows, nf);
    double py = 0;
    FILE *pp = popen(cmd, "r");
    if (pp) {
        if (fscanf(pp, "%lf", &py) != 1)
            py = 0;
        pclose(pp);
    }
    unlink(csv);
    printf("\n  verdict bench model: %d trees, %d features, %d rows\n", gbdt_num_trees(m), nf, n);
    printf("  ------------------------------------------------------------\n");
    printf("  engine, single row   %8.0f ns/prediction\n", single);
    printf("  engine, batch        %8.0f ns/prediction\n", batched);
    printf("  allocations          %8llu\n", (unsigned long long)allocs);
    if (py > 0)
        printf("  xgboost (Python) single-row inplace_predict %8.0f ns/prediction  -> engine is %.0fx faster\n", py,
               py / single);
    else
        printf("  xgboost (Python): not measured (python3-xgboost missing)\n");
    if (a.json)
        printf("{\"bench\":\"model\",\"ns_per_prediction\":%.0f,\"ns_per_prediction_batched\":%.0f,"
               "\"allocs_per_prediction\":%.6f,\"xgboost_ns_per_prediction\":%.0f,\"ratio\":%.1f}\n",
               single, batched, (double)allocs / (10.0 * n), py, py > 0 ? py / single : 0);
    (void)sink;
    free(rows);
    velocity_free(vel);
    gbdt_free(m);
    return 0;
}

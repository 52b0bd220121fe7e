/* fuzz_gbdt.c - libFuzzer target: the XGBoost JSON model loader (engine/gbdt.c). A model arrives from a file
 * or the verdict_rules KV bucket, so any bytes must be either refused with a message or loaded into a model
 * whose every prediction is a probability: no crash, no leak, no out-of-range node index, no NaN. Whatever
 * loads is evaluated over an all-missing vector and over vectors whose values the input chooses, so the
 * flattened trees are walked on many paths. Seed: tests/fuzz/seeds/gbdt (two small trees); tools/fuzz adds a
 * JSON dictionary. */
#include "fdp.h"
#include "gbdt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const gbdt *m, const fval *vals)
{
    float p = gbdt_predict(m, vals);
    if (!(p >= 0.0f && p <= 1.0f)) {
        fprintf(stderr, "fuzz_gbdt: a loaded model predicted %g, not a probability\n", (double)p);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static featreg reg;
    static fval vals[FEAT_MAX];
    featreg_init(&reg);
    gbdt *m = NULL;
    verror e = {0};
    vstatus rc = gbdt_load_buffer((const char *)data, size, "fuzz", &reg, &m, &e);
    if (rc != V_OK) {
        if (m || !e.msg[0]) {
            fprintf(stderr, "fuzz_gbdt: a refusal must come without a model and with a message\n");
            abort();
        }
        return 0;
    }
    if (gbdt_num_features(m) < 1 || gbdt_num_trees(m) < 1 || strlen(gbdt_version(m)) != 16)
        abort();
    for (int i = 0; i < gbdt_num_features(m); i++)
        if (gbdt_feature_id(m, i) < 0 || gbdt_feature_id(m, i) >= reg.n)
            abort();
    for (int i = 0; i < reg.n; i++)
        vals[i] = (fval){.type = (uint8_t)reg.defs[i].type, .present = false};
    check(m, vals);
    /* values from the input's own bytes (read from the end, away from the JSON's start) */
    fdp p = fdp_make(data, size);
    for (int round = 0; round < 4 && !fdp_empty(&p); round++) {
        for (int i = 0; i < reg.n; i++) {
            fval *v = &vals[i];
            v->present = fdp_range(&p, 0, 3) != 0;
            if (v->type == FT_NUM) {
                static const double special[] = {0.0, -0.0, 1.0, -1.0, 0.5, 1e30, -1e30, INFINITY, -INFINITY, NAN};
                uint64_t k = fdp_range(&p, 0, 15);
                v->num = k < ARRAY_LEN(special) ? special[k] : (double)(int64_t)fdp_u32(&p) - 2147483648.0;
            } else if (v->type == FT_BOOL) {
                v->b = fdp_bool(&p);
            } else {
                v->str = (fstr){"x", 1};
            }
        }
        check(m, vals);
    }
    gbdt_free(m);
    return 0;
}

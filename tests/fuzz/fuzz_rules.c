/* fuzz_rules.c - libFuzzer target: the rule compiler and evaluator must survive any input (no crash, no leak,
 * no unbounded work), and whatever compiles must evaluate over an all-missing and an all-present vector. */
#include "featreg.h"
#include "rules.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static featreg reg;
    static fval vals[FEAT_MAX];
    featreg_init(&reg);
    ruleset *rs = NULL;
    rules_diag d = {0};
    if (rules_compile((const char *)data, size, "fuzz", &reg, &rs, &d) == V_OK) {
        rules_result r;
        for (int i = 0; i < reg.n; i++)
            vals[i] = (fval){.type = (uint8_t)reg.defs[i].type, .present = false};
        rules_eval(rs, vals, &r);
        for (int i = 0; i < reg.n; i++) {
            vals[i].present = true;
            if (vals[i].type == FT_STR)
                vals[i].str = (fstr){"x", 1};
            else if (vals[i].type == FT_NUM)
                vals[i].num = (double)i;
            else
                vals[i].b = i & 1;
        }
        rules_eval(rs, vals, &r);
    }
    rules_free(rs);
    rules_diag_free(&d);
    return 0;
}

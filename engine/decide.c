/* decide.c - policies and the decision step (see decide.h). */
#include "decide.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct policy {
    featreg reg;
    int64_t review_minor, decline_minor;
    char rules_version[32];
    char model_version[32];
    char decline_text[96], review_text[96];
};

policy *policy_builtin(int64_t review_minor, int64_t decline_minor)
{
    policy *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    featreg_init(&p->reg);
    p->review_minor = review_minor;
    p->decline_minor = decline_minor;
    snprintf(p->rules_version, sizeof p->rules_version, "builtin-1");
    snprintf(p->model_version, sizeof p->model_version, "none");
    snprintf(p->decline_text, sizeof p->decline_text, "Amount at or over %lld minor units",
             (long long)decline_minor);
    snprintf(p->review_text, sizeof p->review_text, "Amount at or over %lld minor units", (long long)review_minor);
    return p;
}

void policy_free(policy *p) { free(p); }

const char *policy_rules_version(const policy *p) { return p->rules_version; }
const char *policy_model_version(const policy *p) { return p->model_version; }
const featreg *policy_featreg(const policy *p) { return &p->reg; }

void decide_run(const policy *p, const Transaction *t, int64_t event_ms, bool skip_model, fval *vals,
                decide_out *out)
{
    (void)skip_model;
    features_from_txn(&p->reg, t, event_ms, vals);
    out->outcome = VERDICT__V1__OUTCOME__OUTCOME_APPROVE;
    out->score = -1;
    out->n_reasons = 0;
    out->degraded = false;
    double amount = vals[FEAT_AMOUNT_MINOR].num;
    if (amount >= (double)p->decline_minor) {
        out->outcome = VERDICT__V1__OUTCOME__OUTCOME_DECLINE;
        out->reason_id[out->n_reasons] = "builtin_decline_amount";
        out->reason_text[out->n_reasons++] = p->decline_text;
    } else if (amount >= (double)p->review_minor) {
        out->outcome = VERDICT__V1__OUTCOME__OUTCOME_REVIEW;
        out->reason_id[out->n_reasons] = "builtin_review_amount";
        out->reason_text[out->n_reasons++] = p->review_text;
    }
}

/* decide.h - the decision step: a transaction and its features in, an outcome with reasons out.
 *
 * A policy is an immutable bundle of what decides (the feature registry, the compiled rules, the model) and
 * their versions. Workers hold a reference while they decide one transaction; a reload builds a new policy and
 * swaps it in atomically between transactions, so a decision is always made by exactly one version. Until a
 * rules file is configured the built-in policy applies: an amount threshold with real reasons. decide_run
 * allocates nothing and knows nothing of NATS. */
#ifndef VERDICT_DECIDE_H
#define VERDICT_DECIDE_H

#include "codec.h"
#include "featreg.h"

#define DECIDE_MAX_REASONS 32

typedef struct policy policy;

typedef struct decide_out {
    Verdict__V1__Outcome outcome;
    double score; /* -1 when the model did not run */
    int n_reasons;
    const char *reason_id[DECIDE_MAX_REASONS];   /* point into the policy: valid while it is held */
    const char *reason_text[DECIDE_MAX_REASONS];
    bool degraded;
    bool budget_exceeded;
} decide_out;

/* The built-in policy: decline at or over decline_minor, review at or over review_minor. */
policy *policy_builtin(int64_t review_minor, int64_t decline_minor);
void policy_free(policy *p);

const char *policy_rules_version(const policy *p);
const char *policy_model_version(const policy *p);
const featreg *policy_featreg(const policy *p);

/* Decides t. event_ms is the event time for windows and derived features; skip_model asks for a rules-only
 * decision (budget nearly spent). vals is the caller's scratch feature vector (FEAT_MAX entries). */
void decide_run(const policy *p, const Transaction *t, int64_t event_ms, bool skip_model, fval *vals,
                decide_out *out);

#endif

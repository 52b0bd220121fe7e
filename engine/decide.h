/* decide.h - the decision step: a transaction and its features in, an outcome with reasons out.
 *
 * A policy is an immutable bundle of what decides: the feature registry, the compiled rules and the model,
 * with their versions, and the velocity plan of its registry (which velocity features it reads, by canonical
 * name, at which ids: a velocity state serves the policy only when it keeps exactly those). It is reference-counted: workers take a reference for a batch, a reload builds a new
 * policy and swaps it in, and the old one is freed when its last batch finishes, so a decision is always made
 * by exactly one version and a swap never waits for, or blocks, a transaction. Without a rules file the
 * built-in policy applies (an amount threshold with real reasons). decide_run allocates nothing and knows
 * nothing of NATS; the behavioural state it reads (velocity, lists, profiles) comes in through decide_env. */
#ifndef VERDICT_DECIDE_H
#define VERDICT_DECIDE_H

#include "codec.h"
#include "featreg.h"
#include "rules.h"

#include <stdatomic.h>

#define DECIDE_MAX_REASONS RULES_MAX_MATCHES

typedef struct policy policy;
struct velocity_plan;

typedef struct decide_out {
    Verdict__V1__Outcome outcome;
    double score; /* -1 when the model did not run */
    int n_reasons;
    const char *reason_id[DECIDE_MAX_REASONS]; /* point into the policy: valid while it is held */
    const char *reason_text[DECIDE_MAX_REASONS];
    bool degraded;
    bool budget_exceeded;
    bool model_skipped;
    /* stage timings, ns, and the monotonic clock (mono_ns) at the end, for a caller that needs the time after
     * deciding (a clock read costs 30-60 ns in a VM, and a decision took eight) */
    int64_t features_ns, model_ns, rules_ns;
    int64_t end_ns;
} decide_out;

/* The built-in policy: decline at or over decline_minor, review at or over review_minor. */
policy *policy_builtin(int64_t review_minor, int64_t decline_minor);

/* Builds a policy from rules source text (name labels messages: a path or "kv:verdict_rules/rules@7") and an
 * optional model file. On failure returns V_EPARSE/V_EIO with every message in diag, and nothing changes. */
vstatus policy_build(const char *rules_src, size_t len, const char *rules_name, const char *model_path,
                     policy **out, rules_diag *diag);

/* Reads rules_path (NULL: built-in amount policy) and model_path (NULL or "": none) and builds a policy. */
vstatus policy_load(const char *rules_path, const char *model_path, policy **out, rules_diag *diag);

/* Reference counting: a new policy holds one reference. */
void policy_retain(policy *p);
void policy_release(policy *p);
#define policy_free policy_release

const char *policy_rules_version(const policy *p);
const char *policy_model_version(const policy *p);
const char *policy_rules_source(const policy *p);
const featreg *policy_featreg(const policy *p);
/* The velocity features the policy reads (rules and model), by canonical name with their ids in its registry:
 * the velocity state used with the policy must be compatible with it (velocity_compatible). */
const struct velocity_plan *policy_velocity_plan(const policy *p);
const ruleset *policy_rules(const policy *p); /* NULL for the built-in policy */

struct velocity;
struct replica;
struct velvals;

/* What decide_run reads besides the transaction; any member may be NULL (not configured). */
typedef struct decide_env {
    struct velocity *vel; /* features from the state before t, then t counted once; must serve p's plan */
    /* or: the velocity features the sequencing stage computed for t (sequencer.h), in p's plan order; the
     * state is not touched. vel_inexact marks them as not t's own (a redelivery older than the ring): degraded */
    const struct velvals *vel_pre;
    bool vel_inexact;
    const struct replica *lists, *profiles;     /* local KV replicas; stale or absent -> degraded */
    /* the model's score for these very features, computed before by the same model (a shadow policy that
     * shares the live model, shadow.h): used instead of evaluating the model again */
    bool has_score_pre;
    double score_pre;
    int64_t start_ns; /* mono_ns the caller read just before (0: decide_run reads the clock itself) */
} decide_env;

/* Decides t. event_ms is the event time for windows and derived features; skip_model asks for a rules-only
 * decision (budget nearly spent). vals is the caller's scratch feature vector (FEAT_MAX entries). */
void decide_run(const policy *p, const decide_env *env, const Transaction *t, int64_t event_ms, bool skip_model,
                fval *vals, decide_out *out);

#endif

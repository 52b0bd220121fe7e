/* decide.c - policies and the decision step (see decide.h). */
#include "decide.h"

#include "gbdt.h"
#include "replica.h"
#include "sequencer.h"
#include "velocity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct policy {
    atomic_int refs;
    featreg reg;
    velocity_plan vplan; /* reg's velocity features by canonical name: what a velocity state must keep */
    ruleset *rules; /* NULL: built-in amount thresholds */
    gbdt *model;    /* NULL: no model (score stays missing) */
    int64_t review_minor, decline_minor;
    char rules_version[32];
    char model_version[32];
    char rules_source[256];
    char decline_text[96], review_text[96];
};

policy *policy_builtin(int64_t review_minor, int64_t decline_minor)
{
    policy *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    atomic_init(&p->refs, 1);
    featreg_init(&p->reg);
    velocity_plan_init(&p->vplan, &p->reg);
    p->review_minor = review_minor;
    p->decline_minor = decline_minor;
    snprintf(p->rules_version, sizeof p->rules_version, "builtin-1");
    snprintf(p->model_version, sizeof p->model_version, "none");
    snprintf(p->rules_source, sizeof p->rules_source, "builtin");
    snprintf(p->decline_text, sizeof p->decline_text, "Amount at or over %lld minor units",
             (long long)decline_minor);
    snprintf(p->review_text, sizeof p->review_text, "Amount at or over %lld minor units", (long long)review_minor);
    return p;
}

/* Loads the model into p (its features intern into p's registry, so rules and model share one vector). */
static vstatus load_model(policy *p, const char *model_path, rules_diag *diag)
{
    snprintf(p->model_version, sizeof p->model_version, "none");
    if (!model_path || !model_path[0])
        return V_OK;
    verror e = {0};
    vstatus s = gbdt_load_file(model_path, &p->reg, &p->model, &e);
    if (s != V_OK) {
        rules_diag_add(diag, "%s\n", e.msg);
        return s;
    }
    str_copy(p->model_version, sizeof p->model_version, gbdt_version(p->model));
    return V_OK;
}

vstatus policy_build(const char *rules_src, size_t len, const char *rules_name, const char *model_path,
                     policy **out, rules_diag *diag)
{
    *out = NULL;
    policy *p = calloc(1, sizeof *p);
    if (!p)
        return V_ENOMEM;
    atomic_init(&p->refs, 1);
    featreg_init(&p->reg);
    vstatus s = rules_compile(rules_src, len, rules_name, &p->reg, &p->rules, diag);
    if (s != V_OK) {
        free(p);
        return s;
    }
    str_copy(p->rules_version, sizeof p->rules_version, rules_version(p->rules));
    str_copy(p->rules_source, sizeof p->rules_source, rules_name);
    s = load_model(p, model_path, diag);
    if (s != V_OK) {
        policy_release(p);
        return s;
    }
    velocity_plan_init(&p->vplan, &p->reg); /* after the model: its names may intern velocity features too */
    *out = p;
    return V_OK;
}

vstatus policy_load(const char *rules_path, const char *model_path, policy **out, rules_diag *diag)
{
    *out = NULL;
    if (!rules_path || !rules_path[0]) {
        policy *p = policy_builtin(200000, 1000000);
        if (!p)
            return V_ENOMEM;
        vstatus s = load_model(p, model_path, diag);
        if (s != V_OK) {
            policy_release(p);
            return s;
        }
        velocity_plan_init(&p->vplan, &p->reg);
        *out = p;
        return V_OK;
    }
    /* read the file once; policy_build compiles the same bytes the version hashes */
    char *buf;
    size_t n;
    verror e = {0};
    vstatus s = file_read(rules_path, (size_t)16 << 20, &buf, &n, &e);
    if (s != V_OK) {
        rules_diag_add(diag, "%s: error: %s (the rules file)\n", rules_path, e.msg);
        return s == V_EINVAL ? V_EPARSE : s;
    }
    s = policy_build(buf, n, rules_path, model_path, out, diag);
    free(buf);
    return s;
}

void policy_retain(policy *p) { atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed); }

void policy_release(policy *p)
{
    if (!p || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
        return;
    rules_free(p->rules);
    gbdt_free(p->model);
    free(p);
}

const char *policy_rules_version(const policy *p) { return p->rules_version; }
const char *policy_model_version(const policy *p) { return p->model_version; }
const char *policy_rules_source(const policy *p) { return p->rules_source; }
const featreg *policy_featreg(const policy *p) { return &p->reg; }
const velocity_plan *policy_velocity_plan(const policy *p) { return &p->vplan; }
const ruleset *policy_rules(const policy *p) { return p->rules; }

static const Verdict__V1__Outcome outcome_of[] = {
    [RO_APPROVE] = VERDICT__V1__OUTCOME__OUTCOME_APPROVE,
    [RO_REVIEW] = VERDICT__V1__OUTCOME__OUTCOME_REVIEW,
    [RO_DECLINE] = VERDICT__V1__OUTCOME__OUTCOME_DECLINE,
    [RO_ALLOW] = VERDICT__V1__OUTCOME__OUTCOME_APPROVE,
};

void decide_run(const policy *p, const decide_env *env, const Transaction *t, int64_t event_ms, bool skip_model,
                fval *vals, decide_out *out)
{
    int64_t t0 = env && env->start_ns ? env->start_ns : mono_ns();
    features_from_txn(&p->reg, t, event_ms, vals);
    bool fresh = true;
    if (env && (env->lists || env->profiles))
        fresh = replica_fill(env->lists, env->profiles, &p->reg, vals);
    if (env && env->vel_pre) {
        velvals_load(&p->vplan, env->vel_pre, vals);
        if (env->vel_pre->n != p->vplan.n || env->vel_inexact)
            fresh = false;
    } else if (env && env->vel) {
        /* a state kept for other features (never paired so by the engine) leaves the slots missing: degraded */
        if (velocity_serves(env->vel, &p->vplan))
            velocity_features_and_add(env->vel, &p->vplan, vals, event_ms);
        else if (p->vplan.n > 0)
            fresh = false;
    }
    out->outcome = VERDICT__V1__OUTCOME__OUTCOME_APPROVE;
    out->score = -1;
    out->n_reasons = 0;
    out->degraded = !fresh;
    out->budget_exceeded = false;
    out->model_skipped = skip_model;
    int64_t tm = mono_ns();
    out->features_ns = tm - t0;
    if (p->model && !skip_model) {
        float score = env && env->has_score_pre ? (float)env->score_pre : gbdt_predict(p->model, vals);
        vals[FEAT_SCORE] = (fval){.type = FT_NUM, .present = true, .num = score};
        out->score = score;
    } else if (p->model) {
        out->degraded = true; /* rules alone: the model was skipped to keep the budget */
    }
    int64_t t1 = mono_ns();
    out->model_ns = t1 - tm;
    if (!p->rules) {
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
        out->end_ns = mono_ns();
        out->rules_ns = out->end_ns - t1;
        return;
    }
    rules_result r;
    rules_eval(p->rules, vals, &r);
    out->outcome = outcome_of[r.outcome];
    for (int i = 0; i < r.n_matches && i < DECIDE_MAX_REASONS; i++) {
        out->reason_id[i] = rules_id(p->rules, r.match[i]);
        out->reason_text[i] = rules_reason(p->rules, r.match[i]);
    }
    out->n_reasons = r.n_matches < DECIDE_MAX_REASONS ? r.n_matches : DECIDE_MAX_REASONS;
    out->end_ns = mono_ns();
    out->rules_ns = out->end_ns - t1;
}

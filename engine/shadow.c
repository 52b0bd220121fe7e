/* shadow.c - the candidate policy's load and check, and its allocation-free decision step (see shadow.h). */
#include "shadow.h"

#include "velocity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool shadow_velmap(const velocity_plan *live, const velocity_plan *cand, int16_t *map, char *missing, size_t cap)
{
    for (int k = 0; k < cand->n; k++) {
        const char *name = cand->reg->defs[cand->f[k].id].name;
        int found = -1;
        /* plans are sorted by canonical name, but a linear look-up is plenty: at most FEAT_MAX, once per swap */
        for (int j = 0; j < live->n && found < 0; j++)
            if (strcmp(live->reg->defs[live->f[j].id].name, name) == 0)
                found = j;
        if (found < 0) {
            if (missing)
                str_copy(missing, cap, name);
            return false;
        }
        map[k] = (int16_t)found;
    }
    return true;
}

vstatus shadow_load(const char *rules_path, const char *model_path, const char *live_rules_path,
                    const char *live_model_path, const policy *live, policy **out, verror *e)
{
    *out = NULL;
    const char *rp = rules_path && rules_path[0] ? rules_path : live_rules_path;
    const char *mp = model_path && model_path[0] ? model_path : live_model_path;
    policy *p = NULL;
    rules_diag diag = {0};
    vstatus rc = policy_load(rp && rp[0] ? rp : NULL, mp, &p, &diag);
    if (rc != V_OK) {
        verror_set(e, rc, "shadow policy refused: %s", diag.text ? diag.text : vstatus_str(rc));
        rules_diag_free(&diag);
        return rc;
    }
    rules_diag_free(&diag);
    char missing[FEAT_NAME_MAX] = "";
    int16_t map[FEAT_MAX];
    if (live && !shadow_velmap(policy_velocity_plan(live), policy_velocity_plan(p), map, missing, sizeof missing)) {
        policy_release(p);
        return verror_set(e, V_EINVAL,
                          "shadow policy refused: it reads the velocity feature %s, which the live policy does not "
                          "keep; a shadow decision uses exactly the live decision's velocity values (docs/shadow.md)",
                          missing);
    }
    *out = p;
    return V_OK;
}

vstatus shadow_eval_init(shadow_eval *se, size_t cap)
{
    memset(se, 0, sizeof *se);
    if (cap < SHADOW_RECORD_MAX)
        cap = SHADOW_RECORD_MAX;
    se->buf = malloc(cap);
    if (!se->buf)
        return V_ENOMEM;
    se->cap = cap;
    return V_OK;
}

void shadow_eval_free(shadow_eval *se)
{
    free(se->buf);
    se->buf = NULL;
}

bool shadow_decide(shadow_eval *se, const policy *cand, const shadow_input *in, const Transaction *t,
                   decide_out *out)
{
    const velocity_plan *cp = policy_velocity_plan(cand);
    if (se->map_live != in->live || se->map_cand != cand) {
        /* once per policy pair (a swap of either), never per transaction */
        se->map_ok = shadow_velmap(policy_velocity_plan(in->live), cp, se->map, NULL, 0);
        se->map_live = in->live;
        se->map_cand = cand;
    }
    if (!se->map_ok)
        return false;
    decide_env env = {.lists = in->lists, .profiles = in->profiles, .vel_inexact = in->vel_inexact};
    if (in->vel) {
        se->vv.n = cp->n;
        memset(se->vv.present, 0, sizeof se->vv.present);
        for (int k = 0; k < cp->n; k++) {
            int j = se->map[k];
            if ((in->vel->present[j / 64] >> (j % 64)) & 1)
                se->vv.present[k / 64] |= (uint64_t)1 << (k % 64);
            se->vv.num[k] = in->vel->num[j];
        }
        env.vel_pre = &se->vv;
    }
    /* the same model on the same features gives the same score: the candidate that keeps the live model (the
     * usual case: new rules) reuses the live score instead of evaluating the trees a second time */
    if (in->live_score >= 0 && strcmp(policy_model_version(cand), policy_model_version(in->live)) == 0 &&
        strcmp(policy_model_version(cand), "none") != 0) {
        env.has_score_pre = true;
        env.score_pre = in->live_score;
    }
    decide_run(cand, &env, t, in->event_ms, in->skip_model, se->vals, out);
    return true;
}

size_t shadow_record(char *buf, size_t cap, const char *txn_id, Verdict__V1__Outcome live, const decide_out *out,
                     uint64_t delivered)
{
    /* txn ids and rule ids are identifiers (ident.h): nothing to escape */
    int k = snprintf(buf, cap, "{\"txn_id\":\"%s\",\"live\":\"%s\",\"shadow\":\"%s\",\"score\":%.17g,\"reasons\":[",
                     txn_id, outcome_str(live), outcome_str(out->outcome), out->score);
    if (k < 0 || (size_t)k >= cap)
        return 0;
    size_t o = (size_t)k;
    for (int i = 0; i < out->n_reasons; i++) {
        k = snprintf(buf + o, cap - o, "%s\"%s\"", i ? "," : "", out->reason_id[i]);
        if (k < 0 || (size_t)k >= cap - o)
            return 0;
        o += (size_t)k;
    }
    k = snprintf(buf + o, cap - o, "],\"degraded\":%s,\"delivered\":%llu}\n", out->degraded ? "true" : "false",
                 (unsigned long long)delivered);
    if (k < 0 || (size_t)k >= cap - o)
        return 0;
    return o + (size_t)k;
}

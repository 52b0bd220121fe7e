/* shadow.h - shadow policies: a candidate rules file and model decided beside the live policy on live traffic.
 *
 * The engine decides every transaction with the live policy, publishes, replies and acks; then (same worker,
 * same batch) it decides the transaction again with the candidate and publishes that decision, asynchronously
 * and without waiting, to its own stream (SHADOW, subjects shadow.<outcome>.<txn_id>, Nats-Msg-Id = txn_id so
 * a redelivery makes no second shadow decision). A shadow decision never reaches a requester or DECISIONS, and
 * a shadow failure never naks, delays or fails the live message: it is counted. docs/shadow.md says why.
 *
 * Same features as the live decision: the candidate is given the velocity values the sequencing stage computed
 * for the live decision (decide_env.vel_pre), remapped by canonical name into the candidate's plan, so a
 * transition between live and shadow outcome comes from the policy difference alone. A candidate that reads a
 * velocity feature the live policy does not is refused (the live state does not count it). This file is pure
 * logic (no NATS): loading and checking a candidate, and the allocation-free decision step. */
#ifndef VERDICT_SHADOW_H
#define VERDICT_SHADOW_H

#include "codec.h"
#include "decide.h"
#include "sequencer.h"

#include <stddef.h>
#include <stdint.h>

/* Loads the candidate: rules_path (NULL or "": the live rules file live_rules_path, or the built-in policy)
 * and model_path (NULL or "": live_model_path). Refuses (V_EPARSE/V_EIO/V_EINVAL, every message in e, with
 * file:line:col for rules) a file that does not compile, or a candidate whose velocity features live (the policy
 * in force) does not keep. */
vstatus shadow_load(const char *rules_path, const char *model_path, const char *live_rules_path,
                    const char *live_model_path, const policy *live, policy **out, verror *e);

/* For each velocity feature of cand's plan (in plan order), the index of the same feature (canonical name) in
 * live's plan; false (and the first missing name in missing, if not NULL) when live lacks one. */
bool shadow_velmap(const velocity_plan *live, const velocity_plan *cand, int16_t *map, char *missing, size_t cap);

/* A worker's scratch for shadow decisions: preallocated once, so a shadow decision allocates nothing. */
typedef struct shadow_eval {
    const policy *map_live, *map_cand; /* the pair map was computed for */
    bool map_ok;
    int16_t map[FEAT_MAX];
    velvals vv;
    fval vals[FEAT_MAX];
    Reason reasons[DECIDE_MAX_REASONS];
    Reason *reason_ptrs[DECIDE_MAX_REASONS];
    unsigned char *enc; /* encoded decision, enc_cap bytes */
    size_t enc_cap;
} shadow_eval;

/* enc_cap: the engine's largest decision (DECISION_BUF). */
vstatus shadow_eval_init(shadow_eval *se, size_t enc_cap);
void shadow_eval_free(shadow_eval *se);

/* What the live decision of a transaction saw, for the shadow decision of the same transaction. */
typedef struct shadow_input {
    const policy *live;      /* the policy the live decision was made with (its velocity plan orders vel) */
    const velvals *vel;      /* the sequencing stage's velocity values for it, in live's plan order, or NULL */
    bool vel_inexact;
    const struct replica *lists, *profiles;
    int64_t event_ms;
    bool skip_model; /* the live decision skipped the model (budget): so does the shadow */
    const char *engine_id;
    int64_t decided_at_ms;
} shadow_input;

/* Decides t with cand on in's features and encodes the Decision into se->enc. Returns its length and the
 * candidate's outcome in *outcome, or 0 when the candidate cannot be given the live features (live was
 * swapped for a policy without one of cand's velocity features) or the decision does not fit. Allocates
 * nothing. */
size_t shadow_decide(shadow_eval *se, const policy *cand, const shadow_input *in, const Transaction *t,
                     decide_out *out);

#endif

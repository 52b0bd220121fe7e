/* shadow.h - shadow policies: a candidate rules file and model decided beside the live policy on live traffic.
 *
 * The engine decides every transaction with the live policy, publishes, replies and acks; then (same worker,
 * same batch) it decides the batch's newly stored transactions again with the candidate and publishes those
 * decisions, asynchronously and without waiting, to their own stream (SHADOW): one message per batch, subject
 * shadow.batch, a JSON line per transaction (shadow_record). A shadow decision never reaches a requester or
 * DECISIONS, and a shadow failure never naks, delays or fails the live message: it is counted. At least once:
 * a redelivery whose first delivery may or may not have made its shadow decision makes one (marked with its
 * delivery count), and readers keep the first per txn_id (`verdict shadow report`). docs/shadow.md says why.
 *
 * Same features as the live decision: the candidate is given the velocity values the sequencing stage computed
 * for the live decision (decide_env.vel_pre), remapped by canonical name into the candidate's plan, so a
 * transition between live and shadow outcome comes from the policy difference alone. A candidate that reads a
 * velocity feature the live policy does not is refused (the live state does not count it). This file is pure
 * logic (no NATS): loading and checking a candidate, the allocation-free decision step and its record. */
#ifndef VERDICT_SHADOW_H
#define VERDICT_SHADOW_H

#include "codec.h"
#include "decide.h"
#include "ident.h"
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

/* A worker's scratch for shadow decisions, and the batch's records waiting to be published (buf, len bytes,
 * n records, by shadow outcome): preallocated once, so a shadow decision allocates nothing. */
typedef struct shadow_eval {
    const policy *map_live, *map_cand; /* the pair map was computed for */
    bool map_ok;
    int16_t map[FEAT_MAX];
    velvals vv;
    fval vals[FEAT_MAX];
    char *buf;
    size_t cap, len;
    int n;
    int by_outcome[4];
} shadow_eval;

/* The longest record shadow_record writes (every reason at the longest rule id). */
#define SHADOW_RECORD_MAX (IDENT_TXN_ID_MAX + DECIDE_MAX_REASONS * (IDENT_NAME_MAX + 3) + 192)

/* cap: the record buffer (at least SHADOW_RECORD_MAX). */
vstatus shadow_eval_init(shadow_eval *se, size_t cap);
void shadow_eval_free(shadow_eval *se);

/* What the live decision of a transaction saw, for the shadow decision of the same transaction. */
typedef struct shadow_input {
    const policy *live;      /* the policy the live decision was made with (its velocity plan orders vel) */
    const velvals *vel;      /* the sequencing stage's velocity values for it, in live's plan order, or NULL */
    bool vel_inexact;
    const struct replica *lists, *profiles;
    int64_t event_ms;
    bool skip_model; /* the live decision skipped the model (budget): so does the shadow */
    double live_score; /* the live decision's score (-1: none): reused when cand has the live model */
} shadow_input;

/* Decides t with cand on in's features into out. Returns false when the candidate cannot be given the live
 * features (live was swapped for a policy without one of cand's velocity features). Allocates nothing. */
bool shadow_decide(shadow_eval *se, const policy *cand, const shadow_input *in, const Transaction *t,
                   decide_out *out);

/* Writes one record, a JSON line: {"txn_id":"...","live":"review","shadow":"decline","score":0.0123,
 * "reasons":["mid"],"degraded":false,"delivered":1}\n (score -1: the model did not run; %.17g, so it reads
 * back exactly; delivered: the TXN message's delivery count). Returns its length, or 0 if it does not fit in
 * cap. Allocates nothing. */
size_t shadow_record(char *buf, size_t cap, const char *txn_id, Verdict__V1__Outcome live, const decide_out *out,
                     uint64_t delivered);

#endif

/* history.h - a range of the TXN stream with the velocity state serving has before each transaction: what
 * `verdict replay` and `verdict features` read, so both compute features exactly as serving does.
 *
 * Serving's definition (docs/state.md): the velocity state before the transaction at TXN sequence N counts, in
 * stream order, every transaction with a sequence below N that decodes (txn_decode; poison is skipped), decided
 * or not, each txn_id once (the state's seen-set), with the store time as event time (txn_event_ms).
 * history_run reproduces it for a range [from, to]: it finds the range's first transaction, reads TXN from that
 * transaction's store time minus the warm-up span (history_warmup_ms: the longest window and its rounding) and
 * counts every decodable transaction before the range into the caller's state, then hands each decodable
 * transaction of the range to the caller in stream order. The caller computes the features from the state and
 * counts the transaction (decide_run, or features_from_txn + velocity_features_and_add): the serving step.
 * A state that starts empty at the warm-up's start gives the same features as serving's, whose state holds
 * older transactions too: a window never reaches back past the warm-up span.
 *
 * Complete or failed: a read that stalls (nothing for 5 s) or fails ends the run with an error naming the
 * sequence reached, never a silently shorter range. Progress goes to stderr every 2 s (long ranges). */
#ifndef VERDICT_HISTORY_H
#define VERDICT_HISTORY_H

#include "codec.h"
#include "common.h"
#include "config.h"
#include "featreg.h"
#include "velocity.h"

#include <nats/nats.h>

struct replica;

/* The range: from from_seq, or (from_seq 0) from the first transaction stored at or after from_time_ns, or
 * (both 0) from the stream's first; up to to_seq (0: the stream's last sequence when the run starts). */
typedef struct history_range {
    uint64_t from_seq;
    int64_t from_time_ns;
    uint64_t to_seq;
} history_range;

typedef struct history_stats {
    uint64_t warm_read, warm_counted, warm_skipped; /* before the range: read, counted, undecodable */
    uint64_t read, skipped;                         /* in the range: messages read, undecodable */
    uint64_t first_seq, last_seq;                   /* the range as read (0 and 0 when it is empty) */
    int64_t first_store_ns;                         /* store time of the range's first message */
    int64_t warm_from_ns;                           /* where the warm-up read started (0: no warm-up) */
    bool warm_truncated; /* TXN no longer holds the start of the warm-up (retention removed messages before it) */
    double seconds;
} history_stats;

/* Called for each decodable transaction of the range, in stream order, with its event time (txn_event_ms of
 * the store time). t and its strings are valid during the call only. Returning false stops the run (V_OK). */
typedef bool (*history_fn)(void *ctx, const Transaction *t, uint64_t seq, int64_t event_ms);

/* The longest velocity window of reg (0 when it has none). */
int64_t history_longest_window(const featreg *reg);

/* How far before the range the warm-up reads for windows up to window_ms: a window of W is kept in buckets
 * of b <= W/5 and may reach back ceil(W/b)*b < W + W/5; distinct counts round to 10 s stamps on top. */
int64_t history_warmup_ms(int64_t window_ms);

/* The first message of the range (its sequence and store time); V_ENOTFOUND when the range is empty. */
vstatus history_find_first(jsCtx *js, const config *c, const history_range *range, uint64_t *seq, int64_t *store_ns,
                           verror *e);

/* Runs the range as described above. pl and v may be NULL (no velocity features: no warm-up); otherwise v
 * must be a fresh state for pl (velocity_new). label prefixes the progress lines ("replay: ..."). */
vstatus history_run(jsCtx *js, const config *c, const velocity_plan *pl, velocity *v, const history_range *range,
                    const char *label, history_fn fn, void *ctx, history_stats *st, verror *e);

/* Opens the lists and profiles replicas reg reads (FK_LIST / FK_PROFILE features), with their current values,
 * when their bucket exists; a missing bucket leaves the replica NULL (its features missing) and is never
 * created. Each replica is waited for up to 10 s. Free them with replica_stop. */
vstatus history_open_replicas(natsConnection *nc, jsCtx *js, const config *c, const featreg *reg,
                              struct replica **lists, struct replica **profiles, verror *e);

#endif

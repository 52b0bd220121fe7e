/* sequencer.h - one definition of a transaction's velocity features, whatever the worker count.
 *
 * The features of the transaction at TXN sequence N are the velocity state after counting, in stream order,
 * every transaction of TXN with a lower sequence that decodes (each txn_id once; event time = store time). The
 * engine's sequencing stage (one thread, in front of the workers) is the only writer of the state: it takes the
 * consumer's messages, advances the state over each new sequence in order, and records the features it
 * computed in a ring keyed by sequence, so a redelivery of N (a nak, an AckWait expiry, a restart) is decided
 * with exactly the features N had the first time, never with a state that has moved on. The velocity rebuild,
 * `verdict replay` and `verdict features` run the same step (seq_step) over the same stream, so serving,
 * replay and training agree. Argument and edge cases: docs/state.md, "Deterministic features". */
#ifndef VERDICT_SEQUENCER_H
#define VERDICT_SEQUENCER_H

#include "codec.h"
#include "featreg.h"
#include "velocity.h"

#include <stdbool.h>
#include <stdint.h>

/* A plan's velocity feature values in plan order (canonical, by name), so they survive a reload that keeps the
 * same features under other ids. */
typedef struct velvals {
    int n;
    uint64_t present[FEAT_MAX / 64];
    double num[FEAT_MAX];
} velvals;

/* Copies the plan's velocity slots of vals into vv, and back. */
void velvals_save(const velocity_plan *pl, const fval *vals, velvals *vv);
void velvals_load(const velocity_plan *pl, const velvals *vv, fval *vals);

/* The sequencing step: the transaction's fields (features_from_txn) and its velocity features from the state
 * before it, then it is counted (once per txn_id). vals is FEAT_MAX entries of scratch, filled. */
void seq_step(velocity *v, const velocity_plan *pl, const Transaction *t, int64_t event_ms, fval *vals);

/* The features of recent sequences: a ring of cap entries (a power of two), entry = sequence + n values. */
typedef struct featring featring;

/* cap 0 = no ring (every look-up misses). nvel is the plan's velocity feature count. */
vstatus featring_new(size_t cap, int nvel, featring **out, verror *e);
void featring_free(featring *r);
void featring_put(featring *r, uint64_t seq, const velvals *vv);
/* True (and vv filled) when the features of seq are still held. */
bool featring_get(const featring *r, uint64_t seq, velvals *vv);
size_t featring_bytes(const featring *r);

/* The entries of sequences in (after, upto] that the ring holds, as bytes to keep with a snapshot (the
 * redeliveries of messages not yet acknowledged when it was taken need them after a restart): magic, feature
 * count, entry count, entries. featring_export_bound is the most it can take. Import refuses (false) bytes that
 * do not fit this ring (another feature count, a bad length) and leaves it unchanged. */
size_t featring_export_bound(const featring *r);
size_t featring_export(const featring *r, uint64_t after, uint64_t upto, unsigned char *buf, size_t cap);
bool featring_import(featring *r, const unsigned char *buf, size_t len, size_t *entries);

#endif

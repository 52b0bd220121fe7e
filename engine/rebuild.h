/* rebuild.h - filling velocity state from the TXN stream: on restart before any new work is taken, and when a
 * reload brings velocity features the running state does not keep.
 *
 * The state must neither reset nor double-count across a restart (DESIGN section 5), and the features of a
 * transaction must come from the state before it. The rule that gives both: the state counts exactly the
 * transactions that have a stored decision. The rebuild first indexes the txn ids of DECISIONS (headers only)
 * over the longest window, then replays TXN over the same window with an ordered ephemeral consumer and counts
 * each transaction with a decision once (velocity_add also refills the seen-set). A transaction delivered but
 * not decided before the crash has no decision: it is not counted now, and is counted (with features from the
 * state before it) when its redelivery is decided. One decided but not acked is counted now; its redelivery is
 * answered from the stored decision and the seen-set keeps it from counting twice. Poison is skipped, as live.
 *
 * Complete or failed: both streams are read to their last sequence at open (TXN only up to upto_seq when it is
 * lower). A read that stalls (no message for 5 s: a stopped or electing server), or fails, fails the rebuild
 * with "velocity rebuild incomplete" and the sequence reached: a state built from part of the window would
 * count too low while the engine says it is ready. The caller refuses the start or the reload. */
#ifndef VERDICT_REBUILD_H
#define VERDICT_REBUILD_H

#include "codec.h"
#include "common.h"
#include "config.h"
#include "featreg.h"
#include "velocity.h"

#include <nats/nats.h>

typedef struct rebuild_stats {
    uint64_t read, counted, skipped; /* messages read, transactions counted, undecodable */
    uint64_t undecided;              /* decodable but without a stored decision (not counted) */
    uint64_t decisions;              /* decisions indexed */
    uint64_t upto_seq;
    double seconds;
} rebuild_stats;

/* Replays c->txn_stream from (now - window_ms) up to upto_seq (0 = the stream's last sequence) into v, which
 * must be compatible with pl (the plan of the policy it is built for; transactions are read into pl->reg's
 * ids), counting transactions that have a decision in c->decisions_stream. Logs a progress line every 2 s.
 * Returns V_OK only when both reads reached their end; otherwise an error, with v partly filled (discard it). */
vstatus rebuild_velocity(jsCtx *js, const config *c, const velocity_plan *pl, velocity *v, uint64_t upto_seq,
                         int64_t window_ms, rebuild_stats *st, verror *e);

/* The highest stream sequence the durable consumer has delivered (0 if it has delivered nothing). */
vstatus rebuild_delivered_seq(jsCtx *js, const config *c, uint64_t *seq, verror *e);

/* Event time of a transaction for its velocity windows and time-of-day features: the JetStream store time.
 * created_at_ms is not used: it is the client's word, and one transaction dated ahead moved its card's newest
 * bucket forward so that the card's on-time transactions were dropped as late (count(card_id, 1m) read 0 for
 * 8 transactions in 8 s when the first came from a clock 4 minutes fast); dated back, it would hide itself from
 * windows shorter than the back-dating. The store time is set by the server, rises with the stream sequence,
 * and is the same in the live path and in a rebuild. docs/state.md, "Event time". */
int64_t txn_event_ms(const Verdict__V1__Transaction *t, int64_t store_ms);

#endif

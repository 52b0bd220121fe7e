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
 * answered from the stored decision and the seen-set keeps it from counting twice. Poison is skipped, as live. */
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

/* Replays c->txn_stream from (now - window_ms) up to upto_seq (0 = the stream's last sequence) into v, whose
 * velocity ids come from reg, counting transactions that have a decision in c->decisions_stream. Logs a
 * progress line every 2 s. */
vstatus rebuild_velocity(jsCtx *js, const config *c, const featreg *reg, velocity *v, uint64_t upto_seq,
                         int64_t window_ms, rebuild_stats *st, verror *e);

/* The highest stream sequence the durable consumer has delivered (0 if it has delivered nothing). */
vstatus rebuild_delivered_seq(jsCtx *js, const config *c, uint64_t *seq, verror *e);

/* Event time of a transaction: its created_at_ms when set and within [store - 24h, store + 5 min] (a client
 * clock cannot push an event outside the windows), else the JetStream store time. */
int64_t txn_event_ms(const Verdict__V1__Transaction *t, int64_t store_ms);

#endif

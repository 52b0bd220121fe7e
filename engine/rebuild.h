/* rebuild.h - filling velocity state from the TXN stream: on restart before any new work is taken, when a
 * reload brings velocity features the running state does not keep, and when the sequencing stage must catch up
 * over sequences the consumer did not hand it.
 *
 * The state at stream position P counts, in stream order, every transaction of TXN with sequence <= P that
 * decodes (each txn_id once), at event time = store time: the same step as serving (seq_step in sequencer.h),
 * so a rebuilt state equals the state of a process that never stopped. Whether a transaction was decided does
 * not matter: what is counted is a function of the stream alone (docs/state.md, "Deterministic features"). The
 * features of the sequences the caller names (ring_after < seq) are recorded in the ring on the way, so the
 * redeliveries of messages delivered before a crash but not acked are decided with their own features.
 *
 * Complete or failed: TXN is read to upto_seq (or its last sequence at open). A read that stalls (no message
 * for 5 s: a stopped or electing server), or fails, fails the rebuild with "velocity rebuild incomplete" and the
 * sequence reached: a state built from part of the window would count too low while the engine says it is
 * ready. The caller refuses the start or the reload. */
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
    uint64_t duplicates;             /* decodable, txn_id already counted (not counted again) */
    uint64_t ringed;                 /* features recorded in the ring */
    uint64_t upto_seq;               /* the position reached: every sequence up to it is counted */
    double seconds;
} rebuild_stats;

struct featring;

/* Which part of TXN a rebuild reads. */
typedef struct rebuild_range {
    uint64_t from_seq;      /* first sequence (0: the first stored at or after from_ns) */
    int64_t from_ns;        /* used when from_seq is 0 */
    uint64_t upto_seq;      /* last sequence (0: the stream's last sequence at open) */
    struct featring *ring;  /* optional: features of sequences above ring_after are recorded there */
    uint64_t ring_after;
    bool quiet;             /* no progress lines (a catch-up of a few sequences) */
} rebuild_range;

/* Counts TXN's transactions of rr into v, which must be compatible with pl (transactions are read into
 * pl->reg's ids). Logs a progress line every 2 s. Returns V_OK only when the read reached its end (then
 * st->upto_seq is the position the state is at); otherwise an error, with v partly filled (discard it). */
vstatus rebuild_velocity(jsCtx *js, const config *c, const velocity_plan *pl, velocity *v, const rebuild_range *rr,
                         rebuild_stats *st, verror *e);

/* The sequencing stage's catch-up reader: one follower of TXN (streamread.h) kept open between catch-ups, so
 * that a gap before nearly every message (an engine that decides some partitions and counts the others' in
 * stream order, docs/architecture.md) costs no consumer creation each. One thread uses it at a time. */
typedef struct catchup_reader catchup_reader;

/* Counts TXN's sequences pos+1..to into v exactly as rebuild_velocity does (every one's features recorded in
 * ring when there is one), reading on from where *crp is; messages it delivers at or below pos (counted by the
 * caller from its own consumer) are skipped, and the first one after `to` is kept for the next call. *crp is
 * opened at pos+1 when NULL, and reopened there when it cannot serve (it has passed pos+1 already, or dropped
 * messages); *opened says so. A read that fails or stalls (STALL_MS with nothing delivered and stored
 * messages not read yet) fails as rebuild_velocity does, v partly filled; *crp is then closed and NULL.
 * Sequences up to `to` that were deleted are found out by asking the server, after a short wait. */
vstatus catchup_read(catchup_reader **crp, jsCtx *js, const config *c, const velocity_plan *pl, velocity *v,
                     struct featring *ring, uint64_t pos, uint64_t to, rebuild_stats *st, bool *opened, verror *e);
/* Closes *crp (NULL after) when no catch-up used it for idle_ns: a follower left alone buffers every new
 * message of TXN. True when it was closed. */
bool catchup_reader_idle(catchup_reader **crp, int64_t idle_ns);
void catchup_reader_close(catchup_reader *cr);

/* The store time (ns) of TXN's message at seq, or 0 when there is none. */
int64_t rebuild_store_ns(jsCtx *js, const config *c, uint64_t seq);

/* The consumer's position: the highest sequence it has delivered and its ack floor (0 if none). */
vstatus rebuild_consumer_seqs(jsCtx *js, const config *c, uint64_t *delivered, uint64_t *ack_floor, verror *e);

/* Event time of a transaction for its velocity windows and time-of-day features: the JetStream store time.
 * created_at_ms is not used: it is the client's word, and one transaction dated ahead moved its card's newest
 * bucket forward so that the card's on-time transactions were dropped as late (count(card_id, 1m) read 0 for
 * 8 transactions in 8 s when the first came from a clock 4 minutes fast); dated back, it would hide itself from
 * windows shorter than the back-dating. The store time is set by the server, rises with the stream sequence,
 * and is the same in the live path and in a rebuild. docs/state.md, "Event time". */
int64_t txn_event_ms(const Verdict__V1__Transaction *t, int64_t store_ms);

#endif

/* dlq.h - dead letters: the one builder every writer uses, and the advisory-driven DLQ worker.
 *
 * Two writers store dead letters: a pipeline worker for poison (at once, before it terms the message), and the
 * DLQ worker for what the server gives up on. When a transaction reaches MaxDeliver (or is terminated),
 * nats-server publishes an advisory, which the VERDICT_ADVISORIES stream captures durably (it exists before the
 * consumer, so none is missed). The DLQ worker pulls those advisories, reads the original message by stream
 * sequence, checks DECISIONS (a decision whose PubAck was lost on the last delivery is stored all the same:
 * then there is no dead letter), publishes the original unchanged to dlq.<reason> with Nats-Msg-Id
 * dlq-<stream>-<seq>, deletes it from TXN, and only then acks the advisory. Every step is idempotent, so
 * running twice or crashing in between yields one dead letter, counted once. */
#ifndef VERDICT_DLQ_H
#define VERDICT_DLQ_H

#include "codec.h"
#include "config.h"

#include <nats/nats.h>
#include <stdatomic.h>

/* --- building a dead letter ------------------------------------------------------------------------------ */

/* Lineage: Verdict-Replay-Of lists the TXN sequences a message replays, newest first ("17,9"). `verdict dlq
 * replay` writes it, dead letters carry it on, and `verdict audit` reads it from both TXN and DLQ. */
#define DLQ_LINEAGE_HDR "Verdict-Replay-Of"
#define DLQ_LINEAGE_MAX 512 /* bytes of the list; older entries beyond it are dropped */

/* Builds the dead letter of orig (a TXN message): orig's bytes unchanged, on <dlq_prefix>.<reason>, with
 * Nats-Msg-Id dlq-<txn_stream>-<orig_seq> (so every writer and every retry stores it once), Verdict-Dlq-Reason,
 * Verdict-Error, Verdict-Original-Subject, Verdict-Original-Seq, Verdict-Deliveries, Verdict-Txn-Id when known,
 * and orig's lineage. txn_id may be NULL: then orig's Nats-Msg-Id is used when it is a valid txn id. Every
 * value is sanitized (control characters such as CR and LF become spaces; lengths capped): err and the copied
 * headers come from whoever published the original, and a bare LF in a header makes nats-server close the
 * connection. The caller owns *out. */
natsStatus dlq_letter_new(natsMsg **out, const config *c, poison_reason why, const char *err, natsMsg *orig,
                          uint64_t orig_seq, uint64_t deliveries, const char *txn_id);

/* Copies src into dst (cap bytes) with control characters replaced by spaces; for header values. */
void dlq_sanitize(char *dst, size_t cap, const char *src);

/* Lineage list for a replay of the message at seq whose own lineage was prev (may be NULL or ""): "seq,prev",
 * keeping only the well-formed part of prev (decimal sequences separated by commas) and dropping the oldest
 * entries beyond DLQ_LINEAGE_MAX. cap must be at least DLQ_LINEAGE_MAX + 1. */
void dlq_lineage_push(char *out, size_t cap, uint64_t seq, const char *prev);

/* Parses the next sequence of a lineage list at *p (advancing it); false at the end or at a malformed entry. */
bool dlq_lineage_next(const char **p, uint64_t *seq);

/* --- the DLQ worker -------------------------------------------------------------------------------------- */

typedef struct dlq_worker dlq_worker;

/* The sweep: advisories are best effort (a server can fail to publish one, or the capture miss it during a
 * cluster fault: issue 21), so every c->sweep_interval_ms the DLQ worker's thread also looks at what the
 * consumer has finished with (TXN messages at or below its ack floor of the previous pass, so advisories had a
 * whole interval to arrive) and that is still in TXN without a decision: the dead letter is written if it is
 * not stored yet, and the original deleted, as the advisory would have had done. What `verdict audit --repair`
 * does by hand, minus the re-drive; bounded per pass (docs/operations.md, "The sweep"). */
typedef struct dlq_sweep_stats {
    atomic_llong passes;            /* passes that ran to their end (or to their bound) */
    atomic_llong examined;          /* TXN messages looked at */
    atomic_llong dead_lettered;     /* dead letters the sweep stored (also counted in the dead-letter totals) */
    atomic_llong originals_deleted; /* originals whose dead letter was stored already (a lost advisory), deleted */
    atomic_llong errors;            /* passes or messages cut short by a failure: tried again at the next pass */
} dlq_sweep_stats;

/* Creates (or binds to) the durable consumer "<consumer>_dlq" on VERDICT_ADVISORIES and starts the thread.
 * Per dead letter it stores it increments *total and by_reason[reason] (either may be NULL); the sweep counts
 * into *sweep (may be NULL). */
vstatus dlq_worker_start(const config *c, natsConnection *nc, atomic_llong *total, atomic_llong *by_reason,
                         dlq_sweep_stats *sweep, dlq_worker **out, verror *e);
/* Stops after the advisory in hand is finished. */
void dlq_worker_stop(dlq_worker *w);
/* MAX_DELIVERIES advisories whose transaction had a stored decision after all (no dead letter written). */
long long dlq_worker_decided_late(dlq_worker *w);

/* What handling one advisory did. */
typedef enum dlq_action {
    DLQ_SKIPPED = 0,   /* not about our stream, or handled before (the original is gone): nothing to count */
    DLQ_DEAD_LETTERED, /* a dead letter is stored (now, or by an earlier attempt that did not finish) and the
                          original deleted: count it */
    DLQ_WORKER_LETTER, /* a pipeline worker stored the dead letter (poison, then term) and counted it: the
                          original is deleted, nothing more to count */
    DLQ_DECIDED_LATE,  /* the transaction has a stored decision (its PubAck was lost): no dead letter, the
                          original stays in TXN like every decided transaction */
} dlq_action;

/* Handles one advisory payload (JSON); exposed for tests. Returns V_OK when the advisory may be acked, with
 * *act and *why (the dead letter's reason). Any other status: nak and retry. */
vstatus dlq_handle_advisory(const config *c, jsCtx *js, const char *json, int len, dlq_action *act,
                            poison_reason *why, verror *e);

#endif

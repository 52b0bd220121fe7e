/* dlq.h - dead letters for what the workers could not finish: the advisory-driven DLQ worker.
 *
 * When a transaction reaches MaxDeliver (or is terminated), nats-server publishes an advisory, which the
 * VERDICT_ADVISORIES stream captures durably (it exists before the consumer, so none is missed). The DLQ
 * worker pulls those advisories, reads the original message by stream sequence, publishes it unchanged to
 * dlq.<reason> with Nats-Msg-Id dlq-<stream>-<seq>, deletes it from TXN, and only then acks the advisory. Every
 * step is idempotent, so running twice or crashing in between yields one dead letter. */
#ifndef VERDICT_DLQ_H
#define VERDICT_DLQ_H

#include "codec.h"
#include "config.h"

#include <nats/nats.h>
#include <stdatomic.h>

typedef struct dlq_worker dlq_worker;

/* Creates (or binds to) the durable consumer "<consumer>_dlq" on VERDICT_ADVISORIES and starts the thread.
 * Per dead letter written it increments *total and by_reason[reason] (either may be NULL). */
vstatus dlq_worker_start(const config *c, natsConnection *nc, atomic_llong *total, atomic_llong *by_reason,
                         dlq_worker **out, verror *e);
/* Stops after the advisory in hand is finished. */
void dlq_worker_stop(dlq_worker *w);

/* Handles one advisory payload (JSON); exposed for tests. Returns V_OK when the advisory may be acked; *wrote
 * says whether a new dead letter was stored, and *why its reason. */
vstatus dlq_handle_advisory(const config *c, jsCtx *js, const char *json, int len, bool *wrote, poison_reason *why,
                            verror *e);

#endif

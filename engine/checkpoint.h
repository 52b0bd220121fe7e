/* checkpoint.h - the engine's velocity checkpoints: every --snapshot-interval and at a stop, the state in force
 * and the feature ring's unacknowledged entries are saved into the verdict_state bucket (snapshot.h), so a
 * restart replays only the transactions after the snapshot's position.
 *
 * Deciding never waits for a save: the snapshot thread asks, the sequencing thread (the state's only writer)
 * copies the state between two batches into a buffer the snapshot thread has prepared (12-15 ms at 1M keys),
 * and the checksum, the upload on a connection of its own and the pruning happen on the snapshot thread.
 * docs/state.md, "Checkpoints". */
#ifndef VERDICT_CHECKPOINT_H
#define VERDICT_CHECKPOINT_H

#include "common.h"

struct engine;
typedef struct checkpoint checkpoint;

/* Starts the snapshot thread (nothing when --snapshot-interval is 0; *out stays NULL). */
vstatus checkpoint_start(struct engine *en, checkpoint **out, verror *e);

/* On the sequencing thread, between batches: takes the copy a save is waiting for, if any. Cheap otherwise. */
void checkpoint_serve(checkpoint *ck);

/* At a stop, once the sequencing thread has ended: saves the state as it is now (if it moved since the last
 * save), giving up at deadline_ns. */
void checkpoint_final(checkpoint *ck, int64_t deadline_ns);

/* Stops the thread (a save in progress ends with its connection, closed by the engine's closer at the stop
 * deadline) and frees everything. */
void checkpoint_stop(checkpoint *ck);

/* Loads the newest usable snapshot for the start: the state and its ring, at *pos. V_OK, or anything else
 * (logged) for a full rebuild. Refuses a snapshot the stream cannot continue exactly (TXN recreated, or the
 * transactions after it expired) or older than the warm-up span (a full rebuild reads less). */
struct velref;
struct policy;
vstatus checkpoint_load(struct engine *en, const struct policy *p, struct velref **out, verror *e);

#endif

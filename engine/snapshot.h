/* snapshot.h - checkpoints of the velocity state in JetStream, as objects of an Object Store bucket.
 *
 * A restart loads the newest snapshot that fits its policy and replays TXN after the snapshot's position
 * only, instead of the whole longest window. The bytes are velocity_snapshot_write's (velocity.h); this module
 * stores them in the layout of NATS's Object Store (ADR-20), so `nats object ls|info|get` work on it: bucket
 * `verdict_state` (`<prefix>_verdict_state` with --prefix), stream OBJ_<bucket>, an object's chunks on
 * `$O.<bucket>.C.<nuid>` and its description (JSON, rolled up per subject) on `$O.<bucket>.M.<base64url name>`.
 * nats.c 3.4.1 has no Object Store API, so put, get, list and delete are done here on the stream.
 *
 * An object is named `velocity/<consumer>/<position, 20 digits>`: the engine's durable consumer scopes the
 * snapshots (partitions each keep their own), and the position (the TXN sequence up to which the state counts
 * every transaction) orders them. Crash safety: the chunks are written first and the description last, so a
 * save cut short leaves chunks that no description names (skipped, and removed by the prune after a while); a
 * description whose chunks are missing, short or do not match its SHA-256 digest is skipped; a snapshot that
 * velocity_snapshot_read refuses (corrupt, other format version, other plan, too many keys) is skipped. Each
 * skip is logged with its reason, and the next older one is tried; none left means a full rebuild. Design and
 * numbers: docs/state.md, "Checkpoints". Every call blocks on the broker: call them off the deciding thread. */
#ifndef VERDICT_SNAPSHOT_H
#define VERDICT_SNAPSHOT_H

#include "common.h"
#include "config.h"
#include "velocity.h"

#include <nats/nats.h>

#define SNAPSHOT_CHUNK (128 * 1024)               /* ADR-20's default chunk size */
#define SNAPSHOT_ORPHAN_AGE_MS (10 * 60 * 1000LL) /* unnamed chunks older than this are removed by the prune */

/* The bucket's name for c: "verdict_state", or "<prefix>_verdict_state". */
void snapshot_bucket(const config *c, char *out, size_t cap);

/* Stores buf (velocity_snapshot_write's bytes for position) as the object velocity/<consumer>/<position>,
 * creating the bucket when it does not exist (an existing stream without the subjects or rollups it needs is
 * refused, never rewritten). Replacing an object of the same name removes the old one's chunks after. */
vstatus snapshot_save(jsCtx *js, const config *c, const unsigned char *buf, size_t len, uint64_t position, verror *e);

/* Loads the newest usable snapshot of c's consumer for pl into *out (a new state, cfg as velocity_new) and its
 * position. The object may hold more after the state's bytes (velocity_snapshot_length): when extra is not
 * NULL, those bytes are returned in *extra (malloc'd, caller frees; *extra_len may be 0). Tries the snapshots newest first and logs why each one is skipped. V_ENOTFOUND when none is usable
 * (no bucket, no snapshot, or every one refused: e says how many and the last reason): rebuild from scratch.
 * Any other failure (the broker) is an error as well; the caller rebuilds from scratch in every case but V_OK. */
vstatus snapshot_load_newest(jsCtx *js, const config *c, const velocity_plan *pl, const velocity_cfg *cfg,
                             velocity **out, uint64_t *position, unsigned char **extra, size_t *extra_len, verror *e);

/* Keeps the newest keep snapshots of c's consumer and deletes the others (the description first, then the
 * chunks), then removes chunks that no description names and that are older than SNAPSHOT_ORPHAN_AGE_MS
 * (a save cut short, or a delete cut between its two steps). */
vstatus snapshot_prune(jsCtx *js, const config *c, int keep, verror *e);

/* The orphan sweep alone, with a given age (tests pass 0). */
vstatus snapshot_prune_orphans(jsCtx *js, const config *c, int64_t older_than_ms, verror *e);

/* One stored snapshot of c's consumer, as its description says. */
typedef struct snapshot_info {
    char name[192];
    char nuid[40];
    uint64_t position;
    uint64_t size;
    uint32_t chunks;
    int64_t mtime_ns; /* store time of the description */
} snapshot_info;

/* The snapshots of c's consumer, newest (highest position) first; *list is malloc'd (caller frees), *n its
 * length. No bucket is no snapshot (V_OK, n = 0). */
vstatus snapshot_list(jsCtx *js, const config *c, snapshot_info **list, int *n, verror *e);

#endif

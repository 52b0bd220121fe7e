/* replica.h - local, always-in-memory replicas of the verdict_lists and verdict_profiles KV buckets.
 *
 * A replica binds to (or creates) a KV bucket, starts a watcher over every key on its own thread, loads the
 * current values, then applies puts, deletes and purges as they arrive. Per-transaction look-ups read only
 * local memory: no network hop, no allocation. Thread-safety: one writer (the watcher thread) and many
 * readers (worker threads) share a writer-preferring pthread rwlock; a reader holds it for one look-up (or
 * one replica_fill), the writer for one applied update, so neither waits for I/O. A (re)load builds a fresh
 * table off to the side and swaps it in under the lock, so readers never see a half-loaded bucket.
 *
 * Key layout (docs/lists.md), designed so `nats kv put` works as well as `verdict lists`:
 *   verdict_lists     key `<list>.<value>`, value ignored by the engine (`verdict lists add` stores the
 *                     original value there so `ls` can show escaped entries). A value is used verbatim when it
 *                     is 1-128 of [A-Za-z0-9_=/-] and dots with no empty token, and does not start with "h_";
 *                     any other value is escaped as `h_<16 lower-case hex of hash64(value)>`.
 *   verdict_profiles  key = the account_id (same escape), value = a JSON object of profile fields
 *                     ({"account_age_days":12,"home_country":"DE"}); the schema is featreg_profile_type().
 *
 * Freshness: a replica is ready once its first load completed; it is fresh while ready, the connection is up,
 * the watcher reports no error and has applied everything the bucket's stream held at the previous check
 * (checked every ~2 s). A stale replica keeps answering from its last good state; the caller marks the decision
 * degraded and never blocks. */
#ifndef VERDICT_REPLICA_H
#define VERDICT_REPLICA_H

#include "common.h"
#include "featreg.h"

#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct replica replica;

typedef enum replica_kind {
    REPLICA_LISTS = 1,    /* keys <list>.<value>, values ignored */
    REPLICA_PROFILES = 2, /* keys account_id, values JSON objects parsed at update time */
} replica_kind;

/* Longest escaped key: a 63-byte list name, a dot and a 128-byte value. */
#define REPLICA_VALUE_MAX 128
#define REPLICA_KEY_MAX 200

typedef struct replica_stats {
    bool ready;              /* the first load completed */
    bool fresh;              /* ready and current (see the file comment) */
    uint64_t keys;           /* live keys: list entries or profiles */
    uint64_t updates;        /* puts, deletes and purges applied since start */
    uint64_t bad_values;     /* keys refused: bad profile JSON or field types, list keys without a list */
    uint64_t reloads;        /* watcher re-created after an error or lag */
    uint64_t last_revision;  /* highest bucket revision (stream sequence) applied */
} replica_stats;

/* Opens bucket, creating it when absent (history 1: a replica needs only the latest value of each key; an
 * existing bucket is used as it is, whatever its history). storage_replicas applies to creation only. The
 * caller owns kv (kvStore_Destroy). Used by replica_start and the CLI. */
vstatus replica_bucket_open(jsCtx *js, const char *bucket, int storage_replicas, kvStore **kv, verror *e);

/* Starts a replica of bucket on nc (which must outlive it). Returns at once; the first load continues on the
 * watcher thread (see replica_wait_ready). */
vstatus replica_start(replica **out, natsConnection *nc, const char *bucket, replica_kind kind,
                      int storage_replicas, verror *e);

/* Waits until the first load completed or timeout_ms passed; returns replica_ready(). */
bool replica_wait_ready(const replica *r, int timeout_ms);

/* Stops the watcher thread and frees everything. NULL is ignored. */
void replica_stop(replica *r);

bool replica_ready(const replica *r);
bool replica_fresh(const replica *r);
void replica_stats_get(const replica *r, replica_stats *s);

/* --- per-transaction look-ups: no network, no allocation ------------------------------------------------ */

/* Whether value is in list (false when absent, when the list name is invalid, or when r is NULL). */
bool replica_list_has(const replica *r, const char *list, size_t list_len, const char *value, size_t len);

/* One profile field of an account, typed by the profile schema. Returns whether the account has a profile;
 * out->present says whether it has this field. String values point into the replica and stay valid until
 * replica_stop (distinct profile strings are interned and never freed while the replica lives). */
bool replica_profile_field(const replica *r, const char *account, size_t alen, const char *field, size_t flen,
                           fval *out);

/* Fills every FK_LIST slot (vals[def.key_feat]'s string looked up in list def.arg) and every FK_PROFILE slot
 * (field def.arg of the profile of vals[FEAT_ACCOUNT_ID]) of a feature vector whose transaction slots are
 * already filled. A missing key value, account or profile field leaves the slot missing; a list look-up of a
 * present value is present (true or false) once the lists replica is ready. Returns true when every replica
 * the registry uses (has a slot of its kind) is non-NULL and fresh; false means the caller marks the decision
 * degraded. Allocates nothing and never blocks on the network. */
bool replica_fill(const replica *lists, const replica *profiles, const featreg *reg, fval *vals);

/* --- key layout (shared with the CLI) ------------------------------------------------------------------- */

/* Writes value's key token (verbatim or h_<hex>, see above) into out (cap >= REPLICA_VALUE_MAX + 1).
 * Returns its length, or 0 when len == 0. */
size_t replica_key_token(char *out, size_t cap, const char *value, size_t len);

/* Writes `<list>.<token>` into out (cap >= REPLICA_KEY_MAX + 1). Returns its length, or 0 when the list
 * name is not 1-63 of [A-Za-z0-9_-] or the value is empty. */
size_t replica_list_key(char *out, size_t cap, const char *list, size_t list_len, const char *value, size_t len);

#endif

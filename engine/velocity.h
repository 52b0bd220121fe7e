/* velocity.h - per-entity velocity state: counts, sums and distinct counts over sliding windows (1m .. 24h).
 *
 * Pure logic, no NATS. The velocity features to maintain come from a plan (velocity_plan): a registry's
 * FK_VELOCITY defs in canonical order, sorted by canonical name. The state knows its features by name only and
 * is preallocated at velocity_new, so a transaction allocates nothing. Feature ids belong to a registry, and two
 * policies may give one id to different features, so every call passes the plan of the caller's registry, and
 * the state reads and writes exactly that plan's ids: the velocity feature slots, and the key and value fields
 * it reads. A state serves a plan whose definitions are exactly its own (velocity_compatible, both ways), under
 * whatever ids; any other plan is refused (nothing read or written), so a state can never write a number into
 * a slot that a policy uses for a string, a list flag or a model input.
 * Entities are the values of the key fields those defs name (card_id, account_id, device_id, ip, ...). Each
 * key field has its own table of up to max_keys entities with least-recently-seen eviction, so a flood of new
 * IPs cannot evict card history. Windows are kept in fixed-size buckets keyed by EVENT time (the time passed
 * in; the engine passes the JetStream store time, never the client's created_at: txn_event_ms); a window of W covers the bucket holding the event time plus the ceil(W/b)-1 buckets before
 * it, so it is rounded to its bucket size b: the smallest of 5s .. 2h that spans W in at most 12 buckets
 * (1m: 5s, 10m: 1m, 1h: 5m, 24h: 2h; always b <= W/5). Distinct counts use 10 s stamps the same way.
 *
 * Late and out-of-order events: an event is added to the bucket of its own time when that bucket is still
 * held (at most ceil(W/b) buckets behind the newest event of the entity); an older event is dropped for that
 * window (no window at or after the entity's newest event could reach it). Features for a late event count
 * the buckets up to its own time only; buckets already recycled are missing from its answer.
 *
 * Distinct counts keep, per entity and field, the last-seen time of up to VELOCITY_DISTINCT_EXACT values: exact
 * while at most that many distinct values are in the window; beyond it they degrade to a bottom-k hash sample
 * whose estimate has a relative standard error of about 1/sqrt(VELOCITY_DISTINCT_EXACT - 1) (38% for 8).
 *
 * Exactly once: velocity_add keeps a bounded seen-set of the last seen_cap transaction ids and counts a txn_id
 * at most once while it is remembered. Full design and measured numbers: docs/state.md.
 *
 * Thread-safety: every call takes the velocity's internal mutex, so workers may share one velocity (also with
 * different compatible plans: a batch under the old policy and one under the new); velocity_features_and_add
 * computes and counts under one lock, which is what exactly-once needs. velocity_compatible and
 * velocity_serves read only what velocity_new fixed, and need no lock. */
#ifndef VERDICT_VELOCITY_H
#define VERDICT_VELOCITY_H

#include "common.h"
#include "featreg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VELOCITY_DISTINCT_EXACT 8

typedef struct velocity velocity;

typedef struct velocity_cfg {
    size_t max_keys; /* entities tracked per key field; 0 = 1,000,000 */
    size_t seen_cap; /* transaction ids remembered for dedupe; 0 = 1,048,576 */
} velocity_cfg;

typedef struct velocity_stats_t {
    uint64_t keys;        /* entities tracked, all key fields */
    uint64_t evictions;   /* entities evicted to make room (least recently seen first) */
    uint64_t seen;        /* transaction ids in the seen-set */
    uint64_t duplicates;  /* velocity_add calls refused because the txn_id was seen */
    uint64_t late_drops;  /* (event, bucket ring) additions dropped because the event was older than the window held */
    uint64_t bytes;       /* all memory allocated: bytes_state + bytes_seen + the velocity struct */
    uint64_t bytes_state; /* entity records and their index, at capacity (allocated up front) */
    uint64_t bytes_seen;  /* the seen-set */
    uint32_t record_bytes[8]; /* bytes per entity record, per key field (in registry order of first use) */
    int key_feats[8];         /* the key field of each record_bytes entry (its id in the plan v was built from) */
    int n_key_feats;
} velocity_stats_t;

/* The velocity features of one registry, in canonical order (by canonical name), with their ids in that
 * registry. A policy owns the plan of its registry (policy_velocity_plan); reg must outlive the plan. */
typedef struct velocity_plan_feat {
    int16_t id;    /* the feature */
    int16_t key;   /* its key field (card_id, ...) */
    int16_t value; /* sum: the summed field; distinct: the counted field; count: -1 */
} velocity_plan_feat;

typedef struct velocity_plan {
    const featreg *reg;
    int n;
    velocity_plan_feat f[FEAT_MAX];
    uint64_t sig; /* hash of the canonical definitions (name, aggregate, window, key and value field names) */
} velocity_plan;

/* The plan of reg's FK_VELOCITY defs (none is fine: n = 0). */
void velocity_plan_init(velocity_plan *pl, const featreg *reg);

/* Creates the state for the features of pl (cfg may be NULL for the defaults). Allocates all memory up front.
 * Fails with V_EINVAL/V_ENOMEM and a message if pl has more key fields, bucket sizes or value fields than the
 * fixed limits, or memory is short. Keeps nothing of pl but the definitions (by name). */
vstatus velocity_new(const velocity_plan *pl, const velocity_cfg *cfg, velocity **out, verror *e);
void velocity_free(velocity *v);

/* True when v keeps exactly the features of pl, no more and no fewer, compared by their full definitions
 * (names, aggregates, windows, key and value field names), whatever their ids. Call it when a policy is
 * loaded: if false, build a new velocity for the policy's plan and fill it from TXN before deciding with it. */
bool velocity_compatible(const velocity *v, const velocity_plan *pl);

/* The cheap check the per-transaction calls make: pl has the signature of v's definitions (true whenever
 * velocity_compatible is). The calls below do nothing for a plan v does not serve. */
bool velocity_serves(const velocity *v, const velocity_plan *pl);

/* Fills the velocity slots of vals (pl's ids) from the state as it is, i.e. before this transaction: present
 * with the value, or missing when the key field is missing. vals already holds the transaction's fields
 * (features_from_txn). event_ms is the event time (txn_event_ms). */
void velocity_features(velocity *v, const velocity_plan *pl, fval *vals, int64_t event_ms);

/* Counts the transaction in vals once: returns false (and changes nothing) when vals[FEAT_TXN_ID] is in the
 * seen-set, or when v does not serve pl. A transaction without a txn_id is always counted. */
bool velocity_add(velocity *v, const velocity_plan *pl, const fval *vals, int64_t event_ms);

/* velocity_features then velocity_add under one lock. Returns what velocity_add returns; for a duplicate the
 * features are still filled, from a state that already includes the transaction. */
bool velocity_features_and_add(velocity *v, const velocity_plan *pl, fval *vals, int64_t event_ms);

/* Prefetching across transactions (the sequencer: seqstage.c, docs/state.md "Prefetching"). A lookup is two
 * dependent cache misses per key field (its index slot, then its record), which one transaction's own
 * prefetches cannot hide. A caller that has the next transactions' fields at hand starts them early:
 * velocity_keys hashes a transaction's key fields and starts loading their index slots and its seen-set slot;
 * one transaction later velocity_prefetch_recs reads those slots (cached by then) and starts loading the
 * records; velocity_features_and_add_keyed then counts it with the keys already hashed. Only hints: the state
 * may change between the calls (a new key, an eviction, a catch-up), and the keyed call looks everything up
 * again, so the features and counts are exactly velocity_features_and_add's. Only the thread that adds may call
 * these (the state's only writer, so it reads without the lock). */
#define VELOCITY_MAX_KEYS 8
typedef struct vkeys {
    uint64_t key[VELOCITY_MAX_KEYS];
    bool have[VELOCITY_MAX_KEYS];
    uint64_t txn; /* the seen-set hash (0: no txn_id) */
    bool set;     /* filled by velocity_keys for a plan v serves */
} vkeys;

void velocity_keys(const velocity *v, const velocity_plan *pl, const fval *vals, vkeys *k);
void velocity_prefetch_recs(const velocity *v, const vkeys *k);
/* velocity_features_and_add with k from velocity_keys for these vals (k->set false: hashes them itself). */
bool velocity_features_and_add_keyed(velocity *v, const velocity_plan *pl, fval *vals, int64_t event_ms,
                                     const vkeys *k);

void velocity_stats(velocity *v, velocity_stats_t *out);

/* --- snapshots (docs/state.md, "Checkpoints") ---------------------------------------------------------------
 * A snapshot is the whole state as bytes: the live records of each table (cost proportional to the keys in use,
 * not to max_keys), their LRU order and newest times, distinct sets and thresholds, the seen-set in FIFO order
 * and the counters, under a header that names the format version, the plan's definitions (canonical names and
 * signature), the bucket layout of each table and the position the caller says the state is at. A state read
 * back continues exactly as the one written would have: the same features for every transaction after it. */

/* The bytes velocity_snapshot_write needs for the state as it is now (exact; the state only grows through
 * velocity_add, so a bound taken on the thread that adds holds for a write on that thread). */
size_t velocity_snapshot_bound(const velocity *v);

/* Writes the state into buf (cap bytes) with position (the caller's: for the engine, the TXN stream sequence
 * of the last transaction the state counts) and taken_ms (wall clock). *len is set to the bytes written, or to
 * the bytes needed when cap is short (V_ENOMEM, nothing usable written). Holds the state's lock only while
 * copying (a memcpy of the live records and the seen-set); the CRC-32C over the copy is computed after. */
vstatus velocity_snapshot_write(const velocity *v, uint64_t position, int64_t taken_ms, unsigned char *buf, size_t cap,
                                size_t *len, verror *e);

/* velocity_snapshot_write in two halves, so that the thread owning the state can do only the copy and hand the
 * CRC-32C (about 20 ms at 1M keys) to another thread: velocity_snapshot_copy leaves the checksum out (a read
 * refuses the bytes until they are sealed), velocity_snapshot_seal(buf, len) writes it. */
vstatus velocity_snapshot_copy(const velocity *v, uint64_t position, int64_t taken_ms, unsigned char *buf, size_t cap,
                               size_t *len, verror *e);
void velocity_snapshot_seal(unsigned char *buf, size_t len);

/* The length of the snapshot that starts buf (its header's total), or 0 when buf does not start with one or is
 * shorter: lets a caller store more after the state's bytes (the engine stores the feature ring's entries). */
size_t velocity_snapshot_length(const unsigned char *buf, size_t len);

/* Creates a state for pl (with cfg, as velocity_new) from a snapshot, and gives its position and taken_ms
 * (either may be NULL). Refuses, with V_EINVAL and the reason, and never a partly right state: a truncated or
 * padded buffer, a checksum mismatch, another format version or byte order, a plan with other definitions (by
 * canonical name, aggregate, window, key and value field) or another bucket layout, more keys in a table than
 * cfg's max_keys, malformed links. A cfg seen_cap smaller than the snapshot's seen-set keeps its newest ids. */
vstatus velocity_snapshot_read(const velocity_plan *pl, const velocity_cfg *cfg, const unsigned char *buf, size_t len,
                               velocity **out, uint64_t *position, int64_t *taken_ms, verror *e);

#endif

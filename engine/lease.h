/* lease.h - ownership of a durable consumer (a partition) through JetStream KV leases: compare-and-set writes, expiry measured on the
 * contender's own monotonic clock, no clock agreement between machines needed.
 *
 * One KV entry per lease in the bucket `verdict_leases`, keyed by what it owns: the durable consumer's name
 * (`verdict`, or `verdict-p<P>` for partition P), value
 * {"owner":"<instance>","epoch":E,"ttl_ms":T}. Every write is a compare-and-set on the entry's last revision, so
 * of two engines writing the same revision exactly one wins (the stream leader decides; a stale read only makes a
 * CAS fail). The rules, whose proof is in docs/architecture.md ("Partitions: ownership"):
 *  - a holder renews with CAS on the revision it wrote; its lease is valid until the monotonic time it SENT its
 *    last successful renewal plus its TTL minus a margin (lease_valid); past that it must stop taking work;
 *  - a contender takes a lease only after it has seen the same revision unchanged for the TTL written in it,
 *    measured from the moment it FIRST READ that revision. It read the revision after the holder sent it, so the
 *    holder's validity ends before the contender's wait does, whatever the two clocks read;
 *  - a released lease (owner "") or an absent entry is taken at once, still by CAS;
 *  - every change of owner increments the epoch: a fencing token that decisions and logs can carry.
 * The instance string is the engine id plus a random suffix per process, so a restarted engine with the same
 * --engine-id waits out its previous incarnation's lease like anyone else. Every call blocks on the broker
 * (a KV get and at most one write): call them off the deciding threads. */
#ifndef VERDICT_LEASE_H
#define VERDICT_LEASE_H

#include "common.h"
#include "config.h"

#include <nats/nats.h>

#define LEASE_OWNER_MAX 96

typedef struct lease_table lease_table;

#define LEASE_NAME_MAX 64

/* One lease as this engine sees it. Set it up with lease_init before the first lease_step. */
typedef struct lease {
    char name[LEASE_NAME_MAX];    /* the KV key: what is owned */
    bool held;                    /* this instance holds it (check lease_valid before acting on it) */
    uint64_t epoch;               /* the epoch of the last revision read or written */
    uint64_t revision;            /* the KV revision last read or written */
    int64_t valid_until_ns;       /* holder: mono_ns() after which it must stop without a renewal */
    int64_t observed_ns;          /* contender: mono_ns() when `revision` was first read */
    int64_t foreign_ttl_ms;       /* contender: the TTL the current owner wrote */
    char owner[LEASE_OWNER_MAX];  /* the owner of the last revision read ("" = released or never held) */
    bool no_take;                 /* set by the caller: observe a free or expired lease, do not take it (an
                                     engine that holds its share of the partitions already) */
} lease;

/* The bucket's name for c: "verdict_leases", or "<prefix>_verdict_leases". */
void lease_bucket(const config *c, char *out, size_t cap);

/* Opens (creating if absent, with replicas copies) the lease bucket for this engine. ttl_ms is the lease
 * length this instance writes (>= 600 ms); engine_id is combined with a random suffix into the instance. */
vstatus lease_open(lease_table **out, jsCtx *js, const char *bucket, const char *engine_id, int64_t ttl_ms,
                   int replicas, verror *e);
void lease_close(lease_table *t);

/* This process's instance string ("<engine_id>/<8 hex>"). */
const char *lease_instance(const lease_table *t);

/* name: 1..LEASE_NAME_MAX-1 characters of [A-Za-z0-9_-] (a consumer name); false when it is not one. */
bool lease_init(lease *l, const char *name);

/* One step of the protocol for l: renews it when held, takes it when free or expired, and otherwise records
 * what it saw. Call at least every TTL/3. Returns V_OK when the step ran (whatever its outcome: see l->held);
 * an error when the broker could not be asked (l is then unchanged apart from a lost CAS: a holder stays valid
 * until valid_until_ns and no longer). */
vstatus lease_step(lease_table *t, lease *l, verror *e);

/* Whether this instance may act as the owner at monotonic time now_ns. */
bool lease_valid(const lease *l, int64_t now_ns);

/* Gives a held lease up (owner "" by CAS), so a contender takes it at once. A lease not held is left alone. */
vstatus lease_release(lease_table *t, lease *l, verror *e);

#endif

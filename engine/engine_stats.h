/* engine_stats.h - what a running engine counts and which phase of its start it is in: plain data, read by
 * observe.c (metrics, /readyz, $SRV) through observe_source without depending on the engine itself. */
#ifndef VERDICT_ENGINE_STATS_H
#define VERDICT_ENGINE_STATS_H

#include "codec.h"
#include "dlq.h"

#include <stdatomic.h>
#include <stdint.h>

/* Upper bounds (µs) of the decision latency histogram buckets (store time -> decision stored); +Inf follows. */
#define LATENCY_BUCKETS 12
extern const int64_t latency_bounds_us[LATENCY_BUCKETS];

typedef struct engine_stats {
    atomic_llong decided[4]; /* by Verdict__V1__Outcome */
    atomic_llong duplicates; /* answered from the stored decision */
    atomic_llong decisions_restored; /* Duplicate PubAcks with no stored decision behind them: stored again */
    atomic_llong transactions_restored; /* retries confirmed before but missing from TXN: stored again */
    atomic_llong dead_letters;
    atomic_llong dead_letters_by[DEAD_REASONS]; /* by poison_reason (codec.h) */
    atomic_llong naks;
    atomic_llong redeliveries;
    atomic_llong budget_exceeded;
    atomic_llong degraded;
    atomic_llong requests;       /* ingress requests */
    atomic_llong request_errors; /* ingress requests refused */
    atomic_llong reply_to_ignored; /* Verdict-Reply-To headers not honoured (not the ingress's, or not an inbox) */
    atomic_llong reloads;         /* policies swapped in */
    atomic_llong reload_failures; /* rules or models refused */
    atomic_llong latency_bucket[LATENCY_BUCKETS + 1]; /* decisions by latency (non-cumulative), last = +Inf */
    atomic_llong latency_sum_us;
    atomic_llong stage_ns[3]; /* features, model, rules: summed over decisions */
    /* the sequencing stage (sequencer.h) */
    atomic_llong features_inexact;      /* redeliveries older than the feature ring: decided with today's state */
    atomic_llong sequence_catch_ups;    /* reads of TXN for sequences the consumer did not hand over */
    atomic_llong sequence_gap_msgs;     /* transactions counted by those reads */
    atomic_llong sequence_gap_failures; /* reads that failed: those transactions are not counted */
    atomic_llong sequence_catchup_reader_opens; /* consumers opened by the catch-up reader (rebuild.h) */
    /* checkpoints (checkpoint.c) */
    atomic_llong snapshots, snapshot_failures;
    atomic_llong snapshot_position; /* of the last saved */
    atomic_llong snapshot_unix_ms;  /* when it was saved */
    /* the consumer's lease (standby.c; --lease-ttl) */
    atomic_llong lease_epoch;  /* of the lease this engine holds; 0 while it stands by or without a lease */
    atomic_llong lease_losses; /* leases taken over by another instance while this one held them */
    atomic_llong partitions_owned; /* --partitions: how many this engine decides now (partset.c) */
    /* Decision publishes, for /readyz (observe.c): mono_ns of the last one that failed or timed out, and of the
     * first failure since the last success (0 once one succeeds). Plain atomics: readiness never takes a lock. */
    atomic_llong decision_fail_ns;
    atomic_llong decision_failing_since_ns;
    dlq_sweep_stats sweep; /* the DLQ worker's sweep (dlq.h) */
    /* the shadow policy (shadow.h): never part of the live path's counts above */
    atomic_llong shadow_decided[4];        /* shadow decisions handed to nats.c, by outcome */
    atomic_llong shadow_stored;            /* shadow decisions stored in SHADOW (PubAcks) */
    atomic_llong shadow_publish_failures;  /* not stored (an error, no PubAck): counted, the live message unaffected */
    atomic_llong shadow_dropped;           /* not published: too many shadow publishes in flight */
    atomic_llong shadow_skipped;           /* not decided: the live policy lacks a candidate's velocity feature */
    atomic_llong shadow_reloads, shadow_reload_failures;
    atomic_llong shadow_cpu_ns; /* worker thread CPU spent on shadow decisions and their publishes */
    atomic_int shadow_active;              /* a candidate is in force */
} engine_stats;

/* Records the outcome of one decision publish (a PubAck stored or Duplicate: ok; an error or timeout: not). */
static inline void engine_stats_decision_published(engine_stats *st, bool ok, int64_t now_ns)
{
    if (ok) {
        if (atomic_load_explicit(&st->decision_failing_since_ns, memory_order_relaxed))
            atomic_store(&st->decision_failing_since_ns, 0);
        return;
    }
    long long zero = 0;
    atomic_store(&st->decision_fail_ns, now_ns);
    atomic_compare_exchange_strong(&st->decision_failing_since_ns, &zero, now_ns);
}

/* Where a start has got to: /readyz reports it. Each phase implies the ones before it completed. */
typedef enum engine_phase {
    PHASE_CONNECTING = 0, /* rules and model loaded; connecting to NATS */
    PHASE_VERIFYING,      /* connected; creating or verifying streams, consumers and buckets */
    PHASE_REBUILDING,     /* streams verified; rebuilding the velocity state from the stream */
    PHASE_STANDBY,        /* state built; another engine holds the consumer's lease (--lease-ttl) */
    PHASE_STARTING,       /* state rebuilt; starting workers and responders */
    PHASE_READY,          /* taking work */
    PHASE_STOPPING,
} engine_phase;
const char *engine_phase_str(engine_phase p);

#endif

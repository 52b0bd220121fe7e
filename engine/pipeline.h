/* pipeline.h - the running engine: ingress responder, worker threads, and the commit protocol.
 *
 * Each worker owns one pull subscription bound to the durable consumer, one decode arena and one encode
 * buffer, and takes a message through: decode -> validate -> decide -> publish decision (Nats-Msg-Id = txn_id)
 * -> wait for PubAck -> reply to Verdict-Reply-To -> ack. A PubAck marked Duplicate means the transaction was
 * decided before: the stored decision is read back by sequence and replayed, never a second one. Poison goes
 * to dlq.<reason> and is termed; a failed publish is naked with the consumer's BackOff. */
#ifndef VERDICT_PIPELINE_H
#define VERDICT_PIPELINE_H

#include "codec.h"
#include "config.h"
#include "dlq.h"
#include "velocity.h"

#include <stdatomic.h>

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
    /* Decision publishes, for /readyz (observe.c): mono_ns of the last one that failed or timed out, and of the
     * first failure since the last success (0 once one succeeds). Plain atomics: readiness never takes a lock. */
    atomic_llong decision_fail_ns;
    atomic_llong decision_failing_since_ns;
    dlq_sweep_stats sweep; /* the DLQ worker's sweep (dlq.h) */
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

typedef struct engine engine;

/* Connects, sets up streams and consumer, starts the ingress and the workers. */
vstatus engine_start(const config *c, engine **out, verror *e);

/* The same, abandoned (V_ESTOPPED, or the error of a call cut short) soon after *stop becomes true: the phases
 * check it, and the connections are closed so that a call blocked on NATS returns. */
vstatus engine_start_until(const config *c, const atomic_bool *stop, engine **out, verror *e);

/* How long engine_stop takes at most when no deadline was requested before it. */
#define ENGINE_STOP_MS 3000

/* Starts a stop that ends by deadline_ns (mono_ns): stops fetching and taking requests now, and closes the
 * connections at the deadline (or at once if NATS is down), so that every step of engine_stop and any reload
 * in progress return by then. Callable from any thread, also while another thread is in engine_reload_now;
 * the first deadline holds. Work in flight is finished while NATS is up, and never acked before its decision
 * is stored: what the deadline cuts short is redelivered. */
void engine_request_stop(engine *en, int64_t deadline_ns);

/* Stops (engine_request_stop with ENGINE_STOP_MS unless a stop was requested), finishes in-flight messages,
 * flushes and frees everything. No other call on en may be in progress or follow. */
void engine_stop(engine *en);

const engine_stats *engine_get_stats(const engine *en);

/* Transactions at max-deliver that the DLQ worker found decided (no dead letter written). */
long long engine_dlq_decided_late(engine *en);

/* Where a start has got to: /readyz reports it. Each phase implies the ones before it completed. */
typedef enum engine_phase {
    PHASE_CONNECTING = 0, /* rules and model loaded; connecting to NATS */
    PHASE_VERIFYING,      /* connected; creating or verifying streams, consumers and buckets */
    PHASE_REBUILDING,     /* streams verified; rebuilding the velocity state from the stream */
    PHASE_STARTING,       /* state rebuilt; starting workers and responders */
    PHASE_READY,          /* taking work */
    PHASE_STOPPING,
} engine_phase;
const char *engine_phase_str(engine_phase p);
engine_phase engine_get_phase(const engine *en);

/* Ready to decide: started (streams verified, state rebuilt, rules and model loaded), connected to NATS and
 * not stopping. */
bool engine_ready(const engine *en);
/* Both connections up (either may be reconnecting). */
bool engine_connected(const engine *en);

/* The velocity state's counters; false before the state exists. */
bool engine_state_stats(engine *en, velocity_stats_t *out);
const config *engine_config(const engine *en);

/* Rebuilds the policy from the configured rules and model files and swaps it in between batches. A file that
 * does not compile or load is refused (logged, counted) and the running policy stays. */
vstatus engine_reload(engine *en, const char *why, verror *e);

/* SIGHUP: reloads from the source in force (the KV rules when set, else the files). */
vstatus engine_reload_now(engine *en, const char *why, verror *e);

/* The same with rules text from elsewhere (the verdict_rules KV bucket); name labels messages. */
vstatus engine_reload_rules_text(engine *en, const char *src, size_t len, const char *name, verror *e);

/* The last decide request refused ("<code>: <text>", empty if none), for $SRV.STATS. */
void engine_last_error(engine *en, char *out, size_t cap);

/* The versions in force (cap bytes each). */
void engine_current_versions(engine *en, char *rules, char *model, size_t cap);

#endif

/* pipeline.h - the running engine's API: start, stop, reload, and what it reports.
 *
 * Inside (engine_int.h): one sequencing thread pulls the durable consumer and computes each transaction's
 * velocity features in stream order (seqstage.c); workers take whole batches through decode -> validate ->
 * decide -> publish decision (Nats-Msg-Id = txn_id) -> wait for PubAck -> reply to Verdict-Reply-To -> ack
 * (commit.c). A PubAck marked Duplicate means the transaction was decided before: the stored decision is read
 * back and replayed, never a second one (decisions.c). Poison goes to dlq.<reason> and is termed; a failed
 * publish is naked with the consumer's BackOff. The ingress and its duplicate resolver are ingress.c, reloads
 * policyswap.c, the lifecycle engine.c. */
#ifndef VERDICT_PIPELINE_H
#define VERDICT_PIPELINE_H

#include "codec.h"
#include "config.h"
#include "engine_stats.h"
#include "velocity.h"

#include <stdatomic.h>

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

engine_phase engine_get_phase(const engine *en);

/* Ready to decide: started (streams verified, state rebuilt, rules and model loaded), connected to NATS and
 * not stopping. */
bool engine_ready(const engine *en);
/* Another instance took the consumer's lease from this engine (--lease-ttl): it is stopping, and a new engine
 * started in its place stands by (serve.c does so). */
bool engine_lease_lost(const engine *en);
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

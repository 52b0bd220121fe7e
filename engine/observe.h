/* observe.h - what operators see of a running engine: Prometheus metrics, health and readiness over HTTP
 * (libmicrohttpd), and the NATS service-discovery protocol (`nats micro ls|info|stats verdict`).
 *
 * Debian's nats.c 3.4.1 is built without the micro service API, so the $SRV.PING/INFO/STATS responders
 * (ADR-32) are implemented here on plain subscriptions: the `decide` endpoint is the engine's ingress
 * (verdict.v1.decide, queue group q). Nothing here is on a transaction's path: the HTTP thread and the $SRV
 * callbacks only read the engine's atomic counters. */
#ifndef VERDICT_OBSERVE_H
#define VERDICT_OBSERVE_H

#include "common.h"
#include "config.h"
#include "engine_stats.h"
#include "velocity.h"

#include <nats/nats.h>

typedef struct observe observe;

/* What observe reads of the engine: counters and a few questions, all answered without waiting on nats.c. The
 * engine fills it (engine.c); observe knows nothing else of it. */
typedef struct observe_source {
    void *ctx;
    const engine_stats *stats;
    engine_phase (*phase)(void *ctx);
    bool (*ready)(void *ctx);     /* started, connected, not stopping */
    bool (*connected)(void *ctx); /* both connections up */
    void (*versions)(void *ctx, char *rules, char *model, size_t cap);
    bool (*state_stats)(void *ctx, velocity_stats_t *out); /* false before the state exists */
    void (*last_error)(void *ctx, char *out, size_t cap);
    long long (*dlq_decided_late)(void *ctx);
} observe_source;

/* Starts the HTTP endpoint (unless c->metrics_addr is "off"). Called before the engine connects, so that
 * /healthz answers and /readyz reports the start's progress (connecting, verifying streams, rebuilding state). */
vstatus observe_start(const observe_source *src, const config *c, observe **out, verror *e);
/* Once the engine is connected: starts the $SRV responders on nc and the poller (every second: the consumer's
 * pending, ack pending and redelivered counts, and whether the consumer and the decisions stream's leader
 * answer, which /readyz judges with the decision publishes' outcomes). */
vstatus observe_attach(observe *o, natsConnection *nc, verror *e);
void observe_stop(observe *o);

#endif

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
#include "pipeline.h"

#include <nats/nats.h>

typedef struct observe observe;

/* Starts the HTTP endpoint (unless c->metrics_addr is "off"). Called before the engine connects, so that
 * /healthz answers and /readyz reports the start's progress (connecting, verifying streams, rebuilding state). */
vstatus observe_start(engine *en, const config *c, observe **out, verror *e);
/* Once the engine is connected: starts the $SRV responders on nc and the poller (every second: the consumer's
 * pending, ack pending and redelivered counts, and whether the consumer and the decisions stream's leader
 * answer, which /readyz judges with the decision publishes' outcomes). */
vstatus observe_attach(observe *o, natsConnection *nc, verror *e);
void observe_stop(observe *o);

#endif

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

/* Starts the HTTP endpoint (unless c->metrics_addr is "off") and the $SRV responders on nc. */
vstatus observe_start(engine *en, const config *c, natsConnection *nc, observe **out, verror *e);
void observe_stop(observe *o);

/* Renders the Prometheus text exposition of en into buf; returns its length (truncated at cap). */
size_t observe_metrics(engine *en, char *buf, size_t cap);

/* Hook for gauges owned by other modules (velocity state, replicas): appends exposition lines to buf. */
typedef size_t (*observe_extra_fn)(void *arg, char *buf, size_t cap);
void observe_set_extra(observe *o, observe_extra_fn fn, void *arg);

#endif

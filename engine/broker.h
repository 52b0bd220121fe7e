/* broker.h - everything Verdict asks of NATS before it processes a message: connecting with the configured
 * auth and TLS, and creating or verifying the streams and the durable consumer (DESIGN section 2).
 *
 * Set-up is idempotent: create if absent, verify if present. An existing stream or consumer that differs in a
 * way that breaks Verdict's guarantees (subjects, retention, ack policy, filter) is refused with a message that
 * says what differs and what to do; a difference that only tunes behaviour (max age, BackOff) is logged as a
 * warning and the operator's setting is used. Nothing is ever silently rewritten. */
#ifndef VERDICT_BROKER_H
#define VERDICT_BROKER_H

#include "common.h"
#include "config.h"

#include <nats/nats.h>
#include <stdatomic.h>

/* How long one connection attempt (TCP, TLS and the server's INFO) may take. nats.c holds the connection's
 * lock for a whole reconnect attempt, so this also bounds how long closing a reconnecting connection waits
 * (the stop's arithmetic in serve.c counts it): short enough for a shutdown to fit in Docker's stop timeout,
 * long enough for a TLS handshake. */
#define BROKER_CONNECT_TIMEOUT_MS 2000

/* Connects with c's URL, auth and TLS. send_asap trades batch throughput for latency (DESIGN section 8).
 * name is the connection name shown by `nats server report connections`. */
vstatus broker_connect(const config *c, const char *name, bool send_asap, natsConnection **nc, verror *e);

/* A connection's state as its own event callbacks (disconnected, reconnected, closed) report it, readable at
 * any time without calling into nats.c: natsConnection_Status waits on the connection's lock, which nats.c
 * holds for a whole reconnect attempt (up to the connect timeout), so a health check built on it answered in
 * seconds while NATS was down. A link lives as long as the process (nats.c may deliver a callback after the
 * connection is destroyed, so its closure must never be freed). */
typedef struct broker_link broker_link;

/* broker_connect that also keeps *link (set only on success) current. */
vstatus broker_connect_linked(const config *c, const char *name, bool send_asap, broker_link **link,
                              natsConnection **nc, verror *e);

/* True while the connection is up: false from a disconnect until the reconnect, and once closed. */
bool broker_link_up(const broker_link *link);

/* A client connection (send-asap) for tools, the demo and tests. */
vstatus broker_connect_simple(const config *c, natsConnection **nc, verror *e);
/* Sets o's servers from one URL or a comma-separated list (nats.c 3.4.1's natsOptions_SetURL takes a list as
 * one URL). */
natsStatus broker_set_servers(natsOptions *o, const char *list);

/* Creates or verifies TXN, DECISIONS, DLQ, VERDICT_ADVISORIES (before the consumer, so no advisory is lost)
 * and the durable pull consumer. */
vstatus broker_setup(const config *c, jsCtx *js, verror *e);

/* Creates the durable consumer on TXN as broker_setup does; start_seq > 0 starts it there (benchmarks: an
 * engine that has delivered everything before it), 0 delivers all. */
vstatus broker_consumer_create(const config *c, jsCtx *js, uint64_t start_seq, verror *e);

/* The engine's durable consumers as one: c->consumer, or (--partitions) every partition consumer, with the
 * highest delivered stream sequence, the lowest ack floor, and the counts summed. first receives the first
 * consumer's info (partition 0's) when not NULL, for its cluster placement; the caller destroys it. */
typedef struct consumer_positions {
    uint64_t delivered, ack_floor;
    int64_t pending, ack_pending, redelivered, waiting;
} consumer_positions;
vstatus broker_consumer_positions(const config *c, jsCtx *js, consumer_positions *out, jsConsumerInfo **first,
                                  verror *e);

/* The name of the (first) durable consumer: c->consumer, or partition 0's. */
void broker_first_consumer(const config *c, char *out, size_t cap);

/* Formats a nats.c failure: the status text plus nats.c's last error detail. */
vstatus broker_err(verror *e, natsStatus s, jsErrCode jerr, const char *what);

/* natsSubscription_Fetch of up to batch messages, waiting at most timeout_ms, safe from nats.c 3.4.1's heap
 * overflow in a batched Fetch when messages are already queued on the subscription (late deliveries after a
 * timed-out Fetch; DESIGN section 8): those are taken one at a time first. */
natsStatus broker_fetch(natsSubscription *sub, natsMsgList *list, int batch, int64_t timeout_ms, jsErrCode *jerr);

/* Parses a JetStream ack reply subject ($JS.ACK.[domain.hash.]stream.consumer.delivered.sseq.cseq.ts.pending)
 * without allocating. Returns false if the subject is not an ack subject. */
typedef struct js_meta {
    uint64_t stream_seq;
    uint64_t delivered;
    int64_t timestamp_ns; /* store time */
    uint64_t pending;
} js_meta;
bool broker_parse_ack_subject(const char *reply, js_meta *m);

#endif

/* cliconn.h - what the operator commands (dlq, audit, replay, lists) share: parse the connection options,
 * connect, get a JetStream context, and small read helpers. */
#ifndef VERDICT_CLICONN_H
#define VERDICT_CLICONN_H

#include "config.h"

#include <jansson.h>
#include <nats/nats.h>

typedef struct cliconn {
    config cfg;
    natsConnection *nc;
    jsCtx *js;
} cliconn;

/* Parses argv into c->cfg (non-option arguments' indexes go to rest), then connects. Returns 0 when
 * connected, -1 when --help was printed (by help()), 1 on a connection failure, 2 on a usage error; messages
 * go to stderr prefixed with `verdict <cmd>:`. */
int cliconn_open(cliconn *c, int argc, char **argv, int *rest, int *nrest, const char *cmd, void (*help)(void));
void cliconn_close(cliconn *c);

/* The two halves of cliconn_open, for commands that check their arguments before connecting. */
int cliconn_parse(cliconn *c, int argc, char **argv, int *rest, int *nrest, const char *cmd, void (*help)(void));
int cliconn_connect(cliconn *c, const char *cmd);

/* A header's value or "" (never NULL). */
const char *cliconn_hdr(natsMsg *m, const char *key);

/* Every JSON reply to a request on subject (e.g. "$SRV.STATS.verdict") that arrives within wait_ms, as a new
 * array (empty when none answered; NULL only when out of memory). Replies that are not JSON are skipped. */
json_t *cliconn_collect_json(cliconn *c, const char *subject, int wait_ms);

/* ns since the epoch (nats.c's times) as RFC 3339 UTC with milliseconds, or "-" for 0. */
void cliconn_time_ns(int64_t ns, char *out, size_t cap);

/* The first and last sequence of a stream; false if it does not exist. */
bool cliconn_stream_range(jsCtx *js, const char *stream, uint64_t *first, uint64_t *last);

/* Defined in decision_cli.c, shared with the desk (desk.c): the stored decision of txn_id under any outcome
 * (NATS_OK with *out, NATS_NOT_FOUND, or the failure), and a decided transaction's TXN message found near the
 * decision's store time (NULL with the reason on stderr). The caller destroys the messages. */
struct Verdict__V1__Decision;
natsStatus decision_lookup(cliconn *c, const char *txn_id, natsMsg **out);
natsMsg *decision_find_txn(cliconn *c, const struct Verdict__V1__Decision *d);

#endif

/* client.h - test-side NATS helpers: connect, publish transactions, count and read decisions. */
#ifndef VERDICT_TEST_CLIENT_H
#define VERDICT_TEST_CLIENT_H

#include "codec.h"
#include "harness.h"

#include <nats/nats.h>

natsConnection *tc_connect(const char *url);
/* The usual suite fixture: a server from the harness, a connection with a JetStream context, a temporary log
 * path (cap bytes); and its teardown, which also removes the log. */
void tc_fixture_up(test_server *srv, natsConnection **nc, jsCtx **js, char *logp, size_t cap);
void tc_fixture_down(test_server *srv, natsConnection *nc, jsCtx *js, const char *logp);
/* A valid transaction with the given id and amount (strings static). */
void tc_txn(Transaction *t, const char *txn_id, int64_t amount_minor);
/* Packs t into buf; returns the length. */
int tc_pack(const Transaction *t, unsigned char *buf);
/* Publishes t to subject with Nats-Msg-Id = txn_id and waits for the PubAck. Returns true if stored (or dup). */
bool tc_publish(jsCtx *js, const char *subject, const Transaction *t);
/* Messages in a stream (0 if it does not exist). */
uint64_t tc_stream_msgs(jsCtx *js, const char *stream);
/* Waits until a stream holds at least n messages; returns the count seen. */
uint64_t tc_wait_msgs(jsCtx *js, const char *stream, uint64_t n, int timeout_ms);
/* The stored decision for txn_id (any outcome), or NULL. Caller destroys. */
natsMsg *tc_find_decision(jsCtx *js, const char *txn_id);
/* Waits (bounded) until the engine's consumer has nothing pending or unacknowledged; true when it got there. */
bool tc_wait_consumer_idle(jsCtx *js, int timeout_ms);
/* Calls fn for every message stored in stream, in stream order, with its store time; asserts that each reads. */
void tc_each_msg(jsCtx *js, const char *stream, void (*fn)(natsMsg *m, int64_t store_ns, void *ctx), void *ctx);
/* Calls fn for every decision stored in DECISIONS, in stream order; asserts that each one reads and decodes. */
void tc_each_decision(jsCtx *js, void (*fn)(const Decision *d, void *ctx), void *ctx);
/* True when each of the n partition consumers (verdict-p0 ...) exists and has nothing pending or unacknowledged. */
bool tc_partitions_idle(jsCtx *js, int n);
/* Writes text to path through a temporary file renamed over it, as deployment tools do: a watching engine never
 * reads it half written. */
void tc_write_file(const char *path, const char *text);
/* The whole file at path (at most 1 MiB), NUL-terminated, in a static buffer the next call reuses. */
char *tc_slurp(const char *path);
/* The last `lines` lines of the log at path to stderr, each prefixed with "<who>: ": what a failure in CI is
 * read from, the log going with the machine. */
void tc_print_log_tail(const char *path, int lines, const char *who);
/* Lines of the file at path that contain needle (0 if it cannot be read). */
int tc_count_lines(const char *path, const char *needle);
/* Consumer ack-pending and pending counts. */
bool tc_consumer_counts(jsCtx *js, uint64_t *ack_pending, uint64_t *pending, uint64_t *redelivered);
/* Spawns `verdict serve` against url with extra args (NULL-terminated) and waits until it is started. */
pid_t tc_start_engine(const char *url, const char *log_path, const char *const extra[]);
void tc_sleep_ms(int ms);
/* For a test's own threads, which must not assert: a connection with the engine's options (broker_connect_simple)
 * to url and a JetStream context on it; false, with who and why on stderr, when either fails. */
bool tc_thread_js(const char *url, const char *who, natsConnection **nc, jsCtx **js);
/* Publishes as a payment service does: the same message under the same Nats-Msg-Id again, every 100 ms (each try
 * waits up to 2 s for its PubAck), until the server confirms it or give_up_ms has passed; the duplicate window
 * makes the retries safe. True when confirmed; *dup and *seq (either may be NULL) say whether the confirmation
 * was a Duplicate and which sequence it named. */
bool tc_publish_until_confirmed(jsCtx *js, const char *subj, const void *data, int len, const char *id,
                                int give_up_ms, bool *dup, uint64_t *seq);

#endif

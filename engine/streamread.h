/* streamread.h - reading a range of a stream in order without touching any durable consumer.
 *
 * Used by `verdict replay` (candidate rules over stored transactions) and by the velocity rebuild on restart.
 * It is an ordered, ephemeral, no-ack push consumer (nats.c recreates it on a gap), so reading never changes
 * the engine's durable consumer, never needs acks, and is as fast as the server can push. */
#ifndef VERDICT_STREAMREAD_H
#define VERDICT_STREAMREAD_H

#include "common.h"

#include <nats/nats.h>

typedef struct stream_reader stream_reader;

/* Opens a reader on stream (optionally filtered by subject, NULL = all) from start_seq (or, when start_seq is
 * 0, from start_time_ns) up to the stream's last sequence at open time (its "end"). */
vstatus stream_reader_open(jsCtx *js, const char *stream, const char *filter, uint64_t start_seq,
                           int64_t start_time_ns, stream_reader **out, verror *e);

/* The same, delivering headers only (the payload is left out, for index building). */
vstatus stream_reader_open_headers(jsCtx *js, const char *stream, uint64_t start_seq, int64_t start_time_ns,
                                   stream_reader **out, verror *e);

/* A follower: from start_seq (0: the first) on, with no end, for a reader that stays open while the stream
 * grows (the sequencing stage's catch-up, rebuild.h). next() never reports the end: it waits for the next
 * message and reports V_ETIMEOUT when none came; stream_reader_drained tells a stalled read from having read
 * everything stored. Its buffer is smaller than a range reader's (65,536 messages, 64 MB): a follower left
 * unread that long drops messages, and stream_reader_dropped says so. */
vstatus stream_reader_open_follow(jsCtx *js, const char *stream, uint64_t start_seq, stream_reader **out, verror *e);

/* The next message (caller destroys it) and its stream sequence and store time. Returns V_ENOTFOUND at the
 * end, V_ETIMEOUT if nothing arrived within timeout_ms, V_ENATS on a failure. */
vstatus stream_reader_next(stream_reader *r, natsMsg **msg, uint64_t *seq, int64_t *store_ns, int timeout_ms,
                           verror *e);

/* The last sequence the reader will return, and the first sequence in the stream. */
uint64_t stream_reader_end(const stream_reader *r);
uint64_t stream_reader_first(const stream_reader *r);
/* The sequence of the last message next() returned (a follower opened at S: S - 1 until then). */
uint64_t stream_reader_last(const stream_reader *r);
/* True when the subscription dropped messages (its buffer was full) or is gone: what it returns has holes. */
bool stream_reader_dropped(const stream_reader *r);
/* *drained = every message stored now has been returned by next() (none buffered, pending or in flight). */
vstatus stream_reader_drained(stream_reader *r, bool *drained, verror *e);

void stream_reader_close(stream_reader *r);

#endif

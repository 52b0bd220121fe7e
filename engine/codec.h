/* codec.h - decoding and validating transactions, encoding decisions, with no allocation per message.
 *
 * protobuf-c is given an arena allocator: every decode carves its strings and sub-messages out of one
 * preallocated block that is reset before the next message, so the hot path never calls malloc. A message that
 * does not decode or fails validation is poison: the codec names the reason (it becomes dlq.<reason>) and a
 * human-readable error that never contains card data. */
#ifndef VERDICT_CODEC_H
#define VERDICT_CODEC_H

#include "common.h"

#include "verdict/v1/verdict.pb-c.h"

#include <protobuf-c/protobuf-c.h>

typedef Verdict__V1__Transaction Transaction;
typedef Verdict__V1__Decision Decision;
typedef Verdict__V1__Reason Reason;

typedef struct arena {
    unsigned char *buf;
    size_t cap;
    size_t used;
    bool exhausted;                        /* an allocation did not fit since the last reset */
    Verdict__V1__Transaction *heap_txn;    /* decoded on the heap because it did not fit; freed by arena_reset */
    ProtobufCAllocator pa; /* allocates from buf; free is a no-op */
} arena;

/* The decode arena for transactions of at most max_msg_size bytes: room for every ordinary transaction. A
 * valid transaction whose decoded form does not fit (protobuf-c allocates ~70 bytes per 2-byte map entry) is
 * decoded again on the heap, off the hot path, so a valid message is never called poison. */
size_t txn_arena_size(size_t max_msg_size);

vstatus arena_init(arena *a, size_t cap);
void arena_reset(arena *a);
void arena_free(arena *a);
/* Bump allocation, 16-byte aligned; NULL when the block is exhausted. */
void *arena_alloc(arena *a, size_t n);

typedef enum poison_reason {
    POISON_NONE = 0,
    POISON_DECODE,         /* dlq.decode_error: the bytes are not a Transaction */
    POISON_INVALID_TXN_ID, /* dlq.invalid_txn_id */
    POISON_MISSING_FIELD,  /* dlq.missing_field: card_id, currency or amount */
    POISON_OVERSIZE,       /* dlq.oversize: larger than the configured maximum */
    /* not poison, but dead letters all the same (written by the DLQ worker from the server's advisories) */
    DEAD_MAX_DELIVERIES, /* dlq.max_deliveries: not decided within the consumer's MaxDeliver attempts */
    DEAD_TERMINATED,     /* dlq.terminated: terminated without a dead letter stored first */
    DEAD_REASONS         /* count, for per-reason counters */
} poison_reason;

const char *poison_reason_str(poison_reason r);

/* txn_id rules: 1-64 of [A-Za-z0-9_-] (it becomes a subject token and the dedup id); see ident.h. */
bool txn_id_valid(const char *id);

/* Decodes and validates. On success *out points into the arena (valid until arena_reset). On failure returns
 * V_EINVAL, sets *why and a message in e. */
vstatus txn_decode(arena *a, const void *data, size_t len, size_t max_len, Transaction **out, poison_reason *why,
                   verror *e);
/* The same into what is left of the arena, which is not reset: several transactions decoded side by side (the
 * sequencer's batch, which the workers then decide from), each valid until arena_reset. V_ENOMEM, with the arena
 * as it was, when the decoded form does not fit what is left (decode it with txn_decode then); a failure gives
 * back what it used. */
vstatus txn_decode_more(arena *a, const void *data, size_t len, size_t max_len, Transaction **out,
                        poison_reason *why, verror *e);

/* Encodes d into buf; returns the length, or 0 if it does not fit. */
size_t decision_encode(const Decision *d, void *buf, size_t cap);

/* Decodes a stored decision into the arena (used for duplicates); NULL if it does not decode. */
Decision *decision_decode(arena *a, const void *data, size_t len);

/* "approve", "review", "decline" (lower case, for subjects and headers). */
const char *outcome_str(Verdict__V1__Outcome o);
/* "APPROVE", ... for display. */
const char *outcome_upper(Verdict__V1__Outcome o);

#endif

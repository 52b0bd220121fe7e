/* codec.c - arena allocator, transaction decode/validate and decision encode (see codec.h). */
#include "codec.h"

#include "ident.h"

#include <stdlib.h>
#include <string.h>

static void *arena_pa_alloc(void *data, size_t size) { return arena_alloc(data, size); }
static void arena_pa_free(void *data, void *ptr)
{
    (void)data;
    (void)ptr;
}

vstatus arena_init(arena *a, size_t cap)
{
    memset(a, 0, sizeof *a);
    a->buf = malloc(cap);
    if (!a->buf)
        return V_ENOMEM;
    a->cap = cap;
    a->pa.alloc = arena_pa_alloc;
    a->pa.free = arena_pa_free;
    a->pa.allocator_data = a;
    return V_OK;
}

size_t txn_arena_size(size_t max_msg_size) { return max_msg_size * 4 + 4096; }

void arena_reset(arena *a)
{
    a->used = 0;
    a->exhausted = false;
    if (a->heap_txn) {
        verdict__v1__transaction__free_unpacked(a->heap_txn, NULL);
        a->heap_txn = NULL;
    }
}

void arena_free(arena *a)
{
    arena_reset(a);
    free(a->buf);
    a->buf = NULL;
    a->cap = a->used = 0;
}

void *arena_alloc(arena *a, size_t n)
{
    size_t start = (a->used + 15) & ~(size_t)15;
    if (start > a->cap || n > a->cap - start) {
        a->exhausted = true;
        return NULL;
    }
    a->used = start + n;
    return a->buf + start;
}

const char *poison_reason_str(poison_reason r)
{
    switch (r) {
    case POISON_NONE: return "none";
    case POISON_DECODE: return "decode_error";
    case POISON_INVALID_TXN_ID: return "invalid_txn_id";
    case POISON_MISSING_FIELD: return "missing_field";
    case POISON_OVERSIZE: return "oversize";
    case DEAD_MAX_DELIVERIES: return "max_deliveries";
    case DEAD_TERMINATED: return "terminated";
    case DEAD_REASONS: break;
    }
    return "unknown";
}

bool txn_id_valid(const char *id) { return ident_txn_id_valid(id); }

static bool currency_valid(const char *c)
{
    return c && strlen(c) == 3 && c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z' && c[2] >= 'A' &&
           c[2] <= 'Z';
}

/* The checks every decoded transaction passes (txn_decode, txn_decode_more). */
static vstatus txn_validate(const Transaction *t, poison_reason *why, verror *e)
{
    if (!txn_id_valid(t->txn_id)) {
        *why = POISON_INVALID_TXN_ID;
        return verror_set(e, V_EINVAL, "txn_id must be 1-%d of [A-Za-z0-9_-]", IDENT_TXN_ID_MAX);
    }
    if (!t->card_id || !t->card_id[0]) {
        *why = POISON_MISSING_FIELD;
        return verror_set(e, V_EINVAL, "txn %s: card_id is required", t->txn_id);
    }
    if (!currency_valid(t->currency)) {
        *why = POISON_MISSING_FIELD;
        return verror_set(e, V_EINVAL, "txn %s: currency must be a 3-letter ISO 4217 code", t->txn_id);
    }
    if (t->amount_minor < 0) {
        *why = POISON_MISSING_FIELD;
        return verror_set(e, V_EINVAL, "txn %s: amount_minor must be >= 0", t->txn_id);
    }
    return V_OK;
}

vstatus txn_decode_more(arena *a, const void *data, size_t len, size_t max_len, Transaction **out,
                        poison_reason *why, verror *e)
{
    *out = NULL;
    *why = POISON_NONE;
    if (len > max_len) {
        *why = POISON_OVERSIZE;
        return verror_set(e, V_EINVAL, "message is %zu bytes, over the %zu-byte maximum", len, max_len);
    }
    size_t mark = a->used;
    bool was_exhausted = a->exhausted;
    a->exhausted = false;
    Transaction *t = verdict__v1__transaction__unpack(&a->pa, len, data);
    bool full = !t && a->exhausted;
    a->exhausted = was_exhausted;
    if (full) {
        a->used = mark; /* what the failed decode carved is given back; the earlier transactions stay */
        return verror_set(e, V_ENOMEM, "the decoded transaction does not fit what is left of the block");
    }
    if (!t) {
        a->used = mark;
        *why = POISON_DECODE;
        return verror_set(e, V_EINVAL, "payload of %zu bytes is not a verdict.v1.Transaction", len);
    }
    vstatus rc = txn_validate(t, why, e);
    if (rc == V_OK)
        *out = t;
    else
        a->used = mark;
    return rc;
}

vstatus txn_decode(arena *a, const void *data, size_t len, size_t max_len, Transaction **out, poison_reason *why,
                   verror *e)
{
    arena_reset(a);
    vstatus rc = txn_decode_more(a, data, len, max_len, out, why, e);
    if (rc != V_ENOMEM)
        return rc;
    /* valid but larger decoded than the arena (thousands of tiny map entries): decode on the heap */
    Transaction *t = a->heap_txn = verdict__v1__transaction__unpack(NULL, len, data);
    if (!t) {
        *why = POISON_DECODE;
        return verror_set(e, V_EINVAL, "payload of %zu bytes is not a verdict.v1.Transaction", len);
    }
    if ((rc = txn_validate(t, why, e)) == V_OK)
        *out = t;
    return rc;
}

size_t decision_encode(const Decision *d, void *buf, size_t cap)
{
    size_t n = verdict__v1__decision__get_packed_size(d);
    if (n > cap)
        return 0;
    return verdict__v1__decision__pack(d, buf);
}

Decision *decision_decode(arena *a, const void *data, size_t len)
{
    return verdict__v1__decision__unpack(&a->pa, len, data);
}

const char *outcome_str(Verdict__V1__Outcome o)
{
    switch (o) {
    case VERDICT__V1__OUTCOME__OUTCOME_APPROVE: return "approve";
    case VERDICT__V1__OUTCOME__OUTCOME_REVIEW: return "review";
    case VERDICT__V1__OUTCOME__OUTCOME_DECLINE: return "decline";
    default: return "unspecified";
    }
}

const char *outcome_upper(Verdict__V1__Outcome o)
{
    switch (o) {
    case VERDICT__V1__OUTCOME__OUTCOME_APPROVE: return "APPROVE";
    case VERDICT__V1__OUTCOME__OUTCOME_REVIEW: return "REVIEW";
    case VERDICT__V1__OUTCOME__OUTCOME_DECLINE: return "DECLINE";
    default: return "UNSPECIFIED";
    }
}

/* fuzz_decode.c - libFuzzer target: the transaction decoder path, structure-aware.
 *
 * Random bytes almost never form a protobuf message that gets past the first field, so the fuzzer's bytes are
 * used as a recipe instead (tests/fuzz/fdp.h): they choose every field of a Transaction (ids that are valid or
 * not, any integers, unknown channel values, thousands of attributes), the message is encoded with protobuf-c,
 * and then, in some runs, the encoded bytes are damaged (a byte set, a cut, garbage or a copy of a region
 * appended). A third of the runs feed the raw bytes straight to the decoder, as before. The decode uses the
 * production arena size (txn_arena_size, codec.h) with a max_msg_size the input picks. protobuf-c is Debian's
 * uninstrumented library (nothing vendored), which is why the input is a recipe for valid structure: coverage
 * comes from our validation, arena and heap-fallback paths, not from inside the unpacker.
 *
 * Oracle:
 *   - an undamaged message within max_msg_size must decode, and the verdict (ok or which poison reason) must
 *     equal an independent check of the contract (DESIGN section 3); a valid one must come back field for
 *     field. A valid message that fails because the decode arena ran out is a bug (a valid transaction
 *     dead-lettered as decode_error; tagged [item 9] for tests/fuzz/known.h);
 *   - a message over max_msg_size is oversize; anything the decoder accepts satisfies the contract;
 *   - features_from_txn runs over every accepted transaction (ASan/UBSan watch it). */
#include "codec.h"
#include "fdp.h"
#include "featreg.h"
#include "known.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ENC_CAP (1u << 20)
#define MAX_ATTRS 6000
#define STR_CAP 96

/* The arena of engine/pipeline.c for a given --max-msg-size. */
static size_t production_arena(size_t max_msg_size) { return max_msg_size * 4 + 4096; }

static arena A;
static size_t arena_for; /* max_msg_size A was sized for */
static bool exhausted;  /* the decoder asked the arena for more than it had */

static void *watch_alloc(void *d, size_t n)
{
    void *p = arena_alloc(d, n);
    if (!p)
        exhausted = true;
    return p;
}

static void arena_setup(size_t max_msg_size)
{
    if (arena_for == max_msg_size)
        return;
    arena_free(&A);
    if (arena_init(&A, production_arena(max_msg_size)) != V_OK)
        abort();
    A.pa.alloc = watch_alloc; /* same allocator, plus a note when it runs dry */
    arena_for = max_msg_size;
}

/* The contract, written independently of codec.c. */
static bool id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static poison_reason expected_reason(const Transaction *t)
{
    if (!id_ok(t->txn_id))
        return POISON_INVALID_TXN_ID;
    if (!t->card_id[0])
        return POISON_MISSING_FIELD;
    const char *c = t->currency;
    if (strlen(c) != 3 || c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' || c[2] < 'A' || c[2] > 'Z')
        return POISON_MISSING_FIELD;
    if (t->amount_minor < 0)
        return POISON_MISSING_FIELD;
    return POISON_NONE;
}

static void fail(const char *what, poison_reason got, poison_reason want)
{
    fprintf(stderr, "fuzz_decode: %s (got %s, want %s)\n", what, poison_reason_str(got), poison_reason_str(want));
    abort();
}

/* One string field: absent, an identifier-like string, raw bytes (no NUL), or a currency-like code. */
static char *gen_string(fdp *p, char *buf)
{
    switch (fdp_range(p, 0, 3)) {
    case 0: return (char *)protobuf_c_empty_string;
    case 1: fdp_string(p, buf, STR_CAP, 70, true); break;
    case 2: fdp_string(p, buf, STR_CAP, 80, false); break;
    default:
        for (int i = 0; i < 3; i++)
            buf[i] = (char)('A' + fdp_range(p, 0, 27)); /* mostly upper case, sometimes '[' or '\' */
        buf[fdp_range(p, 0, 3)] = 0;
    }
    return buf;
}

static const char *str_or_empty(const char *s) { return s ? s : ""; }

static bool same(const char *a, const char *b) { return strcmp(str_or_empty(a), str_or_empty(b)) == 0; }

static void check_round_trip(const Transaction *in, const Transaction *out)
{
    const char *in_s[] = {in->txn_id, in->currency, in->card_id, in->account_id, in->merchant_id,
                          in->merchant_country, in->card_country, in->ip, in->ip_country, in->device_id,
                          in->email_hash, in->card_bin};
    const char *out_s[] = {out->txn_id, out->currency, out->card_id, out->account_id, out->merchant_id,
                           out->merchant_country, out->card_country, out->ip, out->ip_country, out->device_id,
                           out->email_hash, out->card_bin};
    for (size_t i = 0; i < ARRAY_LEN(in_s); i++)
        if (!same(in_s[i], out_s[i]))
            fail("string field changed in a round trip", POISON_NONE, POISON_NONE);
    if (in->created_at_ms != out->created_at_ms || in->amount_minor != out->amount_minor || in->mcc != out->mcc ||
        in->channel != out->channel || in->n_attributes != out->n_attributes)
        fail("scalar field changed in a round trip", POISON_NONE, POISON_NONE);
    for (size_t i = 0; i < in->n_attributes; i++)
        if (!same(in->attributes[i]->key, out->attributes[i]->key) ||
            !same(in->attributes[i]->value, out->attributes[i]->value))
            fail("attribute changed in a round trip", POISON_NONE, POISON_NONE);
}

static void use(const Transaction *t)
{
    static featreg reg;
    static fval vals[FEAT_MAX];
    static bool ready;
    if (!ready) {
        featreg_init(&reg);
        const char *keys[] = {"segment", "a", "k0", "tier"};
        for (size_t i = 0; i < ARRAY_LEN(keys); i++)
            featreg_attr(&reg, keys[i], strlen(keys[i]), NULL);
        ready = true;
    }
    features_from_txn(&reg, t, t->created_at_ms, vals);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned char enc[ENC_CAP];
    static char strs[12][STR_CAP];
    static char akeys[4][STR_CAP], avals[4][STR_CAP];
    static Verdict__V1__Transaction__AttributesEntry ents[MAX_ATTRS];
    static Verdict__V1__Transaction__AttributesEntry *entp[MAX_ATTRS];

    fdp p = fdp_make(data, size);
    int mode = (int)fdp_range(&p, 0, 2);
    /* the default --max-msg-size most of the time, otherwise anything config.c accepts up to 256 KiB */
    size_t max_msg = fdp_bool(&p) ? 65536 : (size_t)fdp_range(&p, 64, 256 * 1024);
    arena_setup(max_msg);
    exhausted = false;
    Transaction *t = NULL;
    poison_reason why;
    verror e;

    if (mode == 0) { /* raw bytes */
        const uint8_t *raw;
        size_t n = fdp_bytes(&p, p.size, &raw);
        if (txn_decode(&A, raw, n, max_msg, &t, &why, &e) == V_OK) {
            if (expected_reason(t) != POISON_NONE)
                fail("accepted a transaction that breaks the contract", POISON_NONE, expected_reason(t));
            use(t);
        } else if (n > max_msg && why != POISON_OVERSIZE) {
            fail("an oversize message got another reason", why, POISON_OVERSIZE);
        }
        return 0;
    }

    Transaction in;
    verdict__v1__transaction__init(&in);
    char **sf[] = {&in.txn_id, &in.currency, &in.card_id, &in.account_id, &in.merchant_id, &in.merchant_country,
                   &in.card_country, &in.ip, &in.ip_country, &in.device_id, &in.email_hash, &in.card_bin};
    for (size_t i = 0; i < ARRAY_LEN(sf); i++)
        *sf[i] = gen_string(&p, strs[i]);
    in.created_at_ms = fdp_i64(&p);
    in.amount_minor = fdp_bool(&p) ? (int64_t)fdp_range(&p, 0, 10000000) : fdp_i64(&p);
    in.mcc = fdp_u32(&p);
    in.channel = (Verdict__V1__Channel)fdp_range(&p, 0, 6); /* 5, 6: values this build does not know */
    /* attributes: a few distinct entries, then optionally the last one repeated up to thousands of times */
    size_t distinct = (size_t)fdp_range(&p, 0, 4), n = 0;
    for (size_t i = 0; i < distinct; i++) {
        verdict__v1__transaction__attributes_entry__init(&ents[n]);
        ents[n].key = fdp_bool(&p) ? (char *)protobuf_c_empty_string : akeys[i];
        if (ents[n].key == akeys[i])
            fdp_string(&p, akeys[i], STR_CAP, 40, fdp_bool(&p));
        ents[n].value = avals[i];
        fdp_string(&p, avals[i], STR_CAP, 60, fdp_bool(&p));
        entp[n] = &ents[n];
        n++;
    }
    size_t repeat = n ? (size_t)fdp_range(&p, 0, MAX_ATTRS - n) : 0;
    for (size_t i = 0; i < repeat; i++, n++) {
        ents[n] = ents[n - 1];
        entp[n] = &ents[n];
    }
    in.attributes = entp;
    in.n_attributes = n;

    size_t len = verdict__v1__transaction__get_packed_size(&in);
    if (len > ENC_CAP / 2)
        return 0;
    verdict__v1__transaction__pack(&in, enc);

    bool damaged = mode == 2;
    if (damaged) {
        int edits = (int)fdp_range(&p, 1, 4);
        for (int k = 0; k < edits; k++) {
            size_t pos = len ? (size_t)fdp_range(&p, 0, len - 1) : 0;
            switch (fdp_range(&p, 0, 3)) {
            case 0:
                if (len)
                    enc[pos] = fdp_u8(&p);
                break;
            case 1: len = pos; break;
            case 2: { /* garbage (perhaps unknown fields) at the end */
                const uint8_t *g;
                size_t gn = fdp_bytes(&p, 64, &g);
                memcpy(enc + len, g, gn);
                len += gn;
                break;
            }
            default: { /* a copy of a region at the end: repeated fields, the last one wins */
                size_t rn = (size_t)fdp_range(&p, 0, len - pos);
                if (len + rn <= ENC_CAP) {
                    memmove(enc + len, enc + pos, rn);
                    len += rn;
                }
            }
            }
        }
    }

    vstatus rc = txn_decode(&A, enc, len, max_msg, &t, &why, &e);
    if (len > max_msg) {
        if (rc == V_OK || why != POISON_OVERSIZE)
            fail("an oversize message was not called oversize", why, POISON_OVERSIZE);
        return 0;
    }
    if (damaged) {
        if (rc == V_OK) {
            if (expected_reason(t) != POISON_NONE)
                fail("accepted a damaged transaction that breaks the contract", POISON_NONE, expected_reason(t));
            use(t);
        }
        return 0;
    }
    poison_reason want = expected_reason(&in);
    if (rc != V_OK && why == POISON_DECODE && exhausted && fuzz_known(9))
        return 0; /* [item 9] tagged: VERDICT_FUZZ_KNOWN=9 steps over arena exhaustion */
    if (rc != V_OK && why == POISON_DECODE)
        fprintf(stderr, "fuzz_decode: %zu-byte message, %zu attributes, --max-msg-size %zu, arena %zu bytes\n", len,
                in.n_attributes, max_msg, production_arena(max_msg));
    if (rc != V_OK && why == POISON_DECODE)
        fail(exhausted ? "a well-formed message within the size limit ran out of decode arena"
                       : "a well-formed message did not decode",
             why, want);
    if ((rc == V_OK ? POISON_NONE : why) != want)
        fail("wrong verdict on a well-formed message", rc == V_OK ? POISON_NONE : why, want);
    if (rc == V_OK) {
        check_round_trip(&in, t);
        use(t);
    }
    return 0;
}

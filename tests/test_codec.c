/* test_codec.c - transaction decode/validate and decision encode, no broker. */
#include "codec.h"
#include "config.h"
#include "broker.h"
#include "simgen.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static Transaction valid(void)
{
    Transaction t = VERDICT__V1__TRANSACTION__INIT;
    t.txn_id = "abc-123_X";
    t.amount_minor = 1999;
    t.currency = "EUR";
    t.card_id = "tok_1";
    return t;
}

Test(codec, round_trip_preserves_every_field)
{
    Transaction t = valid();
    t.mcc = 5411;
    t.channel = VERDICT__V1__CHANNEL__CHANNEL_POS;
    t.card_bin = "411111";
    Verdict__V1__Transaction__AttributesEntry kv = VERDICT__V1__TRANSACTION__ATTRIBUTES_ENTRY__INIT;
    kv.key = "promo";
    kv.value = "spring";
    Verdict__V1__Transaction__AttributesEntry *kvs[] = {&kv};
    t.attributes = kvs;
    t.n_attributes = 1;
    unsigned char buf[1024];
    size_t n = verdict__v1__transaction__pack(&t, buf);
    arena a;
    cr_assert_eq(arena_init(&a, 8192), V_OK);
    Transaction *out;
    poison_reason why;
    verror e;
    cr_assert_eq(txn_decode(&a, buf, n, 4096, &out, &why, &e), V_OK);
    cr_assert_str_eq(out->txn_id, "abc-123_X");
    cr_assert_eq(out->amount_minor, 1999);
    cr_assert_eq(out->mcc, 5411);
    cr_assert_eq(out->channel, VERDICT__V1__CHANNEL__CHANNEL_POS);
    cr_assert_str_eq(out->card_bin, "411111");
    cr_assert_eq(out->n_attributes, 1);
    cr_assert_str_eq(out->attributes[0]->value, "spring");
    arena_free(&a);
}

/* Item 9 of the hardening review: a valid 57 KB transaction (under the 64 KiB limit) with 4,500 attribute
 * entries decodes to more than the production arena holds; it was dead-lettered as decode_error. */
Test(codec, a_valid_transaction_larger_decoded_than_the_arena_is_not_poison)
{
    enum { N = 4500 };
    static Verdict__V1__Transaction__AttributesEntry kv[N];
    static Verdict__V1__Transaction__AttributesEntry *kvs[N];
    static char keys[N][8];
    Transaction t = valid();
    for (int i = 0; i < N; i++) {
        verdict__v1__transaction__attributes_entry__init(&kv[i]);
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        kv[i].key = keys[i];
        kv[i].value = "v";
        kvs[i] = &kv[i];
    }
    t.attributes = kvs;
    t.n_attributes = N;
    size_t n = verdict__v1__transaction__get_packed_size(&t);
    cr_assert_lt(n, 65536);
    cr_assert_gt(n, 40000);
    unsigned char *buf = malloc(n);
    cr_assert_eq(verdict__v1__transaction__pack(&t, buf), n);
    arena a;
    cr_assert_eq(arena_init(&a, txn_arena_size(65536)), V_OK);
    Transaction *out = NULL;
    poison_reason why = POISON_NONE;
    verror e = {0};
    cr_assert_eq(txn_decode(&a, buf, n, 65536, &out, &why, &e), V_OK, "%s (%zu bytes)", e.msg, n);
    cr_assert_eq(out->n_attributes, N);
    cr_assert_str_eq(out->attributes[N - 1]->key, "k4499");
    /* the next, ordinary transaction is back in the arena, and the heap copy is gone */
    Transaction small = valid();
    unsigned char sbuf[256];
    size_t sn = verdict__v1__transaction__pack(&small, sbuf);
    cr_assert_eq(txn_decode(&a, sbuf, sn, 65536, &out, &why, &e), V_OK);
    cr_assert_null(a.heap_txn);
    /* garbage is still poison, whatever the arena */
    memset(buf, 0xff, n);
    cr_assert_neq(txn_decode(&a, buf, n, 65536, &out, &why, &e), V_OK);
    cr_assert_eq(why, POISON_DECODE);
    arena_free(&a);
    free(buf);
}

/* The sequencer decodes a batch's transactions side by side into one block (txn_decode_more), and the workers
 * decide from them: each stays intact while the next are decoded; one that does not fit what is left fails with
 * V_ENOMEM and leaves the block as it was; poison gives back what it used. */
Test(codec, transactions_decoded_side_by_side_stay_valid_and_a_full_block_is_left_as_it_was)
{
    simgen_cfg gc = {.seed = 3, .start_ms = 1700000000000LL};
    simgen *g = simgen_create(&gc);
    cr_assert_not_null(g);
    enum { N = 8 };
    unsigned char buf[N][1024];
    size_t len[N];
    char ids[N][80];
    for (int i = 0; i < N; i++) {
        Transaction t;
        simgen_next(g, &t);
        len[i] = verdict__v1__transaction__pack(&t, buf[i]);
        snprintf(ids[i], sizeof ids[i], "%s", t.txn_id);
    }
    simgen_destroy(g);
    arena a;
    cr_assert_eq(arena_init(&a, 64 * 1024), V_OK);
    Transaction *out[N];
    poison_reason why;
    verror e = {0};
    size_t per = 0;
    for (int i = 0; i < N; i++) {
        size_t before = a.used;
        cr_assert_eq(txn_decode_more(&a, buf[i], len[i], 4096, &out[i], &why, &e), V_OK, "%s", e.msg);
        per = a.used - before > per ? a.used - before : per;
    }
    for (int i = 0; i < N; i++)
        cr_assert_str_eq(out[i]->txn_id, ids[i], "transaction %d was overwritten by a later one", i);
    /* the engine sizes each batch's block at 2,048 bytes a transaction (engine.c, BATCH_TXN_BYTES) */
    cr_assert_lt(per, 2048, "a simulated transaction took %zu bytes decoded", per);
    /* poison: refused, and the block is as it was */
    size_t used = a.used;
    Transaction *p = NULL;
    cr_assert_eq(txn_decode_more(&a, "\xff\xff\xff", 3, 4096, &p, &why, &e), V_EINVAL);
    cr_assert_eq(why, POISON_DECODE);
    cr_assert_eq(a.used, used);
    /* a block with too little left: V_ENOMEM, nothing used, the earlier transactions intact */
    a.used = a.cap - 64;
    cr_assert_eq(txn_decode_more(&a, buf[0], len[0], 4096, &p, &why, &e), V_ENOMEM);
    cr_assert_null(p);
    cr_assert_eq(a.used, a.cap - 64);
    cr_assert_not(a.exhausted);
    a.used = used;
    cr_assert_str_eq(out[N - 1]->txn_id, ids[N - 1]);
    /* too large for its maximum: oversize, as with txn_decode */
    cr_assert_eq(txn_decode_more(&a, buf[0], len[0], 8, &p, &why, &e), V_EINVAL);
    cr_assert_eq(why, POISON_OVERSIZE);
    arena_free(&a);
}

static poison_reason decode_reason(const void *buf, size_t n, size_t max)
{
    arena a;
    arena_init(&a, 8192);
    Transaction *out;
    poison_reason why = POISON_NONE;
    verror e;
    txn_decode(&a, buf, n, max, &out, &why, &e);
    arena_free(&a);
    return why;
}

Test(codec, poison_kinds_are_named)
{
    cr_assert_eq(decode_reason("\xff\xff\xff", 3, 4096), POISON_DECODE);
    unsigned char buf[1024];
    Transaction t = valid();
    t.txn_id = "has space";
    cr_assert_eq(decode_reason(buf, verdict__v1__transaction__pack(&t, buf), 4096), POISON_INVALID_TXN_ID);
    t = valid();
    t.txn_id = "";
    cr_assert_eq(decode_reason(buf, verdict__v1__transaction__pack(&t, buf), 4096), POISON_INVALID_TXN_ID);
    t = valid();
    t.card_id = "";
    cr_assert_eq(decode_reason(buf, verdict__v1__transaction__pack(&t, buf), 4096), POISON_MISSING_FIELD);
    t = valid();
    t.currency = "eu";
    cr_assert_eq(decode_reason(buf, verdict__v1__transaction__pack(&t, buf), 4096), POISON_MISSING_FIELD);
    t = valid();
    cr_assert_eq(decode_reason(buf, verdict__v1__transaction__pack(&t, buf), 8), POISON_OVERSIZE);
    cr_assert_str_eq(poison_reason_str(POISON_OVERSIZE), "oversize");
}

Test(codec, txn_id_syntax)
{
    cr_assert(txn_id_valid("a"));
    cr_assert(txn_id_valid("A-z_09"));
    char id[66];
    memset(id, 'a', 64);
    id[64] = 0;
    cr_assert(txn_id_valid(id));
    id[64] = 'a';
    id[65] = 0;
    cr_assert_not(txn_id_valid(id));
    cr_assert_not(txn_id_valid("a.b"));
    cr_assert_not(txn_id_valid("a*"));
    cr_assert_not(txn_id_valid(NULL));
}

Test(codec, ack_subject_parsing)
{
    js_meta m;
    cr_assert(broker_parse_ack_subject("$JS.ACK.TXN.verdict.3.17.12.1700000000123456789.5", &m));
    cr_assert_eq(m.delivered, 3);
    cr_assert_eq(m.stream_seq, 17);
    cr_assert_eq(m.timestamp_ns, 1700000000123456789LL);
    cr_assert_eq(m.pending, 5);
    cr_assert(broker_parse_ack_subject("$JS.ACK.hub.ACCHASH.TXN.verdict.1.9.9.1700000000000000000.0.rnd", &m));
    cr_assert_eq(m.stream_seq, 9);
    cr_assert_not(broker_parse_ack_subject("_INBOX.abc", &m));
    cr_assert_not(broker_parse_ack_subject("$JS.ACK.TXN.verdict.x.1.1.1.1", &m));
}

/* Found by tests/fuzz/fuzz_ack.c: a number token longer than uint64 wrapped around instead of being refused,
 * so a subject with stream sequence 18446744073709551617 parsed as sequence 1. */
Test(codec, ack_subject_numbers_beyond_uint64_are_refused)
{
    js_meta m;
    cr_assert(broker_parse_ack_subject("$JS.ACK.TXN.verdict.1.18446744073709551615.1.1700000000000000000.0", &m));
    cr_assert_eq(m.stream_seq, UINT64_MAX);
    cr_assert_not(broker_parse_ack_subject("$JS.ACK.TXN.verdict.1.18446744073709551617.1.1700000000000000000.0", &m));
    cr_assert_not(broker_parse_ack_subject("$JS.ACK.TXN.verdict.1.2.1.1700000000000000000.100000000000000000000", &m));
    cr_assert_not(broker_parse_ack_subject("$JS.ACK.TXN.verdict.99999999999999999999999.2.1.1.0", &m));
}

Test(config, flags_override_environment_and_bad_values_are_refused)
{
    config c;
    config_defaults(&c);
    bool help;
    verror e = {0};
    setenv("VERDICT_WORKERS", "3", 1);
    char *a1[] = {"serve", "--budget", "20ms", "--backoff=1s,2s"};
    cr_assert_eq(config_parse(&c, 4, a1, &help, NULL, NULL, &e), V_OK, "%s", e.msg);
    cr_assert_eq(c.workers, 3);
    cr_assert_eq(c.budget_ms, 20);
    cr_assert_eq(c.backoff_len, 2);
    cr_assert_eq(c.backoff_ms[1], 2000);
    char *a2[] = {"serve", "--workers", "5"};
    cr_assert_eq(config_parse(&c, 3, a2, &help, NULL, NULL, &e), V_OK);
    cr_assert_eq(c.workers, 5);
    unsetenv("VERDICT_WORKERS");
    char *a3[] = {"serve", "--budget", "soon"};
    cr_assert_eq(config_parse(&c, 3, a3, &help, NULL, NULL, &e), V_EINVAL);
    cr_assert(strstr(e.msg, "--budget"), "%s", e.msg);
    char *a4[] = {"serve", "--max-deliver", "2", "--backoff", "1s,2s"};
    cr_assert_eq(config_parse(&c, 5, a4, &help, NULL, NULL, &e), V_EINVAL);
    char *a5[] = {"serve", "--bogus"};
    cr_assert_eq(config_parse(&c, 2, a5, &help, NULL, NULL, &e), V_EINVAL);
    char *a6[] = {"serve", "--prefix", "acme"};
    config_defaults(&c);
    cr_assert_eq(config_parse(&c, 3, a6, &help, NULL, NULL, &e), V_OK);
    cr_assert_str_eq(c.txn_stream, "ACME_TXN");
    cr_assert_str_eq(c.txn_subjects, "acme.txn.>");
    cr_assert_str_eq(c.decide_subject, "acme.verdict.v1.decide");
}

/* The hot path's number formatting must write exactly what printf writes: the decision headers' score and
 * latency are read by clients, and replay compares them. */
Test(fmt, fixed6_and_i64_write_what_printf_writes)
{
    char a[64], b[64];
    static const double fixed[] = {0.0,       -0.0,      1.0,        0.5,        0.0078125,  0.0000005,  0.0000015,
                                   0.9999995, 0.4999995, 1e-300,     5e-324,     2.5e-7,     7.5e-7,     123.4567895,
                                   1e13,      17592186044415.99, 17592186044416.0, 1e19, -0.25, 0.1234565};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        snprintf(a, sizeof a, "%.6f", fixed[i]);
        size_t n = fmt_fixed6(fixed[i], b);
        cr_assert_str_eq(b, a, "%.17g", fixed[i]);
        cr_assert_eq(n, strlen(a));
    }
    const double specials[] = {NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < 3; i++) {
        snprintf(a, sizeof a, "%.6f", specials[i]);
        fmt_fixed6(specials[i], b);
        cr_assert_str_eq(b, a);
    }
    /* the exact ties, x * 10^6 = n + 1/2 held exactly in binary: the odd multiples of 2^-7 / 10^6 * 10^6 / 2 =
     * 0.0078125 (7812.5 millionths) below 1, each rounded to the even neighbour */
    for (int j = 0; j < 64; j++) {
        double x = (2 * j + 1) * 0.0078125;
        snprintf(a, sizeof a, "%.6f", x);
        fmt_fixed6(x, b);
        cr_assert_str_eq(b, a, "%.17g", x);
    }
    /* around every rounding boundary of the first thousand millionths, and random values in [0, 1] */
    for (int k = 0; k < 1000; k++) {
        double mid = (k + 0.5) / 1e6;
        const double xs[] = {nextafter(mid, 0), mid, nextafter(mid, 1)};
        for (int j = 0; j < 3; j++) {
            snprintf(a, sizeof a, "%.6f", xs[j]);
            fmt_fixed6(xs[j], b);
            cr_assert_str_eq(b, a, "%.17g", xs[j]);
        }
    }
    uint64_t s = 88172645463325252ULL;
    for (int i = 0; i < 200000; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        double x = (double)(s >> 11) / 9007199254740992.0;
        snprintf(a, sizeof a, "%.6f", x);
        fmt_fixed6(x, b);
        cr_assert_str_eq(b, a, "%.17g", x);
    }
    static const int64_t ints[] = {0, 1, -1, 9, 10, 1234567, -987654321, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        snprintf(a, sizeof a, "%lld", (long long)ints[i]);
        size_t n = fmt_i64(ints[i], b);
        cr_assert_str_eq(b, a);
        cr_assert_eq(n, strlen(a));
    }
}

/* hash64_mem (the in-memory tables' hash, eight bytes a step): every byte of every length counts, including the
 * tail and the length itself, and a population of similar keys spreads over a table's slots as hash64 does. */
Test(codec, hash64_mem_uses_every_byte_and_spreads)
{
    unsigned char buf[40] = {0};
    for (size_t len = 0; len <= 33; len++) {
        uint64_t h = hash64_mem(buf, len);
        cr_assert_neq(h, hash64_mem(buf, len + 1), "length %zu against %zu (zero bytes)", len, len + 1);
        for (size_t i = 0; i < len; i++)
            for (int bit = 0; bit < 8; bit++) {
                buf[i] ^= (unsigned char)(1 << bit);
                cr_assert_neq(hash64_mem(buf, len), h, "length %zu: byte %zu bit %d changes nothing", len, i, bit);
                buf[i] ^= (unsigned char)(1 << bit);
            }
    }
    /* 100,000 keys like the lists' into 2^17 slots by the top bits of a multiply (replica.c's slot_of) */
    enum { KEYS = 100000, SLOTS = 1 << 17 };
    static uint32_t fill[SLOTS];
    int most = 0;
    for (int i = 0; i < KEYS; i++) {
        char k[48];
        int n = snprintf(k, sizeof k, "blocked_cards.card-%d", i);
        uint64_t h = hash64_mem(k, (size_t)n);
        uint32_t s = (uint32_t)((h * 0x9E3779B97F4A7C15ULL) >> 29) & (SLOTS - 1);
        if (++fill[s] > (uint32_t)most)
            most = (int)fill[s];
    }
    /* uniform: about 0.76 keys a slot, the fullest slot of 131,072 holds 8 or so */
    cr_assert_leq(most, 12, "a slot holds %d of %d keys", most, KEYS);
}

/* test_snapshot.c - checkpoints of the velocity state.
 *
 * Suite snapshot_format (pure, no broker): velocity_snapshot_write/read. A state read back continues exactly
 * as the uninterrupted one (the same features and counts for every later transaction, through evictions,
 * seen-set wrap, late events and distinct sample mode); a flipped byte, a truncation at every 1/64, another
 * format version, another plan and more keys than max_keys are refused, never loaded.
 * Suite snapshot_store (a real nats-server): snapshot.c's Object Store layout in JetStream; see below. */
#include "alloccount.h"
#include "client.h"
#include "config.h"
#include "harness.h"
#include "snapshot.h"
#include "velocity.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define T0 1700006400000LL
#define SEC 1000LL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)

static featreg reg;
static velocity_plan plan;
static fval vals[FEAT_MAX];

static int vel_in(featreg *r, vel_agg agg, int value_feat, int key_feat, int64_t window_ms)
{
    verror e = {0};
    int id = featreg_velocity(r, agg, value_feat, key_feat, window_ms, &e);
    cr_assert(id >= 0, "featreg_velocity: %s", e.msg);
    return id;
}

/* The reference features: four windows on the card, a sum, distinct sets on card and ip, counts on ip. */
static void reference_features(featreg *r)
{
    vel_in(r, VEL_COUNT, -1, FEAT_CARD_ID, MIN);
    vel_in(r, VEL_COUNT, -1, FEAT_CARD_ID, 10 * MIN);
    vel_in(r, VEL_COUNT, -1, FEAT_CARD_ID, HOUR);
    vel_in(r, VEL_COUNT, -1, FEAT_CARD_ID, 24 * HOUR);
    vel_in(r, VEL_SUM, FEAT_AMOUNT_MINOR, FEAT_CARD_ID, 24 * HOUR);
    vel_in(r, VEL_DISTINCT, FEAT_DEVICE_ID, FEAT_CARD_ID, 24 * HOUR);
    vel_in(r, VEL_COUNT, -1, FEAT_IP, 10 * MIN);
    vel_in(r, VEL_DISTINCT, FEAT_CARD_ID, FEAT_IP, HOUR);
}

static velocity *make(const velocity_plan *pl, size_t max_keys, size_t seen_cap)
{
    velocity *v = NULL;
    verror e = {0};
    velocity_cfg cfg = {.max_keys = max_keys, .seen_cap = seen_cap};
    cr_assert_eq(velocity_new(pl, &cfg, &v, &e), V_OK, "velocity_new: %s", e.msg);
    return v;
}

static void set_str(fval *f, const char *s)
{
    f->type = FT_STR;
    f->present = s && *s;
    f->str = (fstr){s ? s : "", s ? (uint32_t)strlen(s) : 0};
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Transaction number i of a deterministic stream: 120 cards, 30 devices, 40 ips, amounts, time moving forward
 * by 0..40 s with one in 16 late by up to 3 minutes, and one in 20 repeating a recent txn id (a redelivery). */
typedef struct gen {
    uint64_t rng;
    int64_t t;
    char id[32], card[32], dev[32], ip[32];
} gen;

static int64_t gen_txn(gen *g, const featreg *r, fval *out, int i)
{
    for (int k = 0; k < r->n; k++)
        out[k] = (fval){.type = (uint8_t)r->defs[k].type};
    uint64_t x = rng_next(&g->rng);
    if (i > 10 && x % 20 == 0)
        snprintf(g->id, sizeof g->id, "tx%d", i - 1 - (int)(x / 20 % 10));
    else
        snprintf(g->id, sizeof g->id, "tx%d", i);
    snprintf(g->card, sizeof g->card, "card%d", (int)(rng_next(&g->rng) % 120));
    snprintf(g->dev, sizeof g->dev, "dev%d", (int)(rng_next(&g->rng) % 30));
    snprintf(g->ip, sizeof g->ip, "ip%d", (int)(rng_next(&g->rng) % 40));
    set_str(&out[FEAT_TXN_ID], g->id);
    set_str(&out[FEAT_CARD_ID], g->card);
    set_str(&out[FEAT_DEVICE_ID], g->dev);
    set_str(&out[FEAT_IP], rng_next(&g->rng) % 10 ? g->ip : NULL);
    out[FEAT_AMOUNT_MINOR] = (fval){.type = FT_NUM, .present = true, .num = (double)(rng_next(&g->rng) % 90000)};
    g->t += (int64_t)(rng_next(&g->rng) % 40000);
    int64_t t = g->t;
    if (rng_next(&g->rng) % 16 == 0)
        t -= (int64_t)(rng_next(&g->rng) % 180000);
    return t;
}

static void run(velocity *v, gen *g, int from, int to)
{
    for (int i = from; i < to; i++) {
        int64_t t = gen_txn(g, &reg, vals, i);
        velocity_features_and_add(v, &plan, vals, t);
    }
}

static unsigned char *snap(const velocity *v, uint64_t pos, size_t *len)
{
    size_t cap = velocity_snapshot_bound(v);
    unsigned char *buf = malloc(cap);
    cr_assert(buf);
    verror e = {0};
    cr_assert_eq(velocity_snapshot_write(v, pos, T0, buf, cap, len, &e), V_OK, "write: %s", e.msg);
    cr_assert_eq(*len, cap, "the bound is exact");
    return buf;
}

/* CRC-32C bit by bit, independent of velocity.c's table and SSE4.2 versions. */
static uint32_t crc32c_ref(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    }
    return ~c;
}

static void reseal(unsigned char *buf, size_t len)
{
    uint32_t crc = crc32c_ref(buf, len - 8);
    memcpy(buf + len - 8, &crc, 4);
}

static void setup(void)
{
    featreg_init(&reg);
    reference_features(&reg);
    velocity_plan_init(&plan, &reg);
}

TestSuite(snapshot_format, .init = setup);

Test(snapshot_format, crc32c_is_the_standard_one)
{
    cr_assert_eq(crc32c_ref((const unsigned char *)"123456789", 9), 0xe3069283u);
}

/* The state after N transactions, written and read back, gives the same features and counts for the next M
 * transactions as the state that was never interrupted: through evictions (60 keys for 120 cards), a seen-set
 * that wraps (cap 500), redeliveries of ids from before the snapshot, late events and distinct sample mode. */
Test(snapshot_format, a_state_read_back_continues_exactly_as_the_uninterrupted_one)
{
    velocity *a = make(&plan, 60, 500);
    gen g = {.rng = 0x9e3779b97f4a7c15ULL, .t = T0};
    run(a, &g, 0, 3000);
    size_t len;
    unsigned char *buf = snap(a, 3000, &len);
    velocity *b = NULL;
    uint64_t pos = 0;
    int64_t taken = 0;
    verror e = {0};
    cr_assert_eq(
        velocity_snapshot_read(&plan, &(velocity_cfg){.max_keys = 60, .seen_cap = 500}, buf, len, &b, &pos, &taken, &e),
        V_OK, "read: %s", e.msg);
    cr_assert_eq(pos, 3000);
    cr_assert_eq(taken, T0);
    velocity_stats_t sa, sb;
    velocity_stats(a, &sa);
    velocity_stats(b, &sb);
    cr_assert_eq(sa.keys, sb.keys);
    cr_assert_eq(sa.evictions, sb.evictions);
    cr_assert(sa.evictions > 0, "the test must go through evictions");
    cr_assert_eq(sa.seen, sb.seen);
    cr_assert_eq(sa.seen, 500, "the seen-set has wrapped");
    cr_assert_eq(sa.duplicates, sb.duplicates);
    cr_assert_eq(sa.late_drops, sb.late_drops);

    static fval va[FEAT_MAX], vb[FEAT_MAX];
    gen ga = g, gb = g;
    int sampled = 0;
    for (int i = 3000; i < 6000; i++) {
        int64_t ta = gen_txn(&ga, &reg, va, i), tb = gen_txn(&gb, &reg, vb, i);
        cr_assert_eq(ta, tb);
        bool ra = velocity_features_and_add(a, &plan, va, ta), rb = velocity_features_and_add(b, &plan, vb, tb);
        cr_assert_eq(ra, rb, "transaction %d counted in one state only", i);
        for (int k = 0; k < plan.n; k++) {
            int id = plan.f[k].id;
            cr_assert_eq(va[id].present, vb[id].present, "transaction %d feature %s", i, reg.defs[id].name);
            cr_assert_eq(va[id].num, vb[id].num, "transaction %d feature %s: %g vs %g", i, reg.defs[id].name,
                         va[id].num, vb[id].num);
            if (reg.defs[id].agg == VEL_DISTINCT && va[id].num > 8)
                sampled++;
        }
    }
    cr_assert(sampled > 0, "the test must go through distinct sample mode");
    velocity_stats(a, &sa);
    velocity_stats(b, &sb);
    cr_assert_eq(sa.evictions, sb.evictions);
    cr_assert_eq(sa.duplicates, sb.duplicates);
    cr_assert_eq(sa.late_drops, sb.late_drops);
    free(buf);
    velocity_free(a);
    velocity_free(b);
}

Test(snapshot_format, an_empty_state_round_trips)
{
    velocity *a = make(&plan, 10, 10);
    size_t len;
    unsigned char *buf = snap(a, 0, &len);
    velocity *b = NULL;
    verror e = {0};
    cr_assert_eq(velocity_snapshot_read(&plan, NULL, buf, len, &b, NULL, NULL, &e), V_OK, "%s", e.msg);
    velocity_stats_t st;
    velocity_stats(b, &st);
    cr_assert_eq(st.keys, 0);
    free(buf);
    velocity_free(a);
    velocity_free(b);
}

static velocity *filled(size_t *len, unsigned char **buf)
{
    velocity *a = make(&plan, 60, 500);
    gen g = {.rng = 12345, .t = T0};
    run(a, &g, 0, 1500);
    *buf = snap(a, 1500, len);
    /* vals' strings point into g, which ends here: a caller that set only some fields afterwards read the rest
     * from a dead stack frame (ASan, once velocity.c's frames changed) */
    memset(vals, 0, sizeof vals);
    return a;
}

static void assert_refused(const unsigned char *buf, size_t len, const char *needle, const char *what)
{
    velocity *b = (velocity *)1;
    verror e = {0};
    vstatus s =
        velocity_snapshot_read(&plan, &(velocity_cfg){.max_keys = 60, .seen_cap = 500}, buf, len, &b, NULL, NULL, &e);
    cr_assert_neq(s, V_OK, "%s: loaded", what);
    cr_assert_null(b, "%s: a state was returned", what);
    if (needle)
        cr_assert(strstr(e.msg, needle), "%s: message '%s' lacks '%s'", what, e.msg, needle);
}

Test(snapshot_format, a_flipped_byte_anywhere_is_refused)
{
    size_t len;
    unsigned char *buf;
    velocity *a = filled(&len, &buf);
    unsigned char *bad = malloc(len);
    /* every byte of the header and trailer, and 2,000 positions spread over the body */
    size_t step = len / 2000 ? len / 2000 : 1;
    for (size_t at = 0; at < len; at = at < 512 || at + 8 >= len ? at + 1 : at + step) {
        memcpy(bad, buf, len);
        bad[at] ^= (unsigned char)(1u << (at % 8));
        char what[64];
        snprintf(what, sizeof what, "byte %zu of %zu flipped", at, len);
        assert_refused(bad, len, NULL, what);
    }
    memcpy(bad, buf, len);
    bad[len / 2] ^= 0x10;
    assert_refused(bad, len, "checksum", "body byte");
    free(bad);
    free(buf);
    velocity_free(a);
}

Test(snapshot_format, a_snapshot_truncated_anywhere_is_refused)
{
    size_t len;
    unsigned char *buf;
    velocity *a = filled(&len, &buf);
    for (int k = 0; k < 64; k++) {
        size_t cut = len * (size_t)k / 64;
        char what[64];
        snprintf(what, sizeof what, "cut at %zu of %zu", cut, len);
        assert_refused(buf, cut, "truncated", what);
    }
    assert_refused(buf, len - 1, "truncated", "one byte short");
    free(buf);
    velocity_free(a);
}

Test(snapshot_format, another_format_version_is_refused)
{
    size_t len;
    unsigned char *buf;
    velocity *a = filled(&len, &buf);
    /* a correctly sealed copy still loads (the test's CRC is the format's) */
    reseal(buf, len);
    velocity *b = NULL;
    verror e = {0};
    cr_assert_eq(
        velocity_snapshot_read(&plan, &(velocity_cfg){.max_keys = 60, .seen_cap = 500}, buf, len, &b, NULL, NULL, &e),
        V_OK, "%s", e.msg);
    velocity_free(b);
    uint32_t version = 2;
    memcpy(buf + 8, &version, 4);
    reseal(buf, len);
    assert_refused(buf, len, "format version 2", "version 2");
    free(buf);
    velocity_free(a);
}

Test(snapshot_format, a_snapshot_of_another_plan_is_refused)
{
    size_t len;
    unsigned char *buf;
    velocity *a = filled(&len, &buf);
    verror e = {0};
    velocity *b = NULL;
    /* one feature more */
    static featreg more;
    static velocity_plan pmore;
    featreg_init(&more);
    reference_features(&more);
    vel_in(&more, VEL_COUNT, -1, FEAT_ACCOUNT_ID, HOUR);
    velocity_plan_init(&pmore, &more);
    cr_assert_neq(velocity_snapshot_read(&pmore, NULL, buf, len, &b, NULL, NULL, &e), V_OK);
    cr_assert_null(b);
    cr_assert(strstr(e.msg, "count(account_id,1h)"), "%s", e.msg);
    /* one feature fewer */
    static featreg fewer;
    static velocity_plan pfewer;
    featreg_init(&fewer);
    vel_in(&fewer, VEL_COUNT, -1, FEAT_CARD_ID, MIN);
    velocity_plan_init(&pfewer, &fewer);
    cr_assert_neq(velocity_snapshot_read(&pfewer, NULL, buf, len, &b, NULL, NULL, &e), V_OK);
    cr_assert_null(b);
    cr_assert(strstr(e.msg, "snapshot plan has feature"), "%s", e.msg);
    /* the same features under other ids (another interning order) are the same plan */
    static featreg other;
    static velocity_plan pother;
    featreg_init(&other);
    vel_in(&other, VEL_DISTINCT, FEAT_CARD_ID, FEAT_IP, HOUR);
    reference_features(&other);
    velocity_plan_init(&pother, &other);
    cr_assert_eq(
        velocity_snapshot_read(&pother, &(velocity_cfg){.max_keys = 60, .seen_cap = 500}, buf, len, &b, NULL, NULL, &e),
        V_OK, "%s", e.msg);
    velocity_free(b);
    free(buf);
    velocity_free(a);
}

Test(snapshot_format, more_keys_than_max_keys_is_refused_and_fewer_loads)
{
    size_t len;
    unsigned char *buf;
    velocity *a = filled(&len, &buf);
    velocity *b = NULL;
    verror e = {0};
    cr_assert_neq(
        velocity_snapshot_read(&plan, &(velocity_cfg){.max_keys = 59, .seen_cap = 500}, buf, len, &b, NULL, NULL, &e),
        V_OK);
    cr_assert_null(b);
    cr_assert(strstr(e.msg, "more than max_keys 59"), "%s", e.msg);
    /* a larger cap and a smaller seen-set load; the seen-set keeps the newest ids */
    cr_assert_eq(
        velocity_snapshot_read(&plan, &(velocity_cfg){.max_keys = 1000, .seen_cap = 100}, buf, len, &b, NULL, NULL, &e),
        V_OK, "%s", e.msg);
    velocity_stats_t st;
    velocity_stats(b, &st);
    cr_assert_eq(st.seen, 100);
    set_str(&vals[FEAT_TXN_ID], "tx1499");
    set_str(&vals[FEAT_CARD_ID], "cardX");
    cr_assert(!velocity_add(b, &plan, vals, T0), "the newest id is remembered");
    velocity_free(b);
    free(buf);
    velocity_free(a);
}

Test(snapshot_format, a_state_read_back_allocates_nothing_per_transaction)
{
    size_t len;
    unsigned char *buf;
    velocity *a = filled(&len, &buf);
    velocity *b = NULL;
    verror e = {0};
    cr_assert_eq(
        velocity_snapshot_read(&plan, &(velocity_cfg){.max_keys = 60, .seen_cap = 500}, buf, len, &b, NULL, NULL, &e),
        V_OK, "%s", e.msg);
    gen g = {.rng = 777, .t = T0 + 2 * HOUR};
    uint64_t before = alloc_count();
    run(b, &g, 1500, 6000);
    cr_assert_eq(alloc_count() - before, 0);
    velocity_free(b);
    free(buf);
    velocity_free(a);
}

Test(snapshot_format, copy_then_seal_is_write_and_an_unsealed_copy_is_refused)
{
    size_t len, len2;
    unsigned char *buf;
    velocity *a = filled(&len, &buf);
    unsigned char *two = malloc(len);
    verror e = {0};
    cr_assert_eq(velocity_snapshot_copy(a, 1500, T0, two, len, &len2, &e), V_OK, "%s", e.msg);
    cr_assert_eq(len2, len);
    assert_refused(two, len, "checksum", "unsealed");
    velocity_snapshot_seal(two, len);
    cr_assert_eq(memcmp(buf, two, len), 0, "copy + seal writes the same bytes as write");
    free(two);
    free(buf);
    velocity_free(a);
}

Test(snapshot_format, a_short_buffer_is_refused_with_the_size_needed)
{
    velocity *a = make(&plan, 60, 500);
    gen g = {.rng = 5, .t = T0};
    run(a, &g, 0, 200);
    size_t need = velocity_snapshot_bound(a), len = 0;
    unsigned char *buf = malloc(need);
    verror e = {0};
    cr_assert_eq(velocity_snapshot_write(a, 1, T0, buf, need - 1, &len, &e), V_ENOMEM);
    cr_assert_eq(len, need);
    free(buf);
    velocity_free(a);
}

/* --- snapshot_store: the Object Store layout in a real nats-server ---------------------------------------------
 * A save is read back by the newest-first load (several chunks), in ADR-20's layout; a corrupt chunk, a missing
 * chunk, chunks without a description and a snapshot of another plan are skipped with the reason logged, and
 * the next older one loads; no snapshot at all, or none usable, is V_ENOTFOUND (a full rebuild); the prune
 * keeps the newest N and removes chunks nothing names. */

static test_server srv;
static natsConnection *nc;
static jsCtx *js;
static char logp[256];
static config cfg;

static void store_setup(void)
{
    setup();
    tc_fixture_up(&srv, &nc, &js, logp, sizeof logp);
    config_defaults(&cfg);
}

static void store_teardown(void) { tc_fixture_down(&srv, nc, js, logp); }

TestSuite(snapshot_store, .init = store_setup, .fini = store_teardown, .timeout = 120);

/* A state over 3,000 cards (about 700 KB: six chunks) after n transactions starting at seed. */
static velocity *big_state(int n, uint64_t seed)
{
    velocity *v = make(&plan, 4000, 5000);
    char id[32], card[32], dev[32], ip[32];
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < reg.n; k++)
            vals[k] = (fval){.type = (uint8_t)reg.defs[k].type};
        snprintf(id, sizeof id, "s%llu-%d", (unsigned long long)seed, i);
        snprintf(card, sizeof card, "card%d", (int)((i * 7919 + seed) % 3000));
        snprintf(dev, sizeof dev, "dev%d", i % 50);
        snprintf(ip, sizeof ip, "ip%d", i % 400);
        set_str(&vals[FEAT_TXN_ID], id);
        set_str(&vals[FEAT_CARD_ID], card);
        set_str(&vals[FEAT_DEVICE_ID], dev);
        set_str(&vals[FEAT_IP], ip);
        vals[FEAT_AMOUNT_MINOR] = (fval){.type = FT_NUM, .present = true, .num = i % 1000};
        velocity_add(v, &plan, vals, T0 + (int64_t)i * 500);
    }
    return v;
}

static void save(const velocity *v, uint64_t pos)
{
    size_t len;
    unsigned char *buf = snap(v, pos, &len);
    verror e = {0};
    cr_assert_eq(snapshot_save(js, &cfg, buf, len, pos, &e), V_OK, "save: %s", e.msg);
    free(buf);
}

/* snapshot_load_newest with its log lines captured in logp. */
static vstatus load(const velocity_plan *pl, velocity **out, uint64_t *pos, verror *e)
{
    fflush(stderr);
    int saved = dup(2);
    FILE *f = fopen(logp, "a");
    cr_assert(f);
    dup2(fileno(f), 2);
    vstatus s = snapshot_load_newest(js, &cfg, pl, &(velocity_cfg){.max_keys = 4000, .seen_cap = 5000}, out, pos, NULL, NULL, e);
    dup2(saved, 2);
    close(saved);
    fclose(f);
    return s;
}

/* The features of card0..card99 at time t, from v and w, are the same. */
static void assert_same_features(velocity *v, velocity *w, int64_t t)
{
    static fval a[FEAT_MAX], b[FEAT_MAX];
    char card[32];
    for (int i = 0; i < 100; i++) {
        snprintf(card, sizeof card, "card%d", i);
        for (int k = 0; k < reg.n; k++)
            a[k] = b[k] = (fval){.type = (uint8_t)reg.defs[k].type};
        set_str(&a[FEAT_CARD_ID], card);
        set_str(&b[FEAT_CARD_ID], card);
        velocity_features(v, &plan, a, t);
        velocity_features(w, &plan, b, t);
        for (int k = 0; k < plan.n; k++)
            cr_assert_eq(a[plan.f[k].id].num, b[plan.f[k].id].num, "%s of %s", reg.defs[plan.f[k].id].name, card);
    }
}

static char last_chunk_subject[256];

/* The chunk subject of the object at position pos, from its description. */
static const char *chunks_of(uint64_t pos)
{
    snapshot_info *list = NULL;
    int n = 0;
    verror e = {0};
    cr_assert_eq(snapshot_list(js, &cfg, &list, &n, &e), V_OK, "%s", e.msg);
    for (int i = 0; i < n; i++)
        if (list[i].position == pos)
            snprintf(last_chunk_subject, sizeof last_chunk_subject, "$O.verdict_state.C.%s", list[i].nuid);
    free(list);
    return last_chunk_subject;
}

static uint64_t subject_msgs(const char *subject)
{
    jsOptions o;
    jsOptions_Init(&o);
    o.Stream.Info.SubjectsFilter = subject;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    cr_assert_eq(js_GetStreamInfo(&si, js, "OBJ_verdict_state", &o, &jerr), NATS_OK);
    uint64_t n = 0;
    for (int i = 0; si->State.Subjects && i < si->State.Subjects->Count; i++)
        n += si->State.Subjects->List[i].Msgs;
    jsStreamInfo_Destroy(si);
    return n;
}

Test(snapshot_store, a_saved_snapshot_loads_back_in_the_object_store_layout)
{
    velocity *v = big_state(6000, 1);
    save(v, 1234);
    velocity *w = NULL;
    uint64_t pos = 0;
    verror e = {0};
    cr_assert_eq(load(&plan, &w, &pos, &e), V_OK, "load: %s", e.msg);
    cr_assert_eq(pos, 1234);
    assert_same_features(v, w, T0 + 3000 * SEC);
    cr_assert_eq(tc_count_lines(logp, "velocity snapshot loaded"), 1);

    /* ADR-20: stream OBJ_<bucket> with rollups, chunks on $O.<bucket>.C.<nuid>, the description on
     * $O.<bucket>.M.<base64url(name)> with name, bucket, nuid, size, chunks and a SHA-256 digest */
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    cr_assert_eq(js_GetStreamInfo(&si, js, "OBJ_verdict_state", NULL, &jerr), NATS_OK);
    cr_assert(si->Config->AllowRollup);
    cr_assert_eq(si->Config->Discard, js_DiscardNew);
    jsStreamInfo_Destroy(si);
    snapshot_info *list = NULL;
    int n = 0;
    cr_assert_eq(snapshot_list(js, &cfg, &list, &n, &e), V_OK);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(list[0].name, "velocity/verdict/00000000000000001234");
    cr_assert(list[0].chunks > 1, "several chunks (%u)", list[0].chunks);
    cr_assert_eq(subject_msgs(chunks_of(1234)), list[0].chunks);
    natsMsg *m = NULL;
    /* base64url of "velocity/verdict/00000000000000001234" */
    cr_assert_eq(js_GetLastMsg(&m, js, "OBJ_verdict_state",
                               "$O.verdict_state.M.dmVsb2NpdHkvdmVyZGljdC8wMDAwMDAwMDAwMDAwMDAwMTIzNA==", NULL, &jerr),
                 NATS_OK, "the description is where ADR-20 puts it");
    const char *roll = NULL;
    cr_assert_eq(natsMsgHeader_Get(m, "Nats-Rollup", &roll), NATS_OK);
    cr_assert_str_eq(roll, "sub");
    char json[2048];
    snprintf(json, sizeof json, "%.*s", natsMsg_GetDataLength(m), natsMsg_GetData(m));
    cr_assert(strstr(json, "\"bucket\":\"verdict_state\""), "%s", json);
    cr_assert(strstr(json, "\"digest\":\"SHA-256="), "%s", json);
    cr_assert(strstr(json, "\"Verdict-Position\":[\"1234\"]"), "%s", json);
    natsMsg_Destroy(m);
    free(list);
    velocity_free(v);
    velocity_free(w);
}

Test(snapshot_store, no_bucket_means_no_snapshot_and_creates_nothing)
{
    velocity *w = NULL;
    uint64_t pos = 0;
    verror e = {0};
    cr_assert_eq(load(&plan, &w, &pos, &e), V_ENOTFOUND, "%s", e.msg);
    cr_assert_null(w);
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    cr_assert_neq(js_GetStreamInfo(&si, js, "OBJ_verdict_state", NULL, &jerr), NATS_OK, "a load created the bucket");
}

Test(snapshot_store, a_corrupt_chunk_is_refused_and_the_older_snapshot_loads)
{
    velocity *old = big_state(4000, 2), *newer = big_state(6000, 3);
    save(old, 100);
    save(newer, 200);
    /* replace the last chunk of 200 by a copy with one byte changed: same count, same size, other bytes */
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    const char *subj = chunks_of(200);
    cr_assert_eq(js_GetLastMsg(&m, js, "OBJ_verdict_state", subj, NULL, &jerr), NATS_OK);
    int len = natsMsg_GetDataLength(m);
    unsigned char *data = malloc((size_t)len);
    memcpy(data, natsMsg_GetData(m), (size_t)len);
    data[len / 2] ^= 0x01;
    cr_assert_eq(js_DeleteMsg(js, "OBJ_verdict_state", natsMsg_GetSequence(m), NULL, &jerr), NATS_OK);
    natsMsg_Destroy(m);
    cr_assert_eq(js_Publish(NULL, js, subj, data, len, NULL, &jerr), NATS_OK);
    free(data);

    velocity *w = NULL;
    uint64_t pos = 0;
    verror e = {0};
    cr_assert_eq(load(&plan, &w, &pos, &e), V_OK, "%s", e.msg);
    cr_assert_eq(pos, 100, "the older snapshot is loaded");
    assert_same_features(old, w, T0 + 2000 * SEC);
    cr_assert_eq(tc_count_lines(logp, "velocity snapshot skipped"), 1);
    cr_assert_eq(tc_count_lines(logp, "SHA-256 digest (corrupt)"), 1);
    velocity_free(w);
    velocity_free(old);
    velocity_free(newer);
}

Test(snapshot_store, a_snapshot_of_another_plan_is_refused_and_none_left_means_a_full_rebuild)
{
    velocity *v = big_state(3000, 4);
    save(v, 300);
    static featreg other;
    static velocity_plan pother;
    featreg_init(&other);
    reference_features(&other);
    vel_in(&other, VEL_COUNT, -1, FEAT_ACCOUNT_ID, HOUR);
    velocity_plan_init(&pother, &other);
    velocity *w = NULL;
    uint64_t pos = 0;
    verror e = {0};
    cr_assert_eq(load(&pother, &w, &pos, &e), V_ENOTFOUND, "%s", e.msg);
    cr_assert_null(w);
    cr_assert(strstr(e.msg, "no usable velocity snapshot"), "%s", e.msg);
    cr_assert_eq(tc_count_lines(logp, "count(account_id,1h)"), 1, "the skip names the feature");
    velocity_free(v);
}

Test(snapshot_store, a_half_written_snapshot_is_skipped)
{
    velocity *v = big_state(3000, 5);
    save(v, 100);
    /* a save cut before its description: chunks on a fresh subject, nothing names them */
    static const char orphan[] = "$O.verdict_state.C.orphanorphanorphanorph";
    jsErrCode jerr = 0;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(js_Publish(NULL, js, orphan, "chunk", 5, NULL, &jerr), NATS_OK);
    /* a description whose chunks are not all there: save 200, then lose its last chunk */
    velocity *v2 = big_state(5000, 6);
    save(v2, 200);
    natsMsg *m = NULL;
    cr_assert_eq(js_GetLastMsg(&m, js, "OBJ_verdict_state", chunks_of(200), NULL, &jerr), NATS_OK);
    cr_assert_eq(js_DeleteMsg(js, "OBJ_verdict_state", natsMsg_GetSequence(m), NULL, &jerr), NATS_OK);
    natsMsg_Destroy(m);

    velocity *w = NULL;
    uint64_t pos = 0;
    verror e = {0};
    cr_assert_eq(load(&plan, &w, &pos, &e), V_OK, "%s", e.msg);
    cr_assert_eq(pos, 100);
    assert_same_features(v, w, T0 + 2000 * SEC);
    cr_assert_eq(tc_count_lines(logp, "chunks missing"), 1);
    velocity_free(w);

    /* the sweep removes the unnamed chunks and leaves the named ones */
    cr_assert_eq(snapshot_prune_orphans(js, &cfg, 0, &e), V_OK, "%s", e.msg);
    cr_assert_eq(subject_msgs(orphan), 0);
    cr_assert(subject_msgs(chunks_of(100)) > 0);
    cr_assert(subject_msgs(chunks_of(200)) > 0);
    velocity_free(v);
    velocity_free(v2);
}

Test(snapshot_store, the_prune_keeps_the_newest_n)
{
    velocity *v = big_state(1000, 7);
    for (uint64_t p = 100; p <= 500; p += 100)
        save(v, p);
    save(v, 500); /* the same position again: one object, the first one's chunks removed */
    verror e = {0};
    snapshot_info *list = NULL;
    int n = 0;
    cr_assert_eq(snapshot_list(js, &cfg, &list, &n, &e), V_OK);
    cr_assert_eq(n, 5);
    uint32_t chunks = list[0].chunks;
    free(list);
    cr_assert_eq(subject_msgs("$O.verdict_state.C.>"), 5 * chunks);
    cr_assert_eq(snapshot_prune(js, &cfg, 2, &e), V_OK, "%s", e.msg);
    cr_assert_eq(snapshot_list(js, &cfg, &list, &n, &e), V_OK);
    cr_assert_eq(n, 2);
    cr_assert_eq(list[0].position, 500);
    cr_assert_eq(list[1].position, 400);
    free(list);
    cr_assert_eq(subject_msgs("$O.verdict_state.C.>"), 2 * chunks, "the pruned snapshots' chunks are gone");
    cr_assert_eq(subject_msgs("$O.verdict_state.M.>"), 2);
    /* another consumer's snapshots are not this one's to prune */
    config other = cfg;
    str_copy(other.consumer, sizeof other.consumer, "verdict_p1");
    size_t len;
    unsigned char *buf = snap(v, 50, &len);
    cr_assert_eq(snapshot_save(js, &other, buf, len, 50, &e), V_OK, "%s", e.msg);
    free(buf);
    cr_assert_eq(snapshot_prune(js, &cfg, 1, &e), V_OK, "%s", e.msg);
    cr_assert_eq(snapshot_list(js, &other, &list, &n, &e), V_OK);
    cr_assert_eq(n, 1);
    free(list);
    velocity_free(v);
}

Test(snapshot_store, a_stream_of_that_name_that_is_not_a_bucket_is_refused_not_rewritten)
{
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = "OBJ_verdict_state";
    const char *subjects[] = {"elsewhere.>"};
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    jsErrCode jerr = 0;
    cr_assert_eq(js_AddStream(NULL, js, &sc, NULL, &jerr), NATS_OK);
    velocity *v = big_state(100, 8);
    size_t len;
    unsigned char *buf = snap(v, 10, &len);
    verror e = {0};
    cr_assert_eq(snapshot_save(js, &cfg, buf, len, 10, &e), V_ECONFLICT, "%s", e.msg);
    cr_assert(strstr(e.msg, "not an object store bucket"), "%s", e.msg);
    jsStreamInfo *si = NULL;
    cr_assert_eq(js_GetStreamInfo(&si, js, "OBJ_verdict_state", NULL, &jerr), NATS_OK);
    cr_assert_str_eq(si->Config->Subjects[0], "elsewhere.>", "the operator's stream is left as it was");
    cr_assert_eq(si->State.Msgs, 0);
    jsStreamInfo_Destroy(si);
    free(buf);
    velocity_free(v);
}

Test(snapshot_store, bytes_saved_under_another_position_are_refused)
{
    velocity *v = big_state(500, 9);
    size_t len;
    unsigned char *buf = snap(v, 1, &len);
    verror e = {0};
    cr_assert_eq(snapshot_save(js, &cfg, buf, len, 1, &e), V_OK, "%s", e.msg);
    cr_assert_eq(snapshot_save(js, &cfg, buf, len, 2, &e), V_OK, "%s", e.msg); /* a caller's mistake */
    velocity *w = NULL;
    uint64_t pos = 0;
    cr_assert_eq(load(&plan, &w, &pos, &e), V_OK, "%s", e.msg);
    cr_assert_eq(pos, 1);
    cr_assert_eq(tc_count_lines(logp, "its bytes are for position 1, its description says 2"), 1);
    velocity_free(w);
    free(buf);
    velocity_free(v);
}

/* Another tool's objects in the bucket: the load ignores them, and the sweep never takes their chunks for
 * orphans (a long name is still read for its nuid; a description that does not parse stops the sweep). */
Test(snapshot_store, the_sweep_never_removes_chunks_another_description_may_name)
{
    velocity *v = big_state(500, 10);
    save(v, 100);
    jsErrCode jerr = 0;
    static const char fchunks[] = "$O.verdict_state.C.foreignforeignforeign1";
    cr_assert_eq(js_Publish(NULL, js, fchunks, "data", 4, NULL, &jerr), NATS_OK);
    char longname[251], json[1024];
    memset(longname, 'n', 250);
    longname[250] = 0;
    snprintf(
        json, sizeof json,
        "{\"name\":\"%s\",\"bucket\":\"verdict_state\",\"nuid\":\"foreignforeignforeign1\",\"size\":4,\"chunks\":1}",
        longname);
    cr_assert_eq(js_Publish(NULL, js, "$O.verdict_state.M.bG9uZw==", json, (int)strlen(json), NULL, &jerr), NATS_OK);
    verror e = {0};
    cr_assert_eq(snapshot_prune_orphans(js, &cfg, 0, &e), V_OK, "%s", e.msg);
    cr_assert_eq(subject_msgs(fchunks), 1, "a foreign object's chunks were swept");

    static const char orphan[] = "$O.verdict_state.C.orphanorphanorphanorph";
    cr_assert_eq(js_Publish(NULL, js, orphan, "xx", 2, NULL, &jerr), NATS_OK);
    cr_assert_eq(js_Publish(NULL, js, "$O.verdict_state.M.Z2FyYmFnZQ==", "not json", 8, NULL, &jerr), NATS_OK);
    cr_assert_eq(snapshot_prune_orphans(js, &cfg, 0, &e), V_OK, "%s", e.msg);
    cr_assert_eq(subject_msgs(orphan), 1, "with an unreadable description nothing may be swept");

    velocity *w = NULL;
    uint64_t pos = 0;
    cr_assert_eq(load(&plan, &w, &pos, &e), V_OK, "%s", e.msg);
    cr_assert_eq(pos, 100);
    velocity_free(w);
    velocity_free(v);
}

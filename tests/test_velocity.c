/* test_velocity.c - velocity state: window arithmetic at bucket edges, windows of several lengths, late and
 * out-of-order events, eviction order, the distinct-count error bound, seen-set dedupe, hand-computed feature
 * sequences, zero allocations per transaction, plans (a state serves exactly its features, by name, under any
 * ids) and the event time (the store time: a client clock cannot move a card's windows). */
#include "alloccount.h"
#include "codec.h"
#include "rebuild.h"
#include "velocity.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* 1_700_006_400 s is a whole number of days, so T0 opens a bucket of every ring (5 s .. 2 h) and a stamp. */
#define T0 1700006400000LL
#define SEC 1000LL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)

static featreg reg;
static velocity_plan plan; /* reg's plan, as of the last make() */
static fval vals[FEAT_MAX];

static int vel(vel_agg agg, int value_feat, int key_feat, int64_t window_ms)
{
    verror e = {0};
    int id = featreg_velocity(&reg, agg, value_feat, key_feat, window_ms, &e);
    cr_assert(id >= 0, "featreg_velocity: %s", e.msg);
    return id;
}

static velocity *make(size_t max_keys, size_t seen_cap)
{
    velocity *v = NULL;
    verror e = {0};
    velocity_cfg cfg = {.max_keys = max_keys, .seen_cap = seen_cap};
    velocity_plan_init(&plan, &reg);
    cr_assert_eq(velocity_new(&plan, &cfg, &v, &e), V_OK, "velocity_new: %s", e.msg);
    return v;
}

static void set_str(int id, const char *s)
{
    vals[id].type = FT_STR;
    vals[id].present = s && *s;
    vals[id].str = (fstr){s ? s : "", s ? (uint32_t)strlen(s) : 0};
}

/* A transaction in vals: txn id, card, device, ip, amount (strings may be NULL = missing). */
static void txn(const char *id, const char *card, const char *device, const char *ip, double amount)
{
    for (int i = 0; i < reg.n; i++) {
        vals[i].type = (uint8_t)reg.defs[i].type;
        vals[i].present = false;
        vals[i].num = 0;
    }
    set_str(FEAT_TXN_ID, id);
    set_str(FEAT_CARD_ID, card);
    set_str(FEAT_DEVICE_ID, device);
    set_str(FEAT_IP, ip);
    vals[FEAT_AMOUNT_MINOR].type = FT_NUM;
    vals[FEAT_AMOUNT_MINOR].present = true;
    vals[FEAT_AMOUNT_MINOR].num = amount;
}

static int txn_seq;

/* Adds one transaction of card at time t (a fresh txn id each time). */
static bool add(velocity *v, const char *card, const char *device, double amount, int64_t t)
{
    char id[32];
    snprintf(id, sizeof id, "t%d", txn_seq++);
    txn(id, card, device, NULL, amount);
    return velocity_add(v, &plan, vals, t);
}

/* The value of feature id for card (and device) at time t, from the state as it is. */
static double q(velocity *v, int id, const char *card, int64_t t)
{
    txn("query", card, NULL, NULL, 0);
    velocity_features(v, &plan, vals, t);
    cr_assert(vals[id].present);
    return vals[id].num;
}

static void setup(void)
{
    featreg_init(&reg);
    txn_seq = 0;
}

TestSuite(velocity, .init = setup);

Test(velocity, one_minute_window_at_bucket_edges)
{
    /* 1m uses 5 s buckets, 12 of them: the bucket of the query time plus the 11 before it. */
    int c1m = vel(VEL_COUNT, -1, FEAT_CARD_ID, MIN);
    velocity *v = make(100, 100);
    add(v, "c", NULL, 1, T0 + 4999); /* last ms of bucket 0 */
    cr_assert_eq(q(v, c1m, "c", T0 + 4999), 1);
    cr_assert_eq(q(v, c1m, "c", T0 + 59999), 1, "bucket 11 still sees bucket 0");
    cr_assert_eq(q(v, c1m, "c", T0 + 60000), 0, "bucket 12 does not: the window is rounded to its buckets");
    add(v, "c", NULL, 1, T0 + 5000); /* first ms of bucket 1 */
    cr_assert_eq(q(v, c1m, "c", T0 + 60000), 1);
    cr_assert_eq(q(v, c1m, "c", T0 + 64999), 1);
    cr_assert_eq(q(v, c1m, "c", T0 + 65000), 0);
    cr_assert_eq(q(v, c1m, "c", T0 + 10 * HOUR), 0);
    velocity_free(v);
}

Test(velocity, ring_recycles_slots_when_time_moves_on)
{
    int c1m = vel(VEL_COUNT, -1, FEAT_CARD_ID, MIN);
    velocity *v = make(100, 100);
    for (int i = 0; i < 12; i++)
        add(v, "c", NULL, 1, T0 + i * 5 * SEC);
    cr_assert_eq(q(v, c1m, "c", T0 + 55 * SEC), 12);
    add(v, "c", NULL, 1, T0 + 60 * SEC); /* reuses bucket 0's slot */
    cr_assert_eq(q(v, c1m, "c", T0 + 60 * SEC), 12);
    add(v, "c", NULL, 1, T0 + 5 * MIN + 2 * SEC); /* skips more than a whole ring: all older slots cleared */
    cr_assert_eq(q(v, c1m, "c", T0 + 5 * MIN + 2 * SEC), 1);
    add(v, "c", NULL, 1, T0 + 5 * MIN + 30 * SEC);
    cr_assert_eq(q(v, c1m, "c", T0 + 5 * MIN + 59 * SEC), 2);
    velocity_free(v);
}

Test(velocity, windows_of_different_lengths)
{
    int c1m = vel(VEL_COUNT, -1, FEAT_CARD_ID, MIN);
    int c10m = vel(VEL_COUNT, -1, FEAT_CARD_ID, 10 * MIN); /* 1 m buckets */
    int c1h = vel(VEL_COUNT, -1, FEAT_CARD_ID, HOUR);      /* 5 m buckets */
    int c24h = vel(VEL_COUNT, -1, FEAT_CARD_ID, 24 * HOUR); /* 2 h buckets */
    int s24h = vel(VEL_SUM, FEAT_AMOUNT_MINOR, FEAT_CARD_ID, 24 * HOUR);
    int s1h = vel(VEL_SUM, FEAT_AMOUNT_MINOR, FEAT_CARD_ID, HOUR);
    velocity *v = make(100, 100);
    add(v, "c", NULL, 100, T0);                       /* A */
    add(v, "c", NULL, 250, T0 + 3 * MIN);             /* B */
    add(v, "c", NULL, 1000, T0 + 30 * MIN);           /* C */
    add(v, "c", NULL, 5, T0 + 2 * HOUR + 30 * SEC);   /* D */
    int64_t t = T0 + 2 * HOUR + 40 * SEC;
    cr_assert_eq(q(v, c1m, "c", t), 1);
    cr_assert_eq(q(v, c10m, "c", t), 1);
    cr_assert_eq(q(v, c1h, "c", t), 1);
    cr_assert_eq(q(v, c24h, "c", t), 4);
    cr_assert_eq(q(v, s24h, "c", t), 1355);
    cr_assert_eq(q(v, s1h, "c", t), 5);
    t = T0 + 35 * MIN;
    cr_assert_eq(q(v, c10m, "c", t), 0, "a late query: the 1 m buckets of 30m were recycled by D");
    /* at T0 + 26h the 24h window is buckets 2..13 (2 h each): A, B and C (bucket 0) are out, D (bucket 1) too */
    cr_assert_eq(q(v, c24h, "c", T0 + 26 * HOUR), 0);
    cr_assert_eq(q(v, c24h, "c", T0 + 25 * HOUR), 1, "bucket 1 .. 12: only D");
    double s = q(v, s24h, "c", T0 + 23 * HOUR + 59 * MIN);
    cr_assert_eq(s, 1355, "%g", s);
    velocity_free(v);
}

Test(velocity, late_and_out_of_order_events)
{
    int c1m = vel(VEL_COUNT, -1, FEAT_CARD_ID, MIN);
    int c1h = vel(VEL_COUNT, -1, FEAT_CARD_ID, HOUR);
    int c24h = vel(VEL_COUNT, -1, FEAT_CARD_ID, 24 * HOUR);
    velocity *v = make(100, 100);
    add(v, "c", NULL, 1, T0 + 10 * MIN);
    add(v, "c", NULL, 1, T0 + 10 * MIN - 30 * SEC); /* out of order, still in the held 1m buckets */
    cr_assert_eq(q(v, c1m, "c", T0 + 10 * MIN), 2);
    add(v, "c", NULL, 1, T0 + 8 * MIN); /* too late for the 1m ring, fine for 1h and 24h */
    cr_assert_eq(q(v, c1m, "c", T0 + 10 * MIN), 2);
    cr_assert_eq(q(v, c1h, "c", T0 + 10 * MIN), 3);
    cr_assert_eq(q(v, c24h, "c", T0 + 10 * MIN), 3);
    add(v, "c", NULL, 1, T0 + 10 * MIN - 25 * HOUR); /* older than every window: counts toward nothing */
    cr_assert_eq(q(v, c24h, "c", T0 + 10 * MIN), 3);
    velocity_stats_t st;
    velocity_stats(v, &st);
    cr_assert_eq(st.late_drops, 1 + 3, "the 8m event missed one ring, the 25h one all three");
    /* features of a late event: buckets up to its own time only (5 m buckets: all three events are later) */
    cr_assert_eq(q(v, c1h, "c", T0 + 4 * MIN + 59 * SEC), 0);
    cr_assert_eq(q(v, c24h, "c", T0 + 4 * MIN + 59 * SEC), 3, "same 2 h bucket as all three");
    velocity_free(v);
}

Test(velocity, missing_key_is_missing_and_unknown_key_is_zero)
{
    int c10m = vel(VEL_COUNT, -1, FEAT_CARD_ID, 10 * MIN);
    int d24 = vel(VEL_DISTINCT, FEAT_DEVICE_ID, FEAT_CARD_ID, 24 * HOUR);
    velocity *v = make(100, 100);
    txn("x", NULL, "d", NULL, 1);
    velocity_features(v, &plan, vals, T0);
    cr_assert(!vals[c10m].present);
    cr_assert(!vals[d24].present);
    cr_assert(velocity_add(v, &plan, vals, T0));
    velocity_stats_t st;
    velocity_stats(v, &st);
    cr_assert_eq(st.keys, 0);
    cr_assert_eq(q(v, c10m, "never-seen", T0), 0);
    velocity_free(v);
}

Test(velocity, eviction_is_least_recently_seen_and_counted)
{
    int c = vel(VEL_COUNT, -1, FEAT_CARD_ID, HOUR);
    velocity *v = make(3, 100);
    add(v, "a", NULL, 1, T0);
    add(v, "b", NULL, 1, T0 + SEC);
    add(v, "c", NULL, 1, T0 + 2 * SEC);
    add(v, "a", NULL, 1, T0 + 3 * SEC); /* a is now the most recently seen; b the least */
    velocity_stats_t st;
    velocity_stats(v, &st);
    cr_assert_eq(st.keys, 3);
    cr_assert_eq(st.evictions, 0);
    add(v, "d", NULL, 1, T0 + 4 * SEC);
    velocity_stats(v, &st);
    cr_assert_eq(st.keys, 3);
    cr_assert_eq(st.evictions, 1);
    cr_assert_eq(q(v, c, "b", T0 + 5 * SEC), 0, "b was evicted");
    cr_assert_eq(q(v, c, "a", T0 + 5 * SEC), 2);
    cr_assert_eq(q(v, c, "c", T0 + 5 * SEC), 1);
    cr_assert_eq(q(v, c, "d", T0 + 5 * SEC), 1);
    add(v, "b", NULL, 1, T0 + 6 * SEC); /* evicts c, then the order is a d b */
    add(v, "e", NULL, 1, T0 + 7 * SEC); /* evicts a */
    velocity_stats(v, &st);
    cr_assert_eq(st.evictions, 3);
    cr_assert_eq(q(v, c, "c", T0 + 8 * SEC), 0);
    cr_assert_eq(q(v, c, "a", T0 + 8 * SEC), 0);
    cr_assert_eq(q(v, c, "b", T0 + 8 * SEC), 1, "a re-admitted key starts from nothing");
    cr_assert_eq(q(v, c, "d", T0 + 8 * SEC), 1);
    cr_assert_eq(q(v, c, "e", T0 + 8 * SEC), 1);
    velocity_free(v);
}

Test(velocity, eviction_under_churn_keeps_the_index_consistent)
{
    int c = vel(VEL_COUNT, -1, FEAT_CARD_ID, 24 * HOUR);
    velocity *v = make(1000, 16);
    char card[32];
    /* 5 rounds over 1500 cards with a cap of 1000: a cyclic scan larger than the cap misses every time (LRU's
     * worst case), so every add evicts and the last 1000 cards of the last round survive with a count of 1. */
    for (int r = 0; r < 5; r++)
        for (int i = 0; i < 1500; i++) {
            snprintf(card, sizeof card, "card-%d", i);
            add(v, card, NULL, 1, T0 + r * MIN);
        }
    velocity_stats_t st;
    velocity_stats(v, &st);
    cr_assert_eq(st.keys, 1000);
    cr_assert_eq(st.evictions, 5 * 1500 - 1000);
    for (int i = 0; i < 1500; i++) {
        snprintf(card, sizeof card, "card-%d", i);
        cr_assert_eq(q(v, c, card, T0 + 10 * MIN), i >= 500 ? 1 : 0, "card %d", i);
    }
    velocity_free(v);
}

static double qd(velocity *v, int id, const char *card, int64_t t) { return q(v, id, card, t); }

Test(velocity, distinct_is_exact_up_to_the_set_size_and_windowed)
{
    int d1h = vel(VEL_DISTINCT, FEAT_DEVICE_ID, FEAT_CARD_ID, HOUR);
    int d24 = vel(VEL_DISTINCT, FEAT_DEVICE_ID, FEAT_CARD_ID, 24 * HOUR);
    velocity *v = make(100, 100);
    add(v, "c", "d1", 1, T0);
    add(v, "c", "d1", 1, T0 + MIN);
    add(v, "c", "d2", 1, T0 + 2 * MIN);
    add(v, "c", NULL, 1, T0 + 3 * MIN); /* no device: counts nothing distinct */
    cr_assert_eq(qd(v, d1h, "c", T0 + 3 * MIN), 2);
    add(v, "c", "d3", 1, T0 + 2 * HOUR);
    cr_assert_eq(qd(v, d1h, "c", T0 + 2 * HOUR), 1);
    cr_assert_eq(qd(v, d24, "c", T0 + 2 * HOUR), 3);
    add(v, "c", "d1", 1, T0 + 2 * HOUR + MIN); /* seen again: last-seen moves, still one value */
    cr_assert_eq(qd(v, d1h, "c", T0 + 2 * HOUR + MIN), 2);
    cr_assert_eq(qd(v, d24, "c", T0 + 2 * HOUR + MIN), 3);
    /* d2 was last seen at T0+2m: with 10 s stamps it leaves the 24h window exactly 24h later */
    cr_assert_eq(qd(v, d24, "c", T0 + 24 * HOUR + 2 * MIN - 1), 3);
    cr_assert_eq(qd(v, d24, "c", T0 + 24 * HOUR + 2 * MIN), 2);
    /* eight devices at once: still exact */
    char dev[16];
    for (int i = 0; i < VELOCITY_DISTINCT_EXACT; i++) {
        snprintf(dev, sizeof dev, "x%d", i);
        add(v, "e", dev, 1, T0 + i * SEC);
    }
    cr_assert_eq(qd(v, d24, "e", T0 + HOUR), VELOCITY_DISTINCT_EXACT);
    /* only last-seen times are kept, so a query earlier than the sightings still counts them */
    cr_assert_eq(qd(v, d1h, "e", T0 - 30 * MIN), VELOCITY_DISTINCT_EXACT);
    velocity_free(v);
}

Test(velocity, distinct_returns_to_exact_mode_a_window_after_overflow)
{
    int d1h = vel(VEL_DISTINCT, FEAT_DEVICE_ID, FEAT_CARD_ID, HOUR);
    velocity *v = make(100, 100);
    char dev[16];
    for (int i = 0; i < 50; i++) {
        snprintf(dev, sizeof dev, "burst%d", i);
        add(v, "c", dev, 1, T0 + i * SEC);
    }
    double est = qd(v, d1h, "c", T0 + MIN);
    cr_assert(est > 10 && est < 200, "sample estimate of 50: %g", est);
    /* two hours later only three devices are active: the answer is exact again */
    for (int i = 0; i < 3; i++) {
        snprintf(dev, sizeof dev, "late%d", i);
        add(v, "c", dev, 1, T0 + 2 * HOUR + i * SEC);
    }
    cr_assert_eq(qd(v, d1h, "c", T0 + 2 * HOUR + MIN), 3);
    velocity_free(v);
}

/* Error bound of the distinct sketch, documented in docs/state.md: exact up to VELOCITY_DISTINCT_EXACT values;
 * above, a bottom-k sample with relative standard error about 1/sqrt(k - 1) = 38% for k = 8, unbiased. Over
 * 400 entities per size, the mean must be within 8% and the RMS relative error under 45%. */
Test(velocity, distinct_error_bound)
{
    int d = vel(VEL_DISTINCT, FEAT_DEVICE_ID, FEAT_CARD_ID, 24 * HOUR);
    static const int sizes[] = {4, 8, 9, 20, 100, 1000, 5000};
    for (size_t s = 0; s < ARRAY_LEN(sizes); s++) {
        int n = sizes[s], ents = n >= 1000 ? 150 : 400;
        velocity *v = make((size_t)ents, 1024);
        char card[32], dev[32];
        for (int k = 0; k < ents; k++) {
            snprintf(card, sizeof card, "card%d", k);
            for (int i = 0; i < n; i++) {
                snprintf(dev, sizeof dev, "dev-%d-%d", k, i);
                add(v, card, dev, 1, T0 + (int64_t)i * 10);
            }
        }
        double sum = 0, sq = 0, worst = 0;
        for (int k = 0; k < ents; k++) {
            snprintf(card, sizeof card, "card%d", k);
            double est = qd(v, d, card, T0 + HOUR), rel = est / n - 1;
            sum += est;
            sq += rel * rel;
            if (fabs(rel) > worst)
                worst = fabs(rel);
        }
        double mean = sum / ents / n - 1, rms = sqrt(sq / ents);
        cr_log_info("distinct n=%d: mean error %+.3f, rms %.3f, worst %.3f", n, mean, rms, worst);
        if (n <= VELOCITY_DISTINCT_EXACT)
            cr_assert_eq(worst, 0, "exact up to %d values (n=%d)", VELOCITY_DISTINCT_EXACT, n);
        cr_assert(fabs(mean) < 0.08, "n=%d mean relative error %.3f", n, mean);
        cr_assert(rms < 0.45, "n=%d rms relative error %.3f", n, rms);
        velocity_free(v);
    }
}

Test(velocity, seen_set_counts_a_transaction_once)
{
    int c = vel(VEL_COUNT, -1, FEAT_CARD_ID, HOUR);
    velocity *v = make(100, 4);
    txn("dup", "c", NULL, NULL, 1);
    cr_assert(velocity_add(v, &plan, vals, T0));
    cr_assert(!velocity_add(v, &plan, vals, T0), "a redelivery is not counted");
    cr_assert(!velocity_add(v, &plan, vals, T0 + MIN), "nor at another time");
    cr_assert_eq(q(v, c, "c", T0 + MIN), 1);
    txn("dup", "c", NULL, NULL, 1);
    cr_assert(!velocity_features_and_add(v, &plan, vals, T0 + MIN));
    cr_assert_eq(vals[c].num, 1, "a duplicate's features include itself");
    velocity_stats_t st;
    velocity_stats(v, &st);
    cr_assert_eq(st.duplicates, 3);
    cr_assert_eq(st.seen, 1);
    /* bounded: after seen_cap newer ids the oldest is forgotten */
    for (int i = 0; i < 4; i++)
        add(v, "other", NULL, 1, T0);
    txn("dup", "c", NULL, NULL, 1);
    cr_assert(velocity_add(v, &plan, vals, T0 + MIN));
    velocity_stats(v, &st);
    cr_assert_eq(st.seen, 4);
    velocity_free(v);
}

Test(velocity, seen_set_remembers_exactly_the_last_cap_ids)
{
    vel(VEL_COUNT, -1, FEAT_CARD_ID, HOUR);
    const int cap = 1000;
    velocity *v = make(10, (size_t)cap);
    char id[32];
    /* ids arrive in a scrambled order with repeats; the set must behave like a FIFO of the last cap new ids */
    int fifo[1000], pos = 0, n = 0;
    for (int i = 0; i < 20000; i++) {
        int x = (int)(((uint64_t)i * 2654435761u) % 3000);
        snprintf(id, sizeof id, "id%d", x);
        bool expect_new = true;
        for (int k = 0; k < n; k++)
            if (fifo[k] == x)
                expect_new = false;
        txn(id, "c", NULL, NULL, 1);
        cr_assert_eq(velocity_add(v, &plan, vals, T0), expect_new, "step %d id %d", i, x);
        if (expect_new) {
            if (n < cap)
                fifo[n++] = x;
            else {
                fifo[pos] = x;
                pos = (pos + 1) % cap;
            }
        }
    }
    velocity_free(v);
}

/* A hand-computed sequence through velocity_features_and_add, with vals built by features_from_txn. */
Test(velocity, features_of_a_hand_computed_sequence)
{
    int c10m = vel(VEL_COUNT, -1, FEAT_CARD_ID, 10 * MIN);
    int s24 = vel(VEL_SUM, FEAT_AMOUNT_MINOR, FEAT_CARD_ID, 24 * HOUR);
    int dd = vel(VEL_DISTINCT, FEAT_DEVICE_ID, FEAT_CARD_ID, 24 * HOUR);
    int ipc = vel(VEL_COUNT, -1, FEAT_IP, HOUR);
    int ipd = vel(VEL_DISTINCT, FEAT_CARD_ID, FEAT_IP, HOUR);
    velocity *v = make(100, 100);
    static const struct {
        const char *id, *card, *device, *ip;
        int64_t amount, t;
        double c10m, s24, dd, ipc, ipd; /* expected, from the state before the transaction */
    } seq[] = {
        {"1", "cardA", "dev1", "10.0.0.1", 1000, T0, 0, 0, 0, 0, 0},
        {"2", "cardA", "dev1", "10.0.0.1", 2000, T0 + 2 * MIN, 1, 1000, 1, 1, 1},
        {"3", "cardB", "dev2", "10.0.0.1", 500, T0 + 3 * MIN, 0, 0, 0, 2, 1},
        {"4", "cardA", "dev2", "10.0.0.2", 700, T0 + 9 * MIN, 2, 3000, 1, 0, 0},
        {"5", "cardA", "dev3", "10.0.0.1", 50, T0 + 11 * MIN, 2, 3700, 2, 3, 2}, /* 10m: buckets 2..11 */
        {"5", "cardA", "dev3", "10.0.0.1", 50, T0 + 11 * MIN, 3, 3750, 3, 4, 2}, /* redelivered */
        {"6", "cardA", "dev1", "10.0.0.3", 10, T0 + 20 * HOUR, 0, 3750, 3, 0, 0},
        {"7", "cardA", "dev4", "10.0.0.3", 10, T0 + 20 * HOUR + 30 * MIN, 0, 3760, 3, 1, 1},
        /* sum: 2 h buckets, window = buckets 1..12, so only 6 and 7; distinct: dev2 and dev3 (9m, 11m) are out */
        {"8", "cardA", "dev5", "10.0.0.4", 1, T0 + 24 * HOUR + 12 * MIN, 0, 20, 2, 0, 0},
    };
    for (size_t i = 0; i < ARRAY_LEN(seq); i++) {
        Transaction t = VERDICT__V1__TRANSACTION__INIT;
        t.txn_id = (char *)seq[i].id;
        t.card_id = (char *)seq[i].card;
        t.device_id = (char *)seq[i].device;
        t.ip = (char *)seq[i].ip;
        t.currency = "EUR";
        t.amount_minor = seq[i].amount;
        t.created_at_ms = seq[i].t;
        features_from_txn(&reg, &t, seq[i].t, vals);
        bool fresh = velocity_features_and_add(v, &plan, vals, seq[i].t);
        cr_assert_eq(fresh, i != 5, "step %zu", i);
        cr_assert_eq(vals[c10m].num, seq[i].c10m, "step %zu count(card_id,10m) %g", i, vals[c10m].num);
        cr_assert_eq(vals[s24].num, seq[i].s24, "step %zu sum %g", i, vals[s24].num);
        cr_assert_eq(vals[dd].num, seq[i].dd, "step %zu distinct devices %g", i, vals[dd].num);
        cr_assert_eq(vals[ipc].num, seq[i].ipc, "step %zu count(ip,1h) %g", i, vals[ipc].num);
        cr_assert_eq(vals[ipd].num, seq[i].ipd, "step %zu distinct cards per ip %g", i, vals[ipd].num);
    }
    velocity_free(v);
}

/* --- plans: which registry's ids a state reads and writes -------------------------------------------------- */

static int attr(featreg *r, const char *key)
{
    verror e = {0};
    int id = featreg_attr(r, key, strlen(key), &e);
    cr_assert(id >= 0, "featreg_attr: %s", e.msg);
    return id;
}

static int vel_in(featreg *r, vel_agg agg, int value_feat, int key_feat, int64_t window_ms)
{
    verror e = {0};
    int id = featreg_velocity(r, agg, value_feat, key_feat, window_ms, &e);
    cr_assert(id >= 0, "featreg_velocity: %s", e.msg);
    return id;
}

Test(velocity, compatible_means_the_same_features_both_ways_whatever_their_ids)
{
    int c = vel(VEL_COUNT, -1, FEAT_CARD_ID, HOUR);
    cr_assert_eq(c, FEAT_BUILTIN_COUNT);
    velocity *v = make(10, 10);
    cr_assert(velocity_compatible(v, &plan));

    static featreg other;
    static velocity_plan op;
    /* the same feature under another id (an attribute interned first): compatible, by name */
    featreg_init(&other);
    attr(&other, "segment");
    cr_assert_eq(vel_in(&other, VEL_COUNT, -1, FEAT_CARD_ID, HOUR), FEAT_BUILTIN_COUNT + 1);
    velocity_plan_init(&op, &other);
    cr_assert(velocity_compatible(v, &op));
    cr_assert(velocity_serves(v, &op));

    /* fewer features than the state keeps: the state would write into ids the policy uses for something else */
    featreg_init(&other);
    cr_assert_eq(attr(&other, "segment"), c, "the policy's string lands on the state's id");
    velocity_plan_init(&op, &other);
    cr_assert(!velocity_compatible(v, &op), "a state with more features than the policy must not serve it");
    cr_assert(!velocity_serves(v, &op));

    /* more features than the state keeps */
    featreg_init(&other);
    vel_in(&other, VEL_COUNT, -1, FEAT_CARD_ID, HOUR);
    vel_in(&other, VEL_SUM, FEAT_AMOUNT_MINOR, FEAT_CARD_ID, HOUR);
    velocity_plan_init(&op, &other);
    cr_assert(!velocity_compatible(v, &op), "a new aggregate needs new state");

    /* one feature, another window or key */
    featreg_init(&other);
    vel_in(&other, VEL_COUNT, -1, FEAT_CARD_ID, 2 * HOUR);
    velocity_plan_init(&op, &other);
    cr_assert(!velocity_compatible(v, &op));
    featreg_init(&other);
    vel_in(&other, VEL_COUNT, -1, FEAT_DEVICE_ID, HOUR);
    velocity_plan_init(&op, &other);
    cr_assert(!velocity_compatible(v, &op));
    velocity_free(v);

    /* a state without velocity features serves only policies without them */
    featreg_init(&other);
    velocity_plan_init(&op, &other);
    featreg_init(&reg);
    v = make(10, 10);
    cr_assert(velocity_compatible(v, &op));
    vel_in(&other, VEL_COUNT, -1, FEAT_CARD_ID, HOUR);
    velocity_plan_init(&op, &other);
    cr_assert(!velocity_compatible(v, &op));
    velocity_free(v);
}

/* The crash of issue 14 item 1, in memory: a state built for sum(amount_minor, card_id, 1h) at some id, used
 * with a policy that has attributes.segment (a string) at that id. The state must not touch that slot. */
Test(velocity, a_state_never_writes_into_a_slot_another_policy_uses_for_a_string)
{
    int s = vel(VEL_SUM, FEAT_AMOUNT_MINOR, FEAT_CARD_ID, HOUR);
    velocity *v = make(10, 10);
    add(v, "c", NULL, 1500, T0);

    static featreg other;
    static velocity_plan op;
    featreg_init(&other);
    int seg = attr(&other, "segment");
    cr_assert_eq(seg, s);
    velocity_plan_init(&op, &other);
    static fval ov[FEAT_MAX];
    Transaction t = VERDICT__V1__TRANSACTION__INIT;
    Verdict__V1__Transaction__AttributesEntry a = VERDICT__V1__TRANSACTION__ATTRIBUTES_ENTRY__INIT;
    Verdict__V1__Transaction__AttributesEntry *ap = &a;
    a.key = "segment";
    a.value = "vip_gold";
    t.txn_id = "seg-1";
    t.card_id = "c";
    t.amount_minor = 100;
    t.n_attributes = 1;
    t.attributes = &ap;
    features_from_txn(&other, &t, T0 + SEC, ov);
    cr_assert(!velocity_features_and_add(v, &op, ov, T0 + SEC), "not served, not counted");
    cr_assert_eq(ov[seg].type, FT_STR, "the string slot is left alone");
    cr_assert(ov[seg].present);
    cr_assert_eq(ov[seg].str.len, 8);
    cr_assert_eq(memcmp(ov[seg].str.ptr, "vip_gold", 8), 0);
    cr_assert_eq(q(v, s, "c", T0 + SEC), 1500, "and the state is unchanged");
    velocity_free(v);
}

/* A state serves a policy whose ids differ: it reads that policy's key and value fields and fills that
 * policy's slots, and both policies see one state. */
Test(velocity, a_state_serves_a_policy_with_other_ids_through_its_plan)
{
    int c = vel(VEL_COUNT, -1, FEAT_CARD_ID, 10 * MIN);
    int s = vel(VEL_SUM, FEAT_AMOUNT_MINOR, FEAT_CARD_ID, HOUR);
    int d = vel(VEL_DISTINCT, FEAT_DEVICE_ID, FEAT_CARD_ID, HOUR);
    velocity *v = make(100, 100);
    add(v, "c", "dev1", 100, T0);
    add(v, "c", "dev2", 200, T0 + MIN);

    /* the other policy interns three attributes first, then the same features in another order: every id moves */
    static featreg other;
    static velocity_plan op;
    featreg_init(&other);
    attr(&other, "segment");
    attr(&other, "channel_detail");
    attr(&other, "tier");
    int od = vel_in(&other, VEL_DISTINCT, FEAT_DEVICE_ID, FEAT_CARD_ID, HOUR);
    int os = vel_in(&other, VEL_SUM, FEAT_AMOUNT_MINOR, FEAT_CARD_ID, HOUR);
    int oc = vel_in(&other, VEL_COUNT, -1, FEAT_CARD_ID, 10 * MIN);
    cr_assert(oc != c && os != s && od != d);
    velocity_plan_init(&op, &other);
    cr_assert(velocity_compatible(v, &op));

    static fval ov[FEAT_MAX];
    Transaction t = VERDICT__V1__TRANSACTION__INIT;
    t.txn_id = "other-1";
    t.card_id = "c";
    t.device_id = "dev3";
    t.amount_minor = 400;
    features_from_txn(&other, &t, T0 + 2 * MIN, ov);
    cr_assert(velocity_features_and_add(v, &op, ov, T0 + 2 * MIN));
    cr_assert_eq(ov[oc].num, 2);
    cr_assert_eq(ov[os].num, 300);
    cr_assert_eq(ov[od].num, 2);
    cr_assert_eq(ov[FEAT_BUILTIN_COUNT].type, FT_STR, "the attribute slots stay strings");
    cr_assert_eq(ov[FEAT_BUILTIN_COUNT + 1].type, FT_STR);
    /* counted through the other plan: the first one sees it */
    cr_assert_eq(q(v, c, "c", T0 + 3 * MIN), 3);
    cr_assert_eq(q(v, s, "c", T0 + 3 * MIN), 700);
    txn("query", "c", NULL, NULL, 0);
    velocity_features(v, &plan, vals, T0 + 3 * MIN);
    cr_assert_eq(vals[d].num, 3);
    velocity_free(v);
}

/* Canonical names identify a plan's features, so two features must never share one: long attribute keys with
 * a common prefix were cut to the same name and the second rule silently read the first one's count. */
Test(velocity, features_on_long_keys_with_a_common_prefix_stay_apart)
{
    int k1 = attr(&reg, "terminal_fingerprint_primary_value_one");
    int k2 = attr(&reg, "terminal_fingerprint_primary_value_two");
    int c1 = vel(VEL_COUNT, -1, k1, HOUR), c2 = vel(VEL_COUNT, -1, k2, HOUR);
    cr_assert_neq(c1, c2, "%s", reg.defs[c1].name);
    int d1 = vel(VEL_DISTINCT, k2, k1, HOUR), d2 = vel(VEL_DISTINCT, k1, k2, HOUR);
    cr_assert_neq(d1, d2);
    velocity *v = make(10, 10);
    txn("long-1", "c", NULL, NULL, 1);
    set_str(k1, "term-a");
    cr_assert(velocity_add(v, &plan, vals, T0));
    txn("query", "c", NULL, NULL, 0);
    set_str(k1, "term-a");
    set_str(k2, "term-a");
    velocity_features(v, &plan, vals, T0 + SEC);
    cr_assert_eq(vals[c1].num, 1);
    cr_assert_eq(vals[c2].num, 0);
    velocity_free(v);
}

/* --- event time (issue 14 item 4) --------------------------------------------------------------------------- */

/* 8 transactions of one card in 8 s, the first from a clock 4 minutes fast: every later one must still see the
 * earlier ones in count(card_id, 1m), and none is dropped as late. The event time comes from txn_event_ms, as in
 * the engine and the rebuild. */
Test(velocity, a_transaction_dated_ahead_does_not_blind_the_card_windows)
{
    int c1m = vel(VEL_COUNT, -1, FEAT_CARD_ID, MIN);
    velocity *v = make(100, 100);
    for (int i = 0; i < 8; i++) {
        char id[16];
        snprintf(id, sizeof id, "skew-%d", i);
        int64_t store = T0 + i * SEC;
        Transaction t = VERDICT__V1__TRANSACTION__INIT;
        t.txn_id = id;
        t.card_id = "c";
        t.created_at_ms = i == 0 ? store + 4 * MIN : store;
        int64_t ev = txn_event_ms(&t, store);
        features_from_txn(&reg, &t, ev, vals);
        cr_assert(velocity_features_and_add(v, &plan, vals, ev));
        cr_assert_eq(vals[c1m].num, i, "transaction %d sees %g earlier ones in the last minute", i, vals[c1m].num);
    }
    velocity_stats_t st;
    velocity_stats(v, &st);
    cr_assert_eq(st.late_drops, 0);
    velocity_free(v);
}

/* Dated back, a transaction would hide itself from windows shorter than the back-dating. */
Test(velocity, a_transaction_dated_back_is_still_seen_by_the_next_one)
{
    int c1m = vel(VEL_COUNT, -1, FEAT_CARD_ID, MIN);
    velocity *v = make(100, 100);
    Transaction t = VERDICT__V1__TRANSACTION__INIT;
    t.txn_id = "back-0";
    t.card_id = "c";
    t.created_at_ms = T0 - 2 * MIN;
    int64_t ev = txn_event_ms(&t, T0);
    features_from_txn(&reg, &t, ev, vals);
    cr_assert(velocity_features_and_add(v, &plan, vals, ev));
    t.txn_id = "back-1";
    t.created_at_ms = T0 + SEC;
    ev = txn_event_ms(&t, T0 + SEC);
    features_from_txn(&reg, &t, ev, vals);
    cr_assert(velocity_features_and_add(v, &plan, vals, ev));
    cr_assert_eq(vals[c1m].num, 1);
    velocity_free(v);
}

Test(velocity, no_allocation_per_transaction)
{
    int c10m = vel(VEL_COUNT, -1, FEAT_CARD_ID, 10 * MIN);
    vel(VEL_SUM, FEAT_AMOUNT_MINOR, FEAT_CARD_ID, 24 * HOUR);
    vel(VEL_DISTINCT, FEAT_DEVICE_ID, FEAT_CARD_ID, 24 * HOUR);
    vel(VEL_DISTINCT, FEAT_CARD_ID, FEAT_IP, HOUR);
    velocity *v = make(500, 1000);
    char id[32], card[32], dev[32], ip[32];
    uint64_t before = alloc_count();
    for (int i = 0; i < 20000; i++) { /* past both caps: eviction and seen-set recycling included */
        snprintf(id, sizeof id, "tx%d", i);
        snprintf(card, sizeof card, "card%d", i % 700);
        snprintf(dev, sizeof dev, "dev%d", i % 13);
        snprintf(ip, sizeof ip, "ip%d", i % 300);
        txn(id, card, dev, ip, i);
        velocity_features_and_add(v, &plan, vals, T0 + (int64_t)i * 100);
    }
    velocity_stats_t st;
    velocity_stats(v, &st);
    cr_assert_eq(alloc_count() - before, 0, "velocity allocated on the hot path");
    cr_assert(st.evictions > 0);
    cr_assert(vals[c10m].present);
    velocity_free(v);
}

/* The sequencer hashes each transaction's keys two transactions ahead and prefetches its records one ahead
 * (velocity_keys, velocity_prefetch_recs, velocity_features_and_add_keyed). Keys prepared before the
 * transactions in front of them created, evicted or counted those keys must still give exactly what
 * velocity_features_and_add gives: the same features for every transaction, the same duplicates, the same
 * state. A churning card population over a small cap (evictions), repeated ids (the seen-set, with its own
 * evictions) and missing key fields. */
Test(velocity, keys_prepared_ahead_give_exactly_the_features_of_the_plain_call)
{
    int ids[] = {vel(VEL_COUNT, -1, FEAT_CARD_ID, HOUR), vel(VEL_SUM, FEAT_AMOUNT_MINOR, FEAT_CARD_ID, 24 * HOUR),
                 vel(VEL_DISTINCT, FEAT_DEVICE_ID, FEAT_CARD_ID, 24 * HOUR), vel(VEL_COUNT, -1, FEAT_IP, 10 * MIN),
                 vel(VEL_DISTINCT, FEAT_CARD_ID, FEAT_DEVICE_ID, HOUR)};
    velocity *plain = make(40, 64), *ahead = make(40, 64);
    enum { N = 4000, AHEAD = 2 };
    static fval pv[FEAT_MAX], av[AHEAD + 1][FEAT_MAX];
    static char sid[AHEAD + 1][3][32];
    vkeys k[AHEAD + 1];
    uint64_t rng = 88172645463325252ULL;
    int64_t t = T0;
    int dups = 0, differ = 0;
    /* transaction i into av[i % 3] (and a copy into pv when it is counted) */
    for (int i = 0; i < N + AHEAD; i++) {
        int s = i % (AHEAD + 1);
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        int id = (rng % 10 == 0 && i > 20) ? i - 1 - (int)(rng >> 20) % 20 : i; /* 1 in 10 repeats a recent id */
        snprintf(sid[s][0], sizeof sid[s][0], "t%d", id);
        snprintf(sid[s][1], sizeof sid[s][1], "card-%u", (unsigned)(rng >> 8) % 60);
        snprintf(sid[s][2], sizeof sid[s][2], "dev-%u", (unsigned)(rng >> 16) % 9);
        txn(sid[s][0], sid[s][1], sid[s][2], (rng >> 24) % 4 ? NULL : "10.0.0.1", (double)((rng >> 32) % 5000));
        memcpy(av[s], vals, sizeof vals);
        velocity_keys(ahead, &plan, av[s], &k[s]);
        cr_assert(k[s].set);
        if (i < AHEAD)
            continue;
        /* count transaction m = i - AHEAD, the way seqstage.c does */
        int m = i - AHEAD, sm = m % (AHEAD + 1);
        velocity_prefetch_recs(ahead, &k[(m + 1) % (AHEAD + 1)]);
        t += (int64_t)(rng >> 40) % (2 * MIN);
        memcpy(pv, av[sm], sizeof pv);
        bool a = velocity_features_and_add(plain, &plan, pv, t);
        bool b = velocity_features_and_add_keyed(ahead, &plan, av[sm], t, &k[sm]);
        cr_assert_eq(a, b, "transaction %d counted %d by the plain call, %d with its keys ahead", m, a, b);
        dups += !a;
        for (size_t f = 0; f < sizeof ids / sizeof ids[0]; f++) {
            cr_assert_eq(pv[ids[f]].present, av[sm][ids[f]].present, "transaction %d feature %zu", m, f);
            cr_assert_eq(pv[ids[f]].num, av[sm][ids[f]].num, "transaction %d feature %zu: %g against %g", m, f,
                         pv[ids[f]].num, av[sm][ids[f]].num);
            differ += pv[ids[f]].num != 0;
        }
    }
    velocity_stats_t sp, sa;
    velocity_stats(plain, &sp);
    velocity_stats(ahead, &sa);
    cr_assert_gt(sp.evictions, 1000, "the cap of 40 cards must churn (evictions %llu)",
                 (unsigned long long)sp.evictions);
    cr_assert_gt(dups, 100, "repeated ids must be refused (%d)", dups);
    cr_assert_gt(differ, N, "the features must carry values");
    cr_assert_eq(sp.keys, sa.keys);
    cr_assert_eq(sp.evictions, sa.evictions);
    cr_assert_eq(sp.seen, sa.seen);
    velocity_free(plain);
    velocity_free(ahead);
}

/* bench_state.c - `verdict bench state`: the velocity state alone, no broker: update and query ns per
 * transaction and bytes per tracked key, at 100k keys and at --keys keys. `verdict bench snapshot`: the time
 * and size of a velocity snapshot (write, read) at 100k and --keys live keys, and with a private nats-server
 * (or --nats-url) the time to save it to and load it from the snapshot bucket (snapshot.h).
 *
 * The registry holds a reference rule set's velocity features (below; docs/state.md lists them with the
 * record size of each key field). Keys are split evenly over the four key fields; each table's cap is its
 * share, so at the end of the fill every table is full and the allocated bytes are the bytes in use. The timed
 * phases then draw transactions uniformly over all keys with event time advancing 1 ms per transaction, so
 * almost every lookup misses the CPU caches: a worst case for a real, skewed card population.
 *
 * `verdict bench state --catchup`: the sequencing stage's catch-up over a one-sequence gap (what an engine that
 * owns some partitions does before nearly every message), through a rebuild that opens its own ordered consumer
 * (the catch-up before the persistent reader) and through the persistent catch-up reader (rebuild.h), against a
 * private nats-server (or --nats-url) holding a stream of simulated transactions. */
#include "broker.h"
#include "localserver.h"
#include "rebuild.h"
#include "sequencer.h"
#include "simgen.h"
#include "snapshot.h"
#include "velocity.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NFIELDS 4
static const int key_fields[NFIELDS] = {FEAT_CARD_ID, FEAT_ACCOUNT_ID, FEAT_DEVICE_ID, FEAT_IP};
static const char *key_prefix[NFIELDS] = {"card", "acct", "dev", "ip"};
#define KEYLEN 24

typedef struct ref_feat {
    vel_agg agg;
    int value_feat, key_feat;
    int64_t window_ms;
} ref_feat;

#define M (60 * 1000LL)
#define H (60 * M)
static const ref_feat reference[] = {
    {VEL_COUNT, -1, FEAT_CARD_ID, 1 * M},
    {VEL_COUNT, -1, FEAT_CARD_ID, 10 * M},
    {VEL_COUNT, -1, FEAT_CARD_ID, 1 * H},
    {VEL_COUNT, -1, FEAT_CARD_ID, 24 * H},
    {VEL_SUM, FEAT_AMOUNT_MINOR, FEAT_CARD_ID, 24 * H},
    {VEL_DISTINCT, FEAT_DEVICE_ID, FEAT_CARD_ID, 24 * H},
    {VEL_COUNT, -1, FEAT_ACCOUNT_ID, 1 * H},
    {VEL_SUM, FEAT_AMOUNT_MINOR, FEAT_ACCOUNT_ID, 24 * H},
    {VEL_DISTINCT, FEAT_CARD_ID, FEAT_ACCOUNT_ID, 24 * H},
    {VEL_COUNT, -1, FEAT_DEVICE_ID, 1 * H},
    {VEL_DISTINCT, FEAT_CARD_ID, FEAT_DEVICE_ID, 24 * H},
    {VEL_COUNT, -1, FEAT_IP, 10 * M},
    {VEL_COUNT, -1, FEAT_IP, 1 * H},
    {VEL_DISTINCT, FEAT_CARD_ID, FEAT_IP, 1 * H},
};

typedef struct world {
    featreg reg;
    velocity_plan plan;
    size_t per_field; /* distinct values of each key field */
    char *names;      /* NFIELDS * per_field fixed-width key strings */
} world;

static const char *key_name(const world *w, int f, size_t i)
{
    return w->names + ((size_t)f * w->per_field + i) * KEYLEN;
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Fills vals with transaction number n: every key field drawn from its population (index i for all four when
 * i is given, else at random), an amount and a unique txn id written into idbuf. */
static void make_txn(const world *w, fval *vals, uint64_t n, int64_t i, uint64_t *rng, char *idbuf)
{
    static const char hex[] = "0123456789abcdef";
    idbuf[0] = 't';
    for (int k = 0; k < 16; k++)
        idbuf[1 + k] = hex[(n >> (60 - 4 * k)) & 15];
    vals[FEAT_TXN_ID] = (fval){.type = FT_STR, .present = true, .str = {idbuf, 17}};
    for (int f = 0; f < NFIELDS; f++) {
        size_t k = i >= 0 ? (size_t)i : (size_t)(rng_next(rng) % w->per_field);
        const char *s = key_name(w, f, k);
        vals[key_fields[f]] = (fval){.type = FT_STR, .present = true, .str = {s, (uint32_t)strlen(s)}};
    }
    vals[FEAT_AMOUNT_MINOR] = (fval){.type = FT_NUM, .present = true, .num = (double)(1 + rng_next(rng) % 50000)};
}

static int world_init(world *w, size_t keys)
{
    featreg_init(&w->reg);
    for (size_t i = 0; i < sizeof reference / sizeof reference[0]; i++) {
        verror e = {0};
        const ref_feat *r = &reference[i];
        if (featreg_velocity(&w->reg, r->agg, r->value_feat, r->key_feat, r->window_ms, &e) < 0) {
            fprintf(stderr, "bench state: %s\n", e.msg);
            return -1;
        }
    }
    velocity_plan_init(&w->plan, &w->reg);
    w->per_field = keys / NFIELDS ? keys / NFIELDS : 1;
    w->names = malloc((size_t)NFIELDS * w->per_field * KEYLEN);
    if (!w->names)
        return -1;
    for (int f = 0; f < NFIELDS; f++)
        for (size_t i = 0; i < w->per_field; i++)
            snprintf(w->names + ((size_t)f * w->per_field + i) * KEYLEN, KEYLEN, "%s-%u", key_prefix[f], (unsigned)i);
    return 0;
}

typedef struct run_result {
    double bytes_per_key, bytes_total_per_key;
    uint64_t keys, bytes_state, bytes_seen;
    double update_ns, query_ns, both_ns, ahead_ns, mt_ops_per_s, st_ops_per_s;
    velocity_stats_t st;
} run_result;

#define T_START 1700006400000LL

/* Fills a velocity with every key once (each table exactly full). */
static velocity *fill(const world *w, uint64_t *n, verror *e)
{
    velocity *v = NULL;
    velocity_cfg cfg = {.max_keys = w->per_field};
    if (velocity_new(&w->plan, &cfg, &v, e) != V_OK)
        return NULL;
    static fval vals[FEAT_MAX];
    char id[20];
    uint64_t rng = 88172645463325252ULL;
    for (int i = 0; i < w->reg.n; i++)
        vals[i] = (fval){.type = (uint8_t)w->reg.defs[i].type};
    for (size_t i = 0; i < w->per_field; i++, (*n)++) {
        make_txn(w, vals, *n, (int64_t)i, &rng, id);
        velocity_add(v, &w->plan, vals, T_START + (int64_t)*n);
    }
    return v;
}

typedef struct mt_arg {
    const world *w;
    velocity *v;
    uint64_t first, ops; /* first txn number (its high bits keep the ids of each thread apart) */
    int64_t t_base;      /* event time of the first transaction */
    double seconds;
} mt_arg;

static void *mt_worker(void *p)
{
    mt_arg *a = p;
    fval vals[FEAT_MAX];
    char id[20];
    uint64_t rng = 0x9e3779b97f4a7c15ULL ^ a->first;
    for (int i = 0; i < a->w->reg.n; i++)
        vals[i] = (fval){.type = (uint8_t)a->w->reg.defs[i].type};
    int64_t end = mono_ns() + (int64_t)(a->seconds * 1e9);
    uint64_t n = a->first;
    while (mono_ns() < end)
        for (int k = 0; k < 1024; k++, n++) {
            make_txn(a->w, vals, n, -1, &rng, id);
            velocity_features_and_add(a->v, &a->w->plan, vals, a->t_base + (int64_t)(n - a->first));
        }
    a->ops = n - a->first;
    return NULL;
}

/* ns per call of fn over transactions drawn at random, for about seconds. */
typedef enum { OP_ADD, OP_QUERY, OP_BOTH, OP_GEN } op_kind;

static double time_op(const world *w, velocity *v, op_kind op, double seconds, uint64_t *n)
{
    static fval vals[FEAT_MAX];
    char id[20];
    uint64_t rng = 0x2545F4914F6CDD1DULL ^ *n;
    for (int i = 0; i < w->reg.n; i++)
        vals[i] = (fval){.type = (uint8_t)w->reg.defs[i].type};
    int64_t t0 = mono_ns(), end = t0 + (int64_t)(seconds * 1e9);
    uint64_t ops = 0;
    while (mono_ns() < end)
        for (int k = 0; k < 4096; k++, ops++, (*n)++) {
            make_txn(w, vals, *n, -1, &rng, id);
            int64_t t = T_START + (int64_t)*n;
            if (op == OP_ADD)
                velocity_add(v, &w->plan, vals, t);
            else if (op == OP_QUERY)
                velocity_features(v, &w->plan, vals, t);
            else if (op == OP_BOTH)
                velocity_features_and_add(v, &w->plan, vals, t);
        }
    return (double)(mono_ns() - t0) / (double)ops;
}

/* The same as OP_BOTH the way the sequencer calls it (seqstage.c): each transaction's keys hashed two ahead and
 * its records prefetched one ahead (velocity_keys, velocity_prefetch_recs, velocity_features_and_add_keyed). */
#define AHEAD 2
static double time_ahead(const world *w, velocity *v, double seconds, uint64_t *n)
{
    static fval vals[AHEAD + 1][FEAT_MAX];
    static char ids[AHEAD + 1][20];
    vkeys keys[AHEAD + 1];
    uint64_t rng = 0x2545F4914F6CDD1DULL ^ *n;
    for (int s = 0; s <= AHEAD; s++)
        for (int i = 0; i < w->reg.n; i++)
            vals[s][i] = (fval){.type = (uint8_t)w->reg.defs[i].type};
    uint64_t m = *n; /* the next transaction to count; m + 1 .. m + AHEAD - 1 are prepared */
    for (int a = 0; a < AHEAD; a++) {
        make_txn(w, vals[(m + a) % (AHEAD + 1)], m + a, -1, &rng, ids[(m + a) % (AHEAD + 1)]);
        velocity_keys(v, &w->plan, vals[(m + a) % (AHEAD + 1)], &keys[(m + a) % (AHEAD + 1)]);
    }
    int64_t t0 = mono_ns(), end = t0 + (int64_t)(seconds * 1e9);
    uint64_t ops = 0;
    while (mono_ns() < end)
        for (int k = 0; k < 4096; k++, ops++, m++) {
            int s = (int)((m + AHEAD) % (AHEAD + 1));
            make_txn(w, vals[s], m + AHEAD, -1, &rng, ids[s]);
            velocity_keys(v, &w->plan, vals[s], &keys[s]);
            velocity_prefetch_recs(v, &keys[(m + 1) % (AHEAD + 1)]);
            velocity_features_and_add_keyed(v, &w->plan, vals[m % (AHEAD + 1)], T_START + (int64_t)m,
                                            &keys[m % (AHEAD + 1)]);
        }
    *n = m + AHEAD; /* the prepared ones are never counted: their ids are not used again */
    return (double)(mono_ns() - t0) / (double)ops;
}

static int run(size_t keys, double seconds, bool timed, run_result *r)
{
    world w;
    if (world_init(&w, keys) != 0)
        return 1;
    verror e = {0};
    uint64_t n = 0;
    int64_t t0 = mono_ns();
    velocity *v = fill(&w, &n, &e);
    if (!v) {
        fprintf(stderr, "bench state: %s\n", e.msg);
        free(w.names);
        return 1;
    }
    fprintf(stderr, "[bench state] %zu keys filled in %.2f s\n", (size_t)w.per_field * NFIELDS,
            (double)(mono_ns() - t0) / 1e9);
    velocity_stats(v, &r->st);
    r->keys = r->st.keys;
    r->bytes_state = r->st.bytes_state;
    r->bytes_seen = r->st.bytes_seen;
    r->bytes_per_key = (double)r->st.bytes_state / (double)r->st.keys;
    r->bytes_total_per_key = (double)r->st.bytes / (double)r->st.keys;
    if (timed) {
        double gen = time_op(&w, v, OP_GEN, seconds / 8, &n);
        fprintf(stderr, "[bench state] transaction generation %.1f ns (subtracted)\n", gen);
        r->query_ns = time_op(&w, v, OP_QUERY, seconds / 4, &n) - gen;
        fprintf(stderr, "[bench state] query %.1f ns\n", r->query_ns);
        r->update_ns = time_op(&w, v, OP_ADD, seconds / 4, &n) - gen;
        fprintf(stderr, "[bench state] update %.1f ns\n", r->update_ns);
        r->both_ns = time_op(&w, v, OP_BOTH, seconds / 8, &n) - gen;
        fprintf(stderr, "[bench state] features_and_add %.1f ns\n", r->both_ns);
        r->ahead_ns = time_ahead(&w, v, seconds / 8, &n) - gen;
        fprintf(stderr, "[bench state] features_and_add, keys two ahead %.1f ns\n", r->ahead_ns);
        /* shared by two threads (one mutex) against one thread alone, same duration */
        mt_arg one = {&w, v, (uint64_t)1 << 40, 0, T_START + (int64_t)n, seconds / 8};
        mt_worker(&one);
        r->st_ops_per_s = (double)one.ops / one.seconds;
        int64_t tb = one.t_base + (int64_t)one.ops;
        mt_arg two[2] = {{&w, v, (uint64_t)2 << 40, 0, tb, seconds / 8},
                         {&w, v, (uint64_t)3 << 40, 0, tb, seconds / 8}};
        pthread_t th[2];
        for (int i = 0; i < 2; i++)
            pthread_create(&th[i], NULL, mt_worker, &two[i]);
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
        r->mt_ops_per_s = (double)(two[0].ops + two[1].ops) / two[0].seconds;
        fprintf(stderr, "[bench state] 1 thread %.0f/s, 2 threads %.0f/s\n", r->st_ops_per_s, r->mt_ops_per_s);
        velocity_stats(v, &r->st);
    }
    velocity_free(v);
    free(w.names);
    return 0;
}

/* --- bench state --catchup ------------------------------------------------------------------------------- */

#define CU_STREAM "BENCH_CATCHUP"
#define CU_TXNS 4000 /* stored; every other one is caught up over, the rest "delivered" (skipped by the reader) */
#define CU_OLD 300   /* catch-ups through a rebuild each: about a millisecond each */

static int catchup_publish(jsCtx *js)
{
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = CU_STREAM;
    const char *subjects[] = {"bench.catchup.>"};
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    jsErrCode jerr = 0;
    js_DeleteStream(js, CU_STREAM, NULL, &jerr);
    if (js_AddStream(NULL, js, &sc, NULL, &jerr) != NATS_OK) {
        fprintf(stderr, "bench state --catchup: cannot create stream %s (%d)\n", CU_STREAM, (int)jerr);
        return 1;
    }
    simgen_cfg gc = {.seed = 7, .cards = 200};
    simgen_defaults(&gc);
    simgen *g = simgen_create(&gc);
    if (!g)
        return 1;
    static unsigned char buf[4096];
    int rc = 0;
    for (int i = 0; i < CU_TXNS && !rc; i++) {
        Transaction t;
        simgen_next(g, &t);
        size_t n = verdict__v1__transaction__pack(&t, buf);
        natsMsg *m = NULL;
        rc = natsMsg_Create(&m, "bench.catchup.in", NULL, (const char *)buf, (int)n) != NATS_OK ||
             js_PublishMsgAsync(js, &m, NULL) != NATS_OK;
    }
    simgen_destroy(g);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 30000;
    if (rc || js_PublishAsyncComplete(js, &po) != NATS_OK) {
        fprintf(stderr, "bench state --catchup: publishing failed\n");
        return 1;
    }
    return 0;
}

/* Mean microseconds per one-sequence catch-up (sequences 2, 4, 6, ...): through a rebuild each (old) or the
 * persistent reader (new, *opens = consumers it opened). */
static int catchup_run(jsCtx *js, const config *cfg, const world *w, bool persistent, int count, double *us,
                       long long *opens)
{
    velocity *v = NULL;
    featring *ring = NULL;
    verror e = {0};
    velocity_cfg vc = {.max_keys = 20000};
    if (velocity_new(&w->plan, &vc, &v, &e) != V_OK || featring_new(8192, w->plan.n, &ring, &e) != V_OK) {
        fprintf(stderr, "bench state --catchup: %s\n", e.msg);
        velocity_free(v);
        return 1;
    }
    catchup_reader *cr = NULL;
    *opens = 0;
    int rc = 0;
    int64_t t0 = mono_ns();
    for (int k = 0; k < count && !rc; k++) {
        uint64_t seq = 2 * (uint64_t)k + 2;
        rebuild_stats st;
        if (persistent) {
            bool opened = false;
            rc = catchup_read(&cr, js, cfg, &w->plan, v, ring, seq - 1, seq, &st, &opened, &e) != V_OK;
            *opens += opened;
        } else {
            rebuild_range rr = {.from_seq = seq, .upto_seq = seq, .ring = ring, .quiet = true};
            rc = rebuild_velocity(js, cfg, &w->plan, v, &rr, &st, &e) != V_OK;
            *opens += 1;
        }
        if (!rc && st.counted != 1) {
            fprintf(stderr, "bench state --catchup: seq %llu counted %llu\n", (unsigned long long)seq,
                    (unsigned long long)st.counted);
            rc = 1;
        }
    }
    *us = (double)(mono_ns() - t0) / 1e3 / count;
    if (rc && e.msg[0])
        fprintf(stderr, "bench state --catchup: %s\n", e.msg);
    catchup_reader_close(cr);
    featring_free(ring);
    velocity_free(v);
    return rc;
}

static int bench_catchup(const char *url, bool json)
{
    localserver ls = {0};
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    config cfg;
    config_defaults(&cfg);
    str_copy(cfg.txn_stream, sizeof cfg.txn_stream, CU_STREAM);
    verror e = {0};
    world w = {0};
    int rc = 1;
    if (!url) {
        if (localserver_start(&ls, &e) != V_OK) {
            fprintf(stderr, "verdict bench state --catchup: %s\n", e.msg);
            return 1;
        }
        url = ls.url;
    }
    str_copy(cfg.nats_url, sizeof cfg.nats_url, url);
    double old_us = 0, new_us = 0;
    long long old_opens = 0, new_opens = 0;
    int new_n = CU_TXNS / 2 - 1;
    if (broker_connect(&cfg, "verdict-bench-catchup", false, &nc, &e) != V_OK ||
        natsConnection_JetStream(&js, nc, NULL) != NATS_OK) {
        fprintf(stderr, "verdict bench state --catchup: %s\n", e.msg[0] ? e.msg : "no JetStream context");
        goto out;
    }
    if (world_init(&w, NFIELDS) != 0 || catchup_publish(js) != 0)
        goto out;
    /* new first, then old, then new again: the second new run is reported (the server's store is warm) */
    if (catchup_run(js, &cfg, &w, true, new_n, &new_us, &new_opens) ||
        catchup_run(js, &cfg, &w, false, CU_OLD, &old_us, &old_opens) ||
        catchup_run(js, &cfg, &w, true, new_n, &new_us, &new_opens))
        goto out;
    rc = 0;
    printf("\n  verdict bench state --catchup (one-sequence gaps over %d stored transactions)\n", CU_TXNS);
    printf("  ------------------------------------------------------------\n");
    printf("  a rebuild per catch-up       %8.1f us/catch-up  (%d catch-ups, %lld consumers opened)\n", old_us,
           CU_OLD, old_opens);
    printf("  the persistent reader        %8.1f us/catch-up  (%d catch-ups, %lld consumers opened)\n", new_us,
           new_n, new_opens);
    if (json)
        printf("{\"bench\":\"catchup\",\"txns\":%d,\"rebuild_us\":%.1f,\"rebuild_catch_ups\":%d,"
               "\"reader_us\":%.1f,\"reader_catch_ups\":%d,\"reader_opens\":%lld}\n",
               CU_TXNS, old_us, CU_OLD, new_us, new_n, new_opens);
out:
    if (js) {
        jsErrCode jerr = 0;
        js_DeleteStream(js, CU_STREAM, NULL, &jerr);
    }
    free(w.names);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    if (ls.pid)
        localserver_stop(&ls);
    return rc;
}

int bench_state(int argc, char **argv)
{
    size_t keys = 1000000;
    double seconds = 8;
    bool json = false, catchup = false;
    const char *url = getenv("VERDICT_NATS_URL");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "state"))
            continue;
        if (!strcmp(a, "--json"))
            json = true;
        else if (!strcmp(a, "--catchup"))
            catchup = true;
        else if (!strcmp(a, "--nats-url") && val) {
            url = val;
            i++;
        } else if (!strcmp(a, "--keys") && val && atoll(val) >= NFIELDS) {
            keys = (size_t)atoll(val);
            i++;
        } else if (!strcmp(a, "--seconds") && val && atof(val) > 0) {
            seconds = atof(val);
            i++;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: verdict bench state [--keys N (1000000)] [--seconds S (8)] [--json]\n"
                   "  update/query ns per transaction and bytes per tracked key of the velocity state,\n"
                   "  at 100000 keys and at N keys, split evenly over card_id, account_id, device_id, ip\n"
                   "usage: verdict bench state --catchup [--nats-url URL] [--json]\n"
                   "  microseconds per one-sequence catch-up of the sequencing stage: a rebuild (its own ordered\n"
                   "  consumer) each, and the persistent catch-up reader, on a private nats-server (or URL)\n");
            return 0;
        } else {
            fprintf(stderr, "verdict bench state: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (catchup)
        return bench_catchup(url, json);
    run_result small = {0}, big = {0};
    if (run(100000, seconds, false, &small) != 0 || run(keys, seconds, true, &big) != 0)
        return 1;
    printf("\n  verdict bench state (%zu velocity features, %zu keys over %d key fields)\n",
           sizeof reference / sizeof reference[0], (size_t)big.keys, NFIELDS);
    printf("  ------------------------------------------------------------\n");
    printf("  bytes/key    at 100k keys  %8.1f  (records + index; target < 256)\n", small.bytes_per_key);
    printf("               at %zu keys %8.1f  (%.1f with the %.1f MB seen-set)\n", (size_t)big.keys,
           big.bytes_per_key, big.bytes_total_per_key, (double)big.bytes_seen / 1e6);
    printf("  record bytes ");
    static featreg names; /* the key fields are built-ins: their names do not depend on the registry */
    featreg_init(&names);
    for (int i = 0; i < big.st.n_key_feats; i++)
        printf(" %s %u", names.defs[big.st.key_feats[i]].name, big.st.record_bytes[i]);
    printf("\n");
    printf("  per txn      update %7.1f ns  query %7.1f ns  features+add %7.1f ns\n", big.update_ns, big.query_ns,
           big.both_ns);
    printf("               features+add with the keys two transactions ahead (the sequencer's way) %7.1f ns\n",
           big.ahead_ns);
    printf("  threads      1: %.0f/s  2 sharing one mutex: %.0f/s\n", big.st_ops_per_s, big.mt_ops_per_s);
    printf("  evictions    %llu  seen-set %llu ids\n", (unsigned long long)big.st.evictions,
           (unsigned long long)big.st.seen);
    if (json)
        printf("{\"bench\":\"state\",\"keys\":%llu,\"features\":%zu,\"bytes_per_key\":%.1f,"
               "\"bytes_per_key_100k\":%.1f,\"bytes_per_key_with_seen\":%.1f,\"seen_bytes\":%llu,"
               "\"update_ns\":%.1f,\"query_ns\":%.1f,\"features_and_add_ns\":%.1f,\"features_and_add_ahead_ns\":%.1f,\"ops_per_s_1thread\":%.0f,"
               "\"ops_per_s_2threads\":%.0f,\"evictions\":%llu}\n",
               (unsigned long long)big.keys, sizeof reference / sizeof reference[0], big.bytes_per_key,
               small.bytes_per_key, big.bytes_total_per_key, (unsigned long long)big.bytes_seen, big.update_ns,
               big.query_ns, big.both_ns, big.ahead_ns, big.st_ops_per_s, big.mt_ops_per_s, (unsigned long long)big.st.evictions);
    return 0;
}

/* --- bench snapshot ------------------------------------------------------------------------------------- */

typedef struct snap_result {
    uint64_t keys, seen, bytes;
    double write_fresh_ms, write_ms, copy_ms, read_ms, save_ms, load_ms;
} snap_result;

static double ms_since(int64_t t0) { return (double)(mono_ns() - t0) / 1e6; }

/* Fills every table, then adds random transactions until the seen-set is full (its default 1,048,576 ids, or
 * 4 per key at 100k keys), times the write into a fresh and into a reused buffer, the copy alone
 * (velocity_snapshot_copy: what the owning thread must do; the lock is held for it), the read, and with js a
 * save and a load through the bucket. */
static int snap_run(size_t keys, jsCtx *js, const config *cfg, snap_result *r)
{
    world w;
    if (world_init(&w, keys) != 0)
        return 1;
    verror e = {0};
    uint64_t n = 0;
    velocity *v = fill(&w, &n, &e);
    if (!v) {
        fprintf(stderr, "bench snapshot: %s\n", e.msg);
        free(w.names);
        return 1;
    }
    size_t seen_target = keys < 250000 ? keys * 4 : (size_t)1 << 20;
    static fval vals[FEAT_MAX];
    char id[20];
    uint64_t rng = 0x853c49e6748fea9bULL;
    for (int i = 0; i < w.reg.n; i++)
        vals[i] = (fval){.type = (uint8_t)w.reg.defs[i].type};
    while (n < seen_target) {
        make_txn(&w, vals, n, -1, &rng, id);
        velocity_add(v, &w.plan, vals, T_START + (int64_t)n);
        n++;
    }
    velocity_stats_t st;
    velocity_stats(v, &st);
    r->keys = st.keys;
    r->seen = st.seen;
    size_t cap = velocity_snapshot_bound(v), len = 0;
    unsigned char *buf = malloc(cap), *copy = malloc(cap);
    int rc = 1;
    velocity *back = NULL;
    if (!buf || !copy)
        goto out;
    int64_t t0 = mono_ns();
    if (velocity_snapshot_write(v, n, now_ms(), buf, cap, &len, &e) != V_OK)
        goto fail;
    r->write_fresh_ms = ms_since(t0);
    r->bytes = len;
    double best = 1e18, best_copy = 1e18;
    for (int k = 0; k < 3; k++) {
        t0 = mono_ns();
        if (velocity_snapshot_write(v, n, now_ms(), buf, cap, &len, &e) != V_OK)
            goto fail;
        double ms = ms_since(t0);
        best = ms < best ? ms : best;
        t0 = mono_ns();
        if (velocity_snapshot_copy(v, n, now_ms(), copy, cap, &len, &e) != V_OK)
            goto fail;
        ms = ms_since(t0);
        best_copy = ms < best_copy ? ms : best_copy;
    }
    r->write_ms = best;
    r->copy_ms = best_copy;
    velocity_cfg vc = {.max_keys = w.per_field};
    t0 = mono_ns();
    if (velocity_snapshot_read(&w.plan, &vc, buf, len, &back, NULL, NULL, &e) != V_OK)
        goto fail;
    r->read_ms = ms_since(t0);
    velocity_free(back);
    back = NULL;
    fprintf(stderr,
            "[bench snapshot] %llu keys, %llu seen: %zu bytes, write %.1f ms (fresh buffer %.1f), read %.1f ms\n",
            (unsigned long long)r->keys, (unsigned long long)r->seen, len, r->write_ms, r->write_fresh_ms, r->read_ms);
    if (js) {
        t0 = mono_ns();
        if (snapshot_save(js, cfg, buf, len, n, &e) != V_OK)
            goto fail;
        r->save_ms = ms_since(t0);
        uint64_t pos = 0;
        t0 = mono_ns();
        if (snapshot_load_newest(js, cfg, &w.plan, &vc, &back, &pos, NULL, NULL, &e) != V_OK)
            goto fail;
        r->load_ms = ms_since(t0);
        if (pos != n) {
            verror_set(&e, V_EINVAL, "loaded position %llu, saved %llu", (unsigned long long)pos,
                       (unsigned long long)n);
            goto fail;
        }
        if (snapshot_prune(js, cfg, 0, &e) != V_OK)
            goto fail;
    }
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "bench snapshot: %s\n", e.msg);
out:
    velocity_free(back);
    velocity_free(v);
    free(buf);
    free(copy);
    free(w.names);
    return rc;
}

int bench_snapshot(int argc, char **argv)
{
    size_t keys = 1000000;
    bool json = false, nats = true;
    const char *url = getenv("VERDICT_NATS_URL");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "snapshot"))
            continue;
        if (!strcmp(a, "--json"))
            json = true;
        else if (!strcmp(a, "--no-nats"))
            nats = false;
        else if (!strcmp(a, "--keys") && val && atoll(val) >= NFIELDS) {
            keys = (size_t)atoll(val);
            i++;
        } else if (!strcmp(a, "--nats-url") && val) {
            url = val;
            i++;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: verdict bench snapshot [--keys N (1000000)] [--nats-url URL | --no-nats] [--json]\n"
                   "  size and time of a velocity snapshot at 100000 and N live keys (reference rule set, keys split\n"
                   "  over card_id, account_id, device_id, ip; seen-set full): write (the lock is held for the copy),\n"
                   "  read, and save/load through the snapshot bucket of a private nats-server (or URL)\n");
            return 0;
        } else {
            fprintf(stderr, "verdict bench snapshot: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    localserver ls = {0};
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    config cfg;
    config_defaults(&cfg);
    str_copy(cfg.prefix, sizeof cfg.prefix, "bench");
    str_copy(cfg.consumer, sizeof cfg.consumer, "bench_snapshot");
    verror e = {0};
    if (nats) {
        if (!url) {
            if (localserver_start(&ls, &e) != V_OK) {
                fprintf(stderr, "verdict bench snapshot: %s\n", e.msg);
                return 1;
            }
            url = ls.url;
        }
        str_copy(cfg.nats_url, sizeof cfg.nats_url, url);
        if (broker_connect(&cfg, "verdict-bench-snapshot", false, &nc, &e) != V_OK ||
            natsConnection_JetStream(&js, nc, NULL) != NATS_OK) {
            fprintf(stderr, "verdict bench snapshot: %s\n", e.msg[0] ? e.msg : "no JetStream context");
            natsConnection_Destroy(nc);
            if (ls.pid)
                localserver_stop(&ls);
            return 1;
        }
    }
    snap_result small = {0}, big = {0};
    int rc = snap_run(100000, js, &cfg, &small) || snap_run(keys, js, &cfg, &big);
    if (js) {
        jsErrCode jerr = 0;
        char bucket[NAME_MAX_LEN + 8];
        snapshot_bucket(&cfg, bucket, sizeof bucket);
        char stream[NAME_MAX_LEN + 16];
        snprintf(stream, sizeof stream, "OBJ_%s", bucket);
        js_DeleteStream(js, stream, NULL, &jerr);
    }
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    if (ls.pid)
        localserver_stop(&ls);
    if (rc)
        return 1;
    printf("\n  verdict bench snapshot (%zu velocity features, reference rule set)\n",
           sizeof reference / sizeof reference[0]);
    printf("  --------------------------------------------------------------------------------------\n");
    printf("  %9s %8s %9s %8s %9s %8s %8s %8s %8s\n", "keys", "seen", "MB", "write", "(copy)", "fresh", "read", "save",
           "load");
    const snap_result *rs[2] = {&small, &big};
    for (int i = 0; i < 2; i++)
        printf("  %9llu %8llu %9.1f %6.1fms %7.1fms %6.1fms %6.1fms %6.0fms %6.0fms\n", (unsigned long long)rs[i]->keys,
               (unsigned long long)rs[i]->seen, (double)rs[i]->bytes / 1e6, rs[i]->write_ms, rs[i]->copy_ms,
               rs[i]->write_fresh_ms, rs[i]->read_ms, rs[i]->save_ms, rs[i]->load_ms);
    printf("  write: into a reused buffer (best of 3); (copy): velocity_snapshot_copy alone, the part under the\n"
           "  state's lock (write = copy + CRC-32C); fresh: write into a new buffer (page faults included);\n"
           "  save/load: through the bucket, SHA-256 and chunks included\n");
    if (json)
        printf("{\"bench\":\"snapshot\",\"runs\":[{\"keys\":%llu,\"bytes\":%llu,\"write_ms\":%.1f,\"copy_ms\":%.1f,"
               "\"write_fresh_ms\":%.1f,\"read_ms\":%.1f,\"save_ms\":%.0f,\"load_ms\":%.0f},{\"keys\":%llu,"
               "\"bytes\":%llu,\"write_ms\":%.1f,\"copy_ms\":%.1f,\"write_fresh_ms\":%.1f,\"read_ms\":%.1f,"
               "\"save_ms\":%.0f,\"load_ms\":%.0f}]}\n",
               (unsigned long long)small.keys, (unsigned long long)small.bytes, small.write_ms, small.copy_ms,
               small.write_fresh_ms, small.read_ms, small.save_ms, small.load_ms, (unsigned long long)big.keys,
               (unsigned long long)big.bytes, big.write_ms, big.copy_ms, big.write_fresh_ms, big.read_ms, big.save_ms,
               big.load_ms);
    return 0;
}

/* test_catchup.c - the sequencing stage's persistent catch-up reader (issue 18: an engine that owns some
 * partitions counts every other sequence of TXN by catching up before nearly every message).
 *
 * In-process, against a real nats-server: a velocity state is driven as the sequencer drives it, counting the odd
 * sequences of TXN itself (the messages "its consumer" hands it) and calling seq_catch_up for each even one in
 * between (a gap of one). Its features, recorded in the ring for every sequence, and its counts must equal one
 * full rebuild over the same stream; and the catch-ups must share one ordered consumer (the consumer-created
 * advisories of TXN are counted), not open one each. A new state behind the reader, an idle reader and a read
 * that fails (a stopped server) each reopen it. */
#include "client.h"
#include "harness.h"

#include "broker.h"
#include "config.h"
#include "decide.h"
#include "engine_int.h"
#include "rebuild.h"
#include "sequencer.h"
#include "simgen.h"
#include "streamread.h"
#include "velocity.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_TXN 400
#define RING_CAP 1024

static test_server srv;
static natsConnection *nc;
static jsCtx *js;
static char logp[256];
static config cfg;
static policy *pol;
static engine *en; /* only what seq_catch_up uses: cfg, js, stats, the catch-up reader */

static void setup(void)
{
    tc_fixture_up(&srv, &nc, &js, logp, sizeof logp);
    config_defaults(&cfg);
    char *args[] = {"serve", NULL};
    bool help = false;
    verror e = {0};
    cr_assert_eq(config_parse(&cfg, 1, args, &help, NULL, NULL, &e), V_OK, "%s", e.msg);
    cr_assert_eq(broker_setup(&cfg, js, &e), V_OK, "%s", e.msg);
    char rulesp[300], modelp[300];
    snprintf(rulesp, sizeof rulesp, "%s/rules/default.rules", VERDICT_SOURCE_DIR);
    snprintf(modelp, sizeof modelp, "%s/models/verdict-gbdt.json", VERDICT_SOURCE_DIR);
    rules_diag diag = {0};
    cr_assert_eq(policy_load(rulesp, modelp, &pol, &diag), V_OK, "%s", diag.text ? diag.text : "");
    rules_diag_free(&diag);
    en = calloc(1, sizeof *en);
    cr_assert_not_null(en);
    en->cfg = cfg;
    en->js = js;
}

static void teardown(void)
{
    if (en)
        catchup_reader_close(en->catchup);
    free(en);
    en = NULL;
    policy_release(pol);
    pol = NULL;
    tc_fixture_down(&srv, nc, js, logp);
}

TestSuite(catchup, .init = setup, .fini = teardown, .timeout = 120);

static void publish_raw(jsCtx *pjs, const void *data, int len, const char *id)
{
    natsMsg *m = NULL;
    cr_assert_eq(natsMsg_Create(&m, "txn.in", NULL, (const char *)data, len), NATS_OK);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = id;
    cr_assert_eq(js_PublishMsgAsync(pjs, &m, &po), NATS_OK);
}

/* Publishes count transactions of a few cards (so every window fills), with an undecodable message and a
 * retried transaction (the same txn_id stored twice under another message id) among them. */
static void publish_txns(int count, uint64_t seed)
{
    simgen_cfg gc = {.seed = seed, .cards = 4, .fraud_rate = 0.05};
    simgen_defaults(&gc);
    simgen *g = simgen_create(&gc);
    cr_assert_not_null(g);
    jsCtx *pjs = NULL;
    jsOptions o;
    jsOptions_Init(&o);
    o.PublishAsync.MaxPending = 256;
    cr_assert_eq(natsConnection_JetStream(&pjs, nc, &o), NATS_OK);
    static unsigned char buf[4096];
    for (int i = 0; i < count; i++) {
        Transaction t;
        simgen_next(g, &t);
        int n = (int)verdict__v1__transaction__pack(&t, buf);
        char id[96];
        snprintf(id, sizeof id, "%llu-%s", (unsigned long long)seed, t.txn_id);
        publish_raw(pjs, buf, n, id);
        if (i == 100) { /* the same transaction again: counted once */
            snprintf(id, sizeof id, "%llu-%s-retry", (unsigned long long)seed, t.txn_id);
            publish_raw(pjs, buf, n, id);
        }
        if (i == 50 || i == 201) { /* poison: counts toward nothing */
            snprintf(id, sizeof id, "%llu-poison-%d", (unsigned long long)seed, i);
            publish_raw(pjs, "\xff\xff\xff\xff", 4, id);
        }
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 30000;
    cr_assert_eq(js_PublishAsyncComplete(pjs, &po), NATS_OK);
    jsCtx_Destroy(pjs);
    simgen_destroy(g);
}

static uint64_t last_seq(void)
{
    jsStreamInfo *si = NULL;
    cr_assert_eq(js_GetStreamInfo(&si, js, "TXN", NULL, NULL), NATS_OK);
    uint64_t last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    return last;
}

static velref *new_state(void)
{
    velocity *v = NULL;
    featring *ring = NULL;
    verror e = {0};
    velocity_cfg vc = {.max_keys = 20000};
    const velocity_plan *pl = policy_velocity_plan(pol);
    cr_assert_eq(velocity_new(pl, &vc, &v, &e), V_OK, "%s", e.msg);
    cr_assert_eq(featring_new(RING_CAP, pl->n, &ring, &e), V_OK, "%s", e.msg);
    velref *r = velref_new(v, ring, 0);
    cr_assert_not_null(r);
    return r;
}

/* The reference: one rebuild over sequences 1..upto, every sequence's features in its ring. */
static velref *full_rebuild(uint64_t upto)
{
    velref *r = new_state();
    rebuild_range rr = {.from_seq = 1, .upto_seq = upto, .ring = r->ring, .quiet = true};
    rebuild_stats st;
    verror e = {0};
    cr_assert_eq(rebuild_velocity(js, &cfg, policy_velocity_plan(pol), r->v, &rr, &st, &e), V_OK, "%s", e.msg);
    cr_assert_eq(st.upto_seq, upto);
    r->pos = upto;
    return r;
}

/* What sequence_one does with a message the consumer handed over: a catch-up over the gap before it, then the
 * sequencing step, its features recorded. */
static void sequence_msg(velref *r, natsMsg *m, uint64_t seq, int64_t store_ns)
{
    const velocity_plan *pl = policy_velocity_plan(pol);
    if (seq > r->pos + 1)
        seq_catch_up(en, r, pol, seq - 1);
    static arena a;
    static bool a_init;
    if (!a_init)
        cr_assert_eq(arena_init(&a, 1 << 20), V_OK);
    a_init = true;
    arena_reset(&a);
    Transaction *t = NULL;
    poison_reason why;
    if (txn_decode(&a, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), (size_t)cfg.max_msg_size, &t, &why,
                   NULL) == V_OK) {
        static fval vals[FEAT_MAX];
        velvals vv;
        seq_step(r->v, pl, t, txn_event_ms(t, store_ns / 1000000), vals);
        velvals_save(pl, vals, &vv);
        featring_put(r->ring, seq, &vv);
    }
    r->pos = seq;
}

/* Drives r over TXN's sequences from..upto, counting those keep() picks itself, the others by catch-ups. */
static void drive(velref *r, uint64_t from, uint64_t upto, bool (*keep)(uint64_t seq))
{
    stream_reader *sr = NULL;
    verror e = {0};
    cr_assert_eq(stream_reader_open(js, "TXN", NULL, from, 0, &sr, &e), V_OK, "%s", e.msg);
    for (;;) {
        natsMsg *m = NULL;
        uint64_t seq;
        int64_t store_ns;
        vstatus rc = stream_reader_next(sr, &m, &seq, &store_ns, 5000, &e);
        if (rc == V_ENOTFOUND)
            break;
        cr_assert_eq(rc, V_OK, "reading TXN: %s", e.msg);
        if (seq <= upto && keep(seq))
            sequence_msg(r, m, seq, store_ns);
        natsMsg_Destroy(m);
        if (seq >= upto)
            break;
    }
    stream_reader_close(sr);
    seq_catch_up(en, r, pol, upto); /* the tail, as the next delivered message would */
    cr_assert_eq(r->pos, upto);
}

static bool odd(uint64_t seq) { return seq % 2 == 1; }

/* Every sequence's features and the counts of a equal b's, over from..upto. */
static void assert_same(velref *a, velref *b, uint64_t from, uint64_t upto)
{
    int nfeat = 0;
    for (uint64_t s = from; s <= upto; s++) {
        velvals va, vb;
        bool ha = featring_get(a->ring, s, &va), hb = featring_get(b->ring, s, &vb);
        cr_assert_eq(ha, hb, "seq %llu: features recorded %d in the driven state, %d in the rebuild",
                     (unsigned long long)s, ha, hb);
        if (!ha)
            continue;
        cr_assert_eq(va.n, vb.n);
        for (int i = 0; i < va.n; i++) {
            bool pa = (va.present[i / 64] >> (i % 64)) & 1, pb = (vb.present[i / 64] >> (i % 64)) & 1;
            cr_assert_eq(pa, pb, "seq %llu feature %d: present %d vs %d", (unsigned long long)s, i, pa, pb);
            if (pa)
                cr_assert(va.num[i] == vb.num[i], "seq %llu feature %d: %g vs %g", (unsigned long long)s, i,
                          va.num[i], vb.num[i]);
            nfeat += pa;
        }
    }
    cr_assert_gt(nfeat, 0, "no velocity feature compared");
    velocity_stats_t sa, sb;
    velocity_stats(a->v, &sa);
    velocity_stats(b->v, &sb);
    cr_assert_eq(sa.keys, sb.keys);
    cr_assert_eq(sa.duplicates, sb.duplicates);
    cr_assert_geq(sa.duplicates, 1, "the retried transaction is counted once");
}

/* Consumer-created advisories of TXN: every ordered consumer anyone opens on it. */
static natsSubscription *advisories(void)
{
    natsSubscription *sub = NULL;
    cr_assert_eq(natsConnection_SubscribeSync(&sub, nc, "$JS.EVENT.ADVISORY.CONSUMER.CREATED.TXN.>"), NATS_OK);
    cr_assert_eq(natsConnection_Flush(nc), NATS_OK);
    return sub;
}

static int count_advisories(natsSubscription *sub)
{
    cr_assert_eq(natsConnection_Flush(nc), NATS_OK);
    tc_sleep_ms(200);
    int n = 0;
    natsMsg *m = NULL;
    while (natsSubscription_NextMsg(&m, sub, 100) == NATS_OK) {
        natsMsg_Destroy(m);
        n++;
    }
    return n;
}

Test(catchup, many_one_sequence_gaps_equal_a_full_rebuild_and_share_one_consumer)
{
    publish_txns(N_TXN, 1);
    uint64_t last = last_seq();
    cr_assert_eq(last, N_TXN + 3);
    velref *ref = full_rebuild(last);
    velref *r = new_state();
    natsSubscription *adv = advisories();
    drive(r, 1, last, odd);
    int created = count_advisories(adv);
    long long catch_ups = atomic_load(&en->stats.sequence_catch_ups);
    cr_assert_geq(catch_ups, (long long)last / 2 - 1, "%lld catch-ups", catch_ups);
    cr_assert_eq(atomic_load(&en->stats.sequence_gap_failures), 0);
    cr_assert_eq(atomic_load(&en->stats.sequence_gap_msgs), (long long)last / 2);
    /* (a) the features of every sequence and the counts are those of one rebuild */
    assert_same(r, ref, 1, last);
    /* (b) one consumer for ~200 catch-ups; the other advisory is the test's own reader's (drive). Before the
     * persistent reader: 202 consumers for 201 catch-ups */
    cr_assert_leq(created, 2, "%d ordered consumers opened on TXN for %lld catch-ups", created, catch_ups);
    cr_assert_leq(atomic_load(&en->stats.sequence_catchup_reader_opens), 2);
    natsSubscription_Destroy(adv);

    /* the stream grows: the same reader reads past the end it knew at open */
    publish_txns(100, 2);
    uint64_t last2 = last_seq();
    drive(r, last + 1, last2, odd);
    velref *ref2 = full_rebuild(last2);
    assert_same(r, ref2, 1, last2);
    cr_assert_leq(atomic_load(&en->stats.sequence_catchup_reader_opens), 2);
    velref_release(ref2);
    velref_release(ref);
    velref_release(r);
}

Test(catchup, a_state_behind_the_reader_and_an_idle_reader_reopen_it)
{
    publish_txns(N_TXN, 3);
    uint64_t last = last_seq();
    velref *ref = full_rebuild(last);
    velref *r = new_state();
    drive(r, 1, last, odd);
    long long opens = atomic_load(&en->stats.sequence_catchup_reader_opens);
    cr_assert_eq(opens, 1);
    /* a reload's new state, at sequence 1, catches up over what the reader has passed: it reopens there */
    velref *nr = new_state();
    drive(nr, 1, 1, odd);
    seq_catch_up(en, nr, pol, last);
    cr_assert_eq(atomic_load(&en->stats.sequence_catchup_reader_opens), opens + 1);
    assert_same(nr, ref, 1, last);
    /* an idle reader is closed; the next catch-up opens one */
    cr_assert(catchup_reader_idle(&en->catchup, 0));
    cr_assert_null(en->catchup);
    publish_txns(10, 4);
    uint64_t last2 = last_seq();
    seq_catch_up(en, nr, pol, last2);
    cr_assert_eq(nr->pos, last2);
    cr_assert_eq(atomic_load(&en->stats.sequence_catchup_reader_opens), opens + 2);
    cr_assert_eq(atomic_load(&en->stats.sequence_gap_failures), 0);
    velvals vv;
    cr_assert(featring_get(nr->ring, last2, &vv), "the new sequences' features are recorded");
    /* sequences that never arrive (here: not stored): the reader asks the server, finds it has read everything
     * stored, and ends the catch-up rather than stalling it into a failure */
    seq_catch_up(en, nr, pol, last2 + 2);
    cr_assert_eq(nr->pos, last2 + 2);
    cr_assert_eq(atomic_load(&en->stats.sequence_gap_failures), 0);
    cr_assert_eq(atomic_load(&en->stats.sequence_catchup_reader_opens), opens + 2);
    velref_release(ref);
    velref_release(nr);
    velref_release(r);
}

Test(catchup, a_failed_read_is_counted_moves_on_and_the_next_catch_up_reopens)
{
    publish_txns(20, 5);
    uint64_t last = last_seq();
    velref *r = new_state();
    drive(r, 1, last, odd);
    cr_assert_eq(atomic_load(&en->stats.sequence_catchup_reader_opens), 1);
    /* sequences not stored yet, and a server that does not answer: the read stalls and fails */
    kill(srv.pid, SIGSTOP);
    seq_catch_up(en, r, pol, last + 3);
    kill(srv.pid, SIGCONT);
    cr_assert_eq(atomic_load(&en->stats.sequence_gap_failures), 1);
    cr_assert_eq(r->pos, last + 3, "the position moves on");
    cr_assert_null(en->catchup, "a failed reader is not kept");
    publish_txns(6, 6);
    uint64_t last2 = last_seq();
    cr_assert_eq(last2, last + 6);
    seq_catch_up(en, r, pol, last2);
    cr_assert_eq(atomic_load(&en->stats.sequence_gap_failures), 1);
    cr_assert_eq(atomic_load(&en->stats.sequence_catchup_reader_opens), 2);
    cr_assert_eq(r->pos, last2);
    velvals vv;
    cr_assert(featring_get(r->ring, last + 4, &vv), "counted after the reopen");
    cr_assert_not(featring_get(r->ring, last + 3, &vv), "not counted: the failed catch-up's");
    velref_release(r);
}

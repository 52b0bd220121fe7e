/* test_lease.c - partitions and partition leases (the ownership half of scale-out).
 *
 * Suite partition_fn: partition_of is FNV-1a 32 modulo N (known vectors), and it puts every key where a real
 * nats-server's `{{partition(16,1)}}` mapping puts it, so clients may compute it or let the server map.
 * Suite lease (a real nats-server): lease.c's protocol. One holder at a time; a contender takes an abandoned
 * lease only after the TTL, measured from its first read, and the abandoned holder's validity has ended by then;
 * a lost holder notices; a released lease is taken at once; a lost renewal answer is recovered by CAS; four
 * contenders racing for a free lease produce exactly one holder, round after round. */
#include "client.h"
#include "harness.h"
#include "config.h"
#include "lease.h"
#include "partition.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MS 1000000LL

/* --- partition_fn ---------------------------------------------------------------------------------------- */

Test(partition_fn, is_fnv1a_32_modulo_n)
{
    cr_assert_eq(partition_hash("", 0), 0x811c9dc5u);
    cr_assert_eq(partition_hash("a", 1), 0xe40c292cu);
    cr_assert_eq(partition_hash("foobar", 6), 0xbf9cf968u);
    cr_assert_eq(partition_of("foobar", 6, 16), 0xbf9cf968u % 16);
    cr_assert_eq(partition_of("foobar", 6, 1), 0u);
    cr_assert(partition_key_ok("card_00001", 10));
    cr_assert_not(partition_key_ok("a.b", 3), "a dot would split the subject token");
    cr_assert_not(partition_key_ok("a b", 3));
    cr_assert_not(partition_key_ok("*", 1));
    cr_assert_not(partition_key_ok("", 0));
}

/* --partitions: TXN's subjects become <base>.p.>, a partition's consumer and filter, the ingress's own subject
 * (the only one whose Verdict-Reply-To is honoured), and a card id that is no subject token has none. */
Test(partition_fn, names_the_partitioned_subjects_and_consumers)
{
    config c;
    config_defaults(&c);
    char *argv[] = {"serve", "--partitions", "16"};
    bool help = false;
    verror e = {0};
    cr_assert_eq(config_parse(&c, 3, argv, &help, NULL, NULL, &e), V_OK, "%s", e.msg);
    cr_assert_str_eq(c.txn_subjects, "txn.p.>");
    cr_assert_eq(c.lease_ttl_ms, 3000, "partitions are owned through leases: a TTL by default");
    char out[128];
    partition_consumer(&c, 3, out, sizeof out);
    cr_assert_str_eq(out, "verdict-p3");
    partition_filter(&c, 3, out, sizeof out);
    cr_assert_str_eq(out, "txn.p.3.>");
    cr_assert(partition_ingress_subject(&c, "foobar", out, sizeof out));
    char want[64];
    snprintf(want, sizeof want, "txn.p.%u.req.foobar", 0xbf9cf968u % 16);
    cr_assert_str_eq(out, want);
    cr_assert_not(partition_ingress_subject(&c, "a.b", out, sizeof out));
    cr_assert(partition_is_ingress_subject(&c, want));
    cr_assert_not(partition_is_ingress_subject(&c, "txn.p.3.foobar"), "a payment service's subject");
    cr_assert_not(partition_is_ingress_subject(&c, "txn.p.x.req.foobar"));
    cr_assert_not(partition_is_ingress_subject(&c, "txn.p.3.req."));
    cr_assert_not(partition_is_ingress_subject(&c, "txn.q.3.req.foobar"));
    cr_assert_not(partition_is_ingress_subject(&c, "txn.p.3.req.a.b"));
    /* with a prefix, and without partitions nothing is a partition subject */
    config d;
    config_defaults(&d);
    char *argv2[] = {"serve", "--prefix", "acme", "--partitions", "4"};
    cr_assert_eq(config_parse(&d, 5, argv2, &help, NULL, NULL, &e), V_OK, "%s", e.msg);
    cr_assert_str_eq(d.txn_subjects, "acme.txn.p.>");
    config z;
    config_defaults(&z);
    cr_assert_not(partition_is_ingress_subject(&z, want));
}

Test(partition_fn, agrees_with_the_servers_partition_mapping, .timeout = 30)
{
    test_server srv;
    cr_assert(server_start(&srv, "mappings: { \"pt.card.*\": \"pt.p.{{partition(16,1)}}.{{wildcard(1)}}\" }\n"));
    natsConnection *nc = tc_connect(srv.url);
    natsSubscription *sub = NULL;
    cr_assert_eq(natsConnection_SubscribeSync(&sub, nc, "pt.p.>"), NATS_OK);
    enum { KEYS = 500 };
    char key[64], subj[96];
    for (int i = 0; i < KEYS; i++) {
        /* card-like tokens of several shapes and lengths */
        snprintf(key, sizeof key, i % 3 ? "card_%05d" : "tok-%x-Z%d_q", i * 7919, i);
        snprintf(subj, sizeof subj, "pt.card.%s", key);
        cr_assert_eq(natsConnection_PublishString(nc, subj, ""), NATS_OK);
    }
    cr_assert_eq(natsConnection_Flush(nc), NATS_OK);
    int seen = 0, wrong = 0;
    for (; seen < KEYS; seen++) {
        natsMsg *m = NULL;
        if (natsSubscription_NextMsg(&m, sub, 5000) != NATS_OK)
            break;
        const char *s = natsMsg_GetSubject(m); /* pt.p.<P>.<key> */
        unsigned p = 0;
        int off = 0;
        cr_assert_eq(sscanf(s, "pt.p.%u.%n", &p, &off), 1, "%s", s);
        const char *k = s + off;
        if (partition_of(k, strlen(k), 16) != p) {
            wrong++;
            fprintf(stderr, "server put %s in %u, partition_of says %u\n", k, p, partition_of(k, strlen(k), 16));
        }
        natsMsg_Destroy(m);
    }
    cr_assert_eq(seen, KEYS);
    cr_assert_eq(wrong, 0);
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(nc);
    server_stop(&srv);
}

/* --- lease ----------------------------------------------------------------------------------------------- */

static test_server srv;
static natsConnection *nc;
static jsCtx *js;

static void up(void)
{
    cr_assert(server_start(&srv, NULL));
    nc = tc_connect(srv.url);
    cr_assert_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
}

static void down(void)
{
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    server_stop(&srv);
}

static lease_table *open_table(const char *id, int64_t ttl_ms)
{
    lease_table *t = NULL;
    verror e = {0};
    cr_assert_eq(lease_open(&t, js, "verdict_leases", id, ttl_ms, 1, &e), V_OK, "lease_open: %s", e.msg);
    return t;
}

static void step(lease_table *t, lease *l)
{
    verror e = {0};
    cr_assert_eq(lease_step(t, l, &e), V_OK, "lease_step: %s", e.msg);
}

Test(lease, refuses_a_short_ttl_and_a_bad_engine_id, .init = up, .fini = down)
{
    lease_table *t = NULL;
    verror e = {0};
    cr_assert_eq(lease_open(&t, js, "verdict_leases", "a", 100, 1, &e), V_EINVAL);
    cr_assert(strstr(e.msg, "minimum"), "%s", e.msg);
    cr_assert_eq(lease_open(&t, js, "verdict_leases", "a\"b", 1000, 1, &e), V_EINVAL);
    cr_assert_null(t);
    lease l;
    cr_assert_not(lease_init(&l, "a.b"), "a dot is not a consumer name");
    cr_assert_not(lease_init(&l, ""));
    cr_assert(lease_init(&l, "verdict"));
}

Test(lease, one_holder_while_it_renews, .init = up, .fini = down, .timeout = 30)
{
    lease_table *a = open_table("engine-a", 1000), *b = open_table("engine-b", 1000);
    cr_assert_str_neq(lease_instance(a), lease_instance(b));
    lease la, lb;
    cr_assert(lease_init(&la, "verdict-p3"));
    cr_assert(lease_init(&lb, "verdict-p3"));
    step(a, &la);
    cr_assert(la.held && lease_valid(&la, mono_ns()));
    cr_assert_eq(la.epoch, 1u);
    /* 3 s = three TTLs: a renews every 300 ms, b tries every 100 ms and never gets it */
    for (int i = 0; i < 30; i++) {
        if (i % 3 == 0)
            step(a, &la);
        step(b, &lb);
        cr_assert(lease_valid(&la, mono_ns()), "holder lost its lease while renewing (i=%d)", i);
        cr_assert_not(lb.held, "contender took a renewed lease (i=%d)", i);
        cr_assert_str_eq(lb.owner, lease_instance(a));
        tc_sleep_ms(100);
    }
    lease_close(a);
    lease_close(b);
}

Test(lease, an_abandoned_lease_is_taken_after_the_ttl_and_the_old_holder_has_stopped_by_then, .init = up,
     .fini = down, .timeout = 30)
{
    lease_table *a = open_table("engine-a", 1000), *b = open_table("engine-b", 1000);
    lease la, lb;
    cr_assert(lease_init(&la, "verdict-p0"));
    cr_assert(lease_init(&lb, "verdict-p0"));
    step(a, &la);
    cr_assert(la.held);
    uint64_t e1 = la.epoch;
    /* a stops renewing (paused, cut off); b polls every 50 ms */
    int64_t first_seen = 0, taken_at = 0;
    for (int i = 0; i < 100 && !lb.held; i++) {
        step(b, &lb);
        int64_t now = mono_ns();
        if (!first_seen)
            first_seen = now;
        if (lb.held)
            taken_at = now;
        else
            tc_sleep_ms(50);
    }
    cr_assert(lb.held, "contender never took the abandoned lease");
    cr_assert_geq(taken_at - first_seen, 1000 * MS, "taken %lld ms after first seen, before the TTL",
                  (long long)((taken_at - first_seen) / MS));
    cr_assert_lt(taken_at - first_seen, 1600 * MS, "taken %lld ms after first seen",
                 (long long)((taken_at - first_seen) / MS));
    cr_assert_leq(la.valid_until_ns, taken_at, "old holder still valid when the new one took over");
    cr_assert_not(lease_valid(&la, taken_at));
    cr_assert_eq(lb.epoch, e1 + 1, "a change of owner increments the epoch");
    /* the old holder comes back: its renewal fails, it reads the new owner and stands by */
    step(a, &la);
    cr_assert_not(la.held);
    cr_assert_str_eq(la.owner, lease_instance(b));
    cr_assert_eq(la.epoch, lb.epoch);
    lease_close(a);
    lease_close(b);
}

Test(lease, a_released_lease_is_taken_at_once, .init = up, .fini = down, .timeout = 30)
{
    lease_table *a = open_table("engine-a", 5000), *b = open_table("engine-b", 5000);
    lease la, lb;
    cr_assert(lease_init(&la, "verdict-p7"));
    cr_assert(lease_init(&lb, "verdict-p7"));
    step(a, &la);
    step(b, &lb);
    cr_assert(la.held && !lb.held);
    verror e = {0};
    cr_assert_eq(lease_release(a, &la, &e), V_OK, "%s", e.msg);
    cr_assert_not(lease_valid(&la, mono_ns()));
    int64_t t0 = mono_ns();
    step(b, &lb);
    cr_assert(lb.held, "released lease not taken at once");
    cr_assert_lt(mono_ns() - t0, 2000 * MS, "took longer than a TTL would allow");
    cr_assert_eq(lb.epoch, la.epoch + 1);
    lease_close(a);
    lease_close(b);
}

/* An engine at its share of the partitions observes a free lease without taking it (no_take), and takes it at
 * once when it may again; an expired one likewise. */
Test(lease, no_take_observes_a_free_or_expired_lease_without_taking_it, .init = up, .fini = down, .timeout = 30)
{
    lease_table *a = open_table("engine-a", 1000), *b = open_table("engine-b", 1000);
    lease la, lb;
    cr_assert(lease_init(&la, "verdict-p2"));
    cr_assert(lease_init(&lb, "verdict-p2"));
    lb.no_take = true;
    step(b, &lb);
    cr_assert_not(lb.held, "an absent lease taken despite no_take");
    step(a, &la);
    cr_assert(la.held, "the other engine takes it");
    step(b, &lb); /* b reads a's revision: its clock starts */
    tc_sleep_ms(1200); /* a stops renewing: expired for b */
    step(b, &lb);
    cr_assert_not(lb.held, "an expired lease taken despite no_take");
    lb.no_take = false;
    step(b, &lb);
    cr_assert(lb.held, "an expired lease not taken once b may");
    lease_close(a);
    lease_close(b);
}

Test(lease, a_holder_that_lost_track_recovers_its_own_lease_by_cas, .init = up, .fini = down, .timeout = 30)
{
    lease_table *a = open_table("engine-a", 1000);
    lease la;
    cr_assert(lease_init(&la, "verdict-p1"));
    step(a, &la);
    cr_assert(la.held);
    uint64_t ep = la.epoch, rev = la.revision;
    /* as after a renewal whose answer was lost: the entry is ours, the struct does not know its revision */
    la.held = false;
    la.revision = rev - 1 ? rev - 1 : 999;
    step(a, &la);
    cr_assert(la.held, "own lease not recovered");
    cr_assert_eq(la.epoch, ep, "recovering one's own lease is not a change of owner");
    cr_assert_gt(la.revision, rev);
    lease_close(a);
}

/* Taken during a cut and handed back at the heal: the old holder's next step reports the loss (the caller stops
 * the partition) and only a later step takes it, with a new epoch. Before, the old holder took the released
 * lease in the same step and its partition manager saw a renewal: it logged "renewed again" instead of
 * "partition lost" and kept the partition running (test_standby_netns, CI, 2026-12-02). */
Test(lease, a_holder_whose_lease_was_taken_and_released_meanwhile_learns_that_it_lost_it, .init = up, .fini = down,
     .timeout = 30)
{
    lease_table *a = open_table("engine-a", 1000), *c = open_table("engine-c", 1000);
    lease la, lc;
    cr_assert(lease_init(&la, "verdict-p0"));
    cr_assert(lease_init(&lc, "verdict-p0"));
    step(a, &la);
    cr_assert(la.held);
    step(c, &lc); /* c's clock starts; a stops renewing (cut off) */
    tc_sleep_ms(1200);
    step(c, &lc);
    cr_assert(lc.held, "the expired lease was not taken");
    verror e = {0};
    cr_assert_eq(lease_release(c, &lc, &e), V_OK, "%s", e.msg);
    step(a, &la); /* a returns: its renewal fails, and the lease it finds is free */
    cr_assert_not(la.held, "the old holder must see that it lost the lease, not renew it");
    cr_assert_not(lease_valid(&la, mono_ns()));
    step(a, &la);
    cr_assert(la.held, "the free lease is taken in the next step");
    cr_assert_eq(la.epoch, lc.epoch + 1, "as a new owner: epoch %llu after c's %llu", (unsigned long long)la.epoch,
                 (unsigned long long)lc.epoch);
    lease_close(a);
    lease_close(c);
}

Test(lease, partitions_are_independent, .init = up, .fini = down, .timeout = 30)
{
    lease_table *a = open_table("engine-a", 5000), *b = open_table("engine-b", 5000);
    lease l[4];
    for (int p = 0; p < 4; p++) {
        char nm[32];
        snprintf(nm, sizeof nm, "verdict-p%d", p);
        cr_assert(lease_init(&l[p], nm));
        step(p % 2 ? b : a, &l[p]);
        cr_assert(l[p].held, "partition %d", p);
    }
    lease other;
    cr_assert(lease_init(&other, "verdict-p1")); /* b holds 1: a must not */
    step(a, &other);
    cr_assert_not(other.held);
    cr_assert_str_eq(other.owner, lease_instance(b));
    lease_close(a);
    lease_close(b);
}

/* Four contenders race for one free lease from four threads, 20 rounds: exactly one wins each round. */
#define RACERS 4
static lease_table *rt[RACERS];
static lease rl[RACERS];
static pthread_barrier_t bar;
static atomic_int racer_errors;

static void *racer(void *arg)
{
    int i = (int)(intptr_t)arg;
    verror e = {0};
    pthread_barrier_wait(&bar);
    if (lease_step(rt[i], &rl[i], &e) != V_OK)
        atomic_fetch_add(&racer_errors, 1);
    return NULL;
}

Test(lease, racing_contenders_make_exactly_one_holder, .init = up, .fini = down, .timeout = 60)
{
    char id[32];
    for (int i = 0; i < RACERS; i++) {
        snprintf(id, sizeof id, "racer-%d", i);
        rt[i] = open_table(id, 5000);
        cr_assert(lease_init(&rl[i], "verdict-p9"));
    }
    int winners_total = 0;
    uint64_t last_epoch = 0;
    for (int round = 0; round < 20; round++) {
        pthread_barrier_init(&bar, NULL, RACERS);
        pthread_t th[RACERS];
        for (int i = 0; i < RACERS; i++)
            cr_assert_eq(pthread_create(&th[i], NULL, racer, (void *)(intptr_t)i), 0);
        for (int i = 0; i < RACERS; i++)
            pthread_join(th[i], NULL);
        pthread_barrier_destroy(&bar);
        cr_assert_eq(atomic_load(&racer_errors), 0);
        int holders = 0, w = -1;
        for (int i = 0; i < RACERS; i++)
            if (rl[i].held) {
                holders++;
                w = i;
            }
        cr_assert_eq(holders, 1, "round %d: %d holders", round, holders);
        cr_assert_gt(rl[w].epoch, last_epoch, "round %d: the epoch did not move on", round);
        last_epoch = rl[w].epoch;
        winners_total++;
        verror e = {0};
        cr_assert_eq(lease_release(rt[w], &rl[w], &e), V_OK, "%s", e.msg);
    }
    cr_assert_eq(winners_total, 20);
    for (int i = 0; i < RACERS; i++)
        lease_close(rt[i]);
}

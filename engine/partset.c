/* partset.c - a partitioned TXN (--partitions N): which partitions this engine decides, and pulling them.
 *
 * Every partition P has its own durable consumer (<consumer>-p<P>) and its own lease in the lease bucket (lease.h,
 * the same protocol as the single consumer's hot standby). Engines announce themselves in the members bucket
 * (a heartbeat every round, deleted at a clean stop) and each holds at most its share, ceil(N / live engines), of
 * the partitions: it takes free or expired leases while below its share and releases its highest extras while
 * above it, so a joining engine gets partitions at once (released leases are taken at once) and a dead engine's
 * partitions are taken once its leases have gone unrenewed for the TTL and its heartbeat has stopped.
 *
 * One fetcher thread per owned partition pulls that partition's consumer while the lease is valid (the fence:
 * lease_valid, checked before and after each fetch; what a fetch brought after the lease lapsed is handed back
 * with a nak) and queues the batch for the sequencing stage, which computes every transaction's features in
 * stream order from the whole of TXN: sequences of other partitions are counted by its catch-up, so every
 * engine's state is the stream-order state (docs/architecture.md, "Partitions"). Leases and membership are
 * touched only by the manager thread; fetchers read their partition's validity through an atomic. */
#include "engine_int.h"

#include "broker.h"
#include "lease.h"
#include "log.h"
#include "partition.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_MS 1000000LL
#define MEMBERS_MAX 256
#define ROUND_MAX_MS 500 /* at most this between two rounds: a takeover comes within TTL plus a round */

typedef struct part {
    unsigned p;
    char consumer[NAME_MAX_LEN + 16];
    lease lease;                 /* the manager's */
    natsSubscription *sub;       /* bound while owned; the fetcher pulls it, the manager creates and destroys it */
    atomic_llong valid_ns;       /* mono_ns() until which the fetcher may fetch (0: fenced) */
    atomic_bool quit;            /* the fetcher's stop flag */
    bool renew_failing;          /* a renewal failed and was logged; logged again once one succeeds */
    pthread_t fetcher;
    bool running;
    struct partset *set;
} part;

typedef struct member {
    char key[LEASE_OWNER_MAX + 8]; /* <engine id>.<per-process suffix> */
    int64_t seen_ns;               /* mono_ns() of its last heartbeat seen */
    int held;                      /* the partitions it said it held then */
} member;

struct partset {
    engine *en;
    int n;
    part *parts;
    lease_table *leases;
    jsCtx *ljs;
    kvStore *members;
    kvWatcher *watch;
    char self_key[LEASE_OWNER_MAX + 8];
    bool heartbeat_failing; /* logged once, and again when it works again */
    member mem[MEMBERS_MAX];
    int nmem;
    unsigned offset; /* where this engine starts looking: engines starting together contend less */
    pthread_t mgr;
    bool mgr_running;
    atomic_bool mgr_quit;
};

static int64_t round_ms(const partset *ps)
{
    int64_t r = ps->en->cfg.lease_ttl_ms / 3;
    return r < ROUND_MAX_MS ? r : ROUND_MAX_MS;
}

/* --- fetchers ------------------------------------------------------------------------------------------ */

static bool part_valid(part *pt)
{
    return mono_ns() < atomic_load(&pt->valid_ns);
}

static batch *take_free_batch(engine *en, part *pt)
{
    pthread_mutex_lock(&en->q_mu);
    while (!en->free_b && !atomic_load(&en->stopping) && !atomic_load(&pt->quit))
        cond_wait_ms(&en->q_cv, &en->q_mu, 100);
    batch *b = en->free_b;
    if (b && !atomic_load(&en->stopping) && !atomic_load(&pt->quit))
        en->free_b = b->next;
    else
        b = NULL;
    pthread_mutex_unlock(&en->q_mu);
    return b;
}

static void nak_all(batch *b, const char *why)
{
    int failed = 0;
    for (int i = 0; i < b->list.Count; i++)
        failed += natsMsg_Nak(b->list.Msgs[i], NULL) != NATS_OK;
    if (failed) /* not lost: the server redelivers them after AckWait */
        log_warn("some messages could not be handed back; they are redelivered after AckWait",
                 "\"why\":\"%s\",\"messages\":%d", why, failed);
}

static void *fetcher_main(void *arg)
{
    part *pt = arg;
    engine *en = pt->set->en;
    int errors = 0;
    while (!atomic_load(&pt->quit) && !atomic_load(&en->stopping)) {
        if (!part_valid(pt)) { /* fenced: the manager renews, or stops this thread */
            sleep_ms(20);
            continue;
        }
        batch *b = take_free_batch(en, pt);
        if (!b)
            continue;
        jsErrCode jerr = 0;
        natsStatus s = broker_fetch(pt->sub, &b->list, en->cfg.batch, 500, &jerr);
        if (s == NATS_TIMEOUT || (s == NATS_OK && b->list.Count == 0)) {
            batch_recycle(en, b);
            continue;
        }
        if (s != NATS_OK) {
            if (!atomic_load(&pt->quit) && !atomic_load(&en->stopping) && errors++ % 50 == 0)
                log_warn("fetch failed; retrying", "\"consumer\":\"%s\",\"error\":\"%s\",\"js_code\":%d",
                         pt->consumer, log_esc(natsStatus_GetText(s)), (int)jerr);
            batch_recycle(en, b);
            sleep_ms(200);
            continue;
        }
        errors = 0;
        if (!part_valid(pt) || atomic_load(&pt->quit)) {
            nak_all(b, "the partition's lease lapsed during the fetch");
            batch_recycle(en, b);
            continue;
        }
        b->recv_ns = mono_ns();
        b->recv_wall_us = now_us();
        batch_enqueue(en, &en->fetched_head, &en->fetched_tail, b);
    }
    return NULL;
}

/* Binds partition pt's durable and starts its fetcher; the lease is held. */
static bool part_start(partset *ps, part *pt)
{
    engine *en = ps->en;
    char filter[NAME_MAX_LEN + 16];
    partition_filter(&en->cfg, pt->p, filter, sizeof filter);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = en->cfg.txn_stream;
    so.Consumer = pt->consumer; /* bind: never create, so unsubscribing never deletes the durable */
    so.ManualAck = true;
    jsErrCode jerr = 0;
    natsStatus s = js_PullSubscribe(&pt->sub, en->js, filter, pt->consumer, NULL, &so, &jerr);
    if (s != NATS_OK) {
        verror e = {0};
        broker_err(&e, s, jerr, "cannot bind the partition's consumer");
        log_warn("partition not started; its lease is given back", "\"consumer\":\"%s\",\"error\":\"%s\"",
                 pt->consumer, log_esc(e.msg));
        pt->sub = NULL;
        return false;
    }
    atomic_store(&pt->quit, false);
    atomic_store(&pt->valid_ns, pt->lease.valid_until_ns);
    if (pthread_create(&pt->fetcher, NULL, fetcher_main, pt) != 0) {
        natsSubscription_Destroy(pt->sub);
        pt->sub = NULL;
        return false;
    }
    pt->running = true;
    atomic_fetch_add(&ps->en->stats.partitions_owned, 1);
    return true;
}

/* Fences pt at once and stops its fetcher; what it fetched and queued is decided and acked by the workers. */
static void part_stop(partset *ps, part *pt)
{
    atomic_store(&pt->valid_ns, 0);
    atomic_store(&pt->quit, true);
    if (pt->running) {
        pthread_join(pt->fetcher, NULL);
        pt->running = false;
        atomic_fetch_sub(&ps->en->stats.partitions_owned, 1);
    }
    if (pt->sub) {
        natsSubscription_Unsubscribe(pt->sub); /* bound: the durable stays */
        natsSubscription_Destroy(pt->sub);
        pt->sub = NULL;
    }
}

/* --- membership ---------------------------------------------------------------------------------------- */

/* The engine id part of a member key: its length (the key up to its last '.'). */
static size_t id_len(const char *key)
{
    const char *dot = strrchr(key, '.');
    return dot ? (size_t)(dot - key) : strlen(key);
}

static bool same_engine(const char *a, const char *b)
{
    size_t n = id_len(a);
    return n == id_len(b) && strncmp(a, b, n) == 0;
}

static void member_seen(partset *ps, const char *key, bool gone, int held)
{
    int i = 0;
    while (i < ps->nmem && strcmp(ps->mem[i].key, key) != 0)
        i++;
    if (gone) {
        if (i < ps->nmem)
            ps->mem[i] = ps->mem[--ps->nmem];
        return;
    }
    if (i == ps->nmem) {
        if (ps->nmem == MEMBERS_MAX)
            return;
        str_copy(ps->mem[i].key, sizeof ps->mem[i].key, key);
        ps->nmem++;
    }
    ps->mem[i].seen_ns = mono_ns();
    ps->mem[i].held = held;
}

/* Heartbeat (with the partitions held), then what the others said; returns the live engines, this one included.
 * Engines are counted by engine id: a restarted engine (same --engine-id, a new process) is one engine while its
 * previous incarnation's heartbeat is still young, so its return does not make the others give partitions away
 * for an engine that is not there. */
static bool member_live(const partset *ps, int i)
{
    return mono_ns() - ps->mem[i].seen_ns < ps->en->cfg.lease_ttl_ms * NS_PER_MS;
}

static int members_round(partset *ps, int held)
{
    char val[64];
    int n = snprintf(val, sizeof val, "{\"ttl_ms\":%lld,\"held\":%d}", (long long)ps->en->cfg.lease_ttl_ms, held);
    uint64_t rev = 0;
    natsStatus s = kvStore_Put(&rev, ps->members, ps->self_key, val, n);
    if (s != NATS_OK && !ps->heartbeat_failing)
        log_warn("membership heartbeat failed; retrying every round", "\"error\":\"%s\"",
                 log_esc(natsStatus_GetText(s)));
    else if (s == NATS_OK && ps->heartbeat_failing)
        log_info("membership heartbeat works again", NULL);
    ps->heartbeat_failing = s != NATS_OK;
    for (;;) {
        kvEntry *ke = NULL;
        if (kvWatcher_Next(&ke, ps->watch, 1) != NATS_OK)
            break;
        if (!ke)
            continue; /* the end of the initial values */
        const char *key = kvEntry_Key(ke);
        bool gone = kvEntry_Operation(ke) != kvOp_Put;
        int h = 0;
        const char *v = kvEntry_ValueString(ke), *hp = v ? strstr(v, "\"held\":") : NULL;
        if (hp)
            h = atoi(hp + 7);
        if (key && strcmp(key, ps->self_key) != 0)
            member_seen(ps, key, gone, h);
        kvEntry_Destroy(ke);
    }
    int live = 1;
    for (int i = 0; i < ps->nmem; i++) {
        if (!member_live(ps, i) || same_engine(ps->mem[i].key, ps->self_key))
            continue;
        bool counted = false; /* another incarnation of an engine already counted */
        for (int j = 0; j < i && !counted; j++)
            counted = member_live(ps, j) && same_engine(ps->mem[j].key, ps->mem[i].key);
        live += !counted;
    }
    return live;
}

/* --- the manager ---------------------------------------------------------------------------------------- */

static void manager_round(partset *ps)
{
    engine *en = ps->en;
    int held = 0;
    for (int i = 0; i < ps->n; i++)
        held += ps->parts[i].lease.held;
    int live = members_round(ps, held);
    int share = (ps->n + live - 1) / live;
    /* the held ones first: a slow bucket must not make a renewal wait behind the others' reads */
    for (int k = 0; k < 2 * ps->n && !atomic_load(&ps->mgr_quit); k++) { /* a stop need not wait for the round */
        part *pt = &ps->parts[(ps->offset + (unsigned)k) % (unsigned)ps->n];
        if ((k < ps->n) != pt->lease.held)
            continue;
        bool was = pt->lease.held;
        pt->lease.no_take = !was && held >= share;
        verror le = {0};
        vstatus rc = lease_step(ps->leases, &pt->lease, &le);
        if (was && !pt->lease.held) {
            part_stop(ps, pt);
            held--;
            atomic_fetch_add(&en->stats.lease_losses, 1);
            log_error("partition lost: another engine owns it now", "\"consumer\":\"%s\",\"owner\":\"%s\",\"epoch\":%llu",
                      pt->consumer, log_esc(pt->lease.owner), (unsigned long long)pt->lease.epoch);
        } else if (was) {
            if (rc != V_OK && !pt->renew_failing)
                log_warn("partition lease renewal failed; deciding it until the lease lapses",
                         "\"consumer\":\"%s\",\"error\":\"%s\"", pt->consumer, log_esc(le.msg));
            else if (rc == V_OK && pt->renew_failing)
                log_info("partition lease renewed again", "\"consumer\":\"%s\"", pt->consumer);
            pt->renew_failing = rc != V_OK;
            atomic_store(&pt->valid_ns, pt->lease.valid_until_ns);
        } else if (pt->lease.held) {
            if (part_start(ps, pt)) {
                held++;
                log_info("partition taken: this engine decides it",
                         "\"consumer\":\"%s\",\"epoch\":%llu,\"live_engines\":%d,\"share\":%d", pt->consumer,
                         (unsigned long long)pt->lease.epoch, live, share);
            } else {
                verror re = {0};
                lease_release(ps->leases, &pt->lease, &re);
            }
        }
    }
    /* above the share (an engine joined): the highest extras go back, fenced and drained first */
    for (int k = ps->n - 1; k >= 0 && held > share && !atomic_load(&ps->mgr_quit); k--) {
        part *pt = &ps->parts[(ps->offset + (unsigned)k) % (unsigned)ps->n];
        if (!pt->lease.held)
            continue;
        part_stop(ps, pt);
        natsConnection_FlushTimeout(en->nc, 1000); /* its last acks before the next owner pulls */
        verror re = {0};
        if (lease_release(ps->leases, &pt->lease, &re) == V_OK)
            log_info("partition released for another engine",
                     "\"consumer\":\"%s\",\"live_engines\":%d,\"share\":%d", pt->consumer, live, share);
        else
            log_warn("partition lease not released; it is taken when it lapses", "\"consumer\":\"%s\",\"error\":\"%s\"",
                     pt->consumer, log_esc(re.msg));
        held--;
    }
}

static void *manager_main(void *arg)
{
    partset *ps = arg;
    while (!atomic_load(&ps->mgr_quit)) {
        int64_t next = mono_ns() + round_ms(ps) * NS_PER_MS;
        manager_round(ps);
        while (!atomic_load(&ps->mgr_quit) && mono_ns() < next)
            sleep_ms(10);
    }
    return NULL;
}

vstatus partset_start(engine *en, verror *e)
{
    const config *c = &en->cfg;
    partset *ps = calloc(1, sizeof *ps);
    if (!ps)
        return verror_set(e, V_ENOMEM, "out of memory");
    ps->en = en;
    ps->n = c->partitions;
    ps->parts = calloc((size_t)ps->n, sizeof *ps->parts);
    en->parts = ps;
    if (!ps->parts)
        return verror_set(e, V_ENOMEM, "out of memory");
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = c->lease_ttl_ms / 4 < 2000 ? c->lease_ttl_ms / 4 : 2000; /* a round never outlasts its period */
    natsStatus s = natsConnection_JetStream(&ps->ljs, en->nc, &jo);
    if (s != NATS_OK)
        return broker_err(e, s, 0, "cannot get a JetStream context for the leases");
    char bucket[96];
    lease_bucket(c, bucket, sizeof bucket);
    vstatus rc = lease_open(&ps->leases, ps->ljs, bucket, c->engine_id, c->lease_ttl_ms, c->replicas, e);
    if (rc != V_OK)
        return rc;
    config_name(c, NAME_BUCKET, "verdict_members", bucket, sizeof bucket);
    s = js_KeyValue(&ps->members, ps->ljs, bucket);
    if (s == NATS_NOT_FOUND) {
        kvConfig kc;
        kvConfig_Init(&kc);
        kc.Bucket = bucket;
        kc.History = 1;
        kc.Replicas = c->replicas > 0 ? c->replicas : 1;
        kc.TTL = 10 * c->lease_ttl_ms * NS_PER_MS; /* a crashed engine's heartbeat is gone after ten TTLs */
        s = js_CreateKeyValue(&ps->members, ps->ljs, &kc);
        if (s != NATS_OK)
            s = js_KeyValue(&ps->members, ps->ljs, bucket); /* another engine created it meanwhile */
    }
    if (s != NATS_OK)
        return broker_err(e, s, 0, "cannot open the members bucket");
    /* the member key: <engine id>.<the instance's per-process suffix>, with what a KV key cannot hold (and '.')
     * in the id made '_', so that the incarnations of one engine id are known as one engine */
    const char *inst = lease_instance(ps->leases);
    const char *slash = strrchr(inst, '/');
    size_t k = 0;
    for (const char *q = inst; *q && k < sizeof ps->self_key - 1; q++)
        ps->self_key[k++] = q == slash ? '.'
                            : ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') ||
                               *q == '-' || *q == '_')
                                ? *q
                                : '_';
    ps->self_key[k] = 0;
    s = kvStore_WatchAll(&ps->watch, ps->members, NULL);
    if (s != NATS_OK)
        return broker_err(e, s, 0, "cannot watch the members bucket");
    ps->offset = partition_hash(inst, strlen(inst)) % (uint32_t)ps->n;
    for (int i = 0; i < ps->n; i++) {
        part *pt = &ps->parts[i];
        pt->p = (unsigned)i;
        pt->set = ps;
        partition_consumer(c, pt->p, pt->consumer, sizeof pt->consumer);
        if (!lease_init(&pt->lease, pt->consumer))
            return verror_set(e, V_EINVAL, "consumer name '%s' cannot name a lease", pt->consumer);
    }
    if (pthread_create(&ps->mgr, NULL, manager_main, ps) != 0)
        return verror_set(e, V_ENOMEM, "cannot start the partition manager");
    ps->mgr_running = true;
    log_info("partitioned: sharing partitions with the other engines",
             "\"partitions\":%d,\"instance\":\"%s\",\"lease_ttl_ms\":%lld", ps->n, log_esc(inst),
             (long long)c->lease_ttl_ms);
    return V_OK;
}

void partset_stop_fetching(engine *en)
{
    partset *ps = en->parts;
    if (!ps)
        return;
    if (ps->mgr_running) {
        atomic_store(&ps->mgr_quit, true);
        pthread_join(ps->mgr, NULL);
        ps->mgr_running = false;
    }
    for (int i = 0; ps->parts && i < ps->n; i++) {
        atomic_store(&ps->parts[i].valid_ns, 0);
        atomic_store(&ps->parts[i].quit, true);
    }
    for (int i = 0; ps->parts && i < ps->n; i++)
        if (ps->parts[i].running) {
            pthread_join(ps->parts[i].fetcher, NULL);
            ps->parts[i].running = false;
            atomic_fetch_sub(&ps->en->stats.partitions_owned, 1);
        }
}

void partset_give_up(engine *en)
{
    partset *ps = en->parts;
    if (!ps || !ps->leases)
        return;
    partset_stop_fetching(en);
    int released = 0;
    for (int i = 0; ps->parts && i < ps->n; i++) {
        verror e = {0};
        if (ps->parts[i].lease.held && lease_release(ps->leases, &ps->parts[i].lease, &e) == V_OK) {
            released++;
            log_info("partition released at the stop", "\"consumer\":\"%s\"", ps->parts[i].consumer);
        }
    }
    if (ps->members && kvStore_Delete(ps->members, ps->self_key) != NATS_OK)
        log_warn("membership not withdrawn; the others count this engine until its heartbeat lapses", NULL);
    log_info("partitions released: other engines take them at once", "\"released\":%d", released);
}

void partset_free(engine *en)
{
    partset *ps = en->parts;
    if (!ps)
        return;
    partset_stop_fetching(en);
    for (int i = 0; ps->parts && i < ps->n; i++)
        if (ps->parts[i].sub) {
            natsSubscription_Destroy(ps->parts[i].sub);
            ps->parts[i].sub = NULL;
        }
    kvWatcher_Destroy(ps->watch);
    kvStore_Destroy(ps->members);
    lease_close(ps->leases);
    jsCtx_Destroy(ps->ljs);
    free(ps->parts);
    free(ps);
    en->parts = NULL;
}

int partset_owned(const engine *en)
{
    return (int)atomic_load(&en->stats.partitions_owned);
}

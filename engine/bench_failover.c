/* bench_failover.c - `verdict bench failover`: how long deciding stops when the owner of the consumer dies or
 * stops, with a hot standby (--lease-ttl; docs/operations.md, "High availability").
 *
 * Two `verdict serve` processes (this binary) on a private nats-server, one owner and one standby, while a
 * publisher sends transactions at a steady rate. The owner (read from the lease entry) is killed with SIGKILL,
 * --kills times; each time the gap is the time from the kill to the first decision the other engine makes
 * after it (decided_at_ms of the decisions, read live from `decision.>`), and the killed engine is started
 * again to stand by. Then the same with SIGTERM (a graceful handover). At the end every published transaction
 * must have exactly one decision and none may be dead-lettered; the bench says so or fails. Method and
 * figures: docs/benchmarks.md, "Failover". */
#include "broker.h"
#include "codec.h"
#include "config.h"
#include "lease.h"
#include "localserver.h"
#include "log.h"
#include "simgen.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FO_MAX_KILLS 50

typedef struct fo_engine {
    pid_t pid;
    char id[32];
    char log[256];
} fo_engine;

static struct {
    config cfg;
    char ttl[32];
    int rate;
    fo_engine eng[2];
    natsConnection *nc;
    jsCtx *js;
    atomic_bool pub_stop;
    atomic_llong published;
    atomic_llong pub_errors;    /* refused by js_PublishAsync, or failed or timed out on its PubAck */
    atomic_int pub_first_error; /* natsStatus of the first failed PubAck (0 until one fails) */
    /* the decision watcher: the newest decided_at_ms per engine slot */
    pthread_mutex_t mu;
    int64_t after_ms;  /* look for the first decision after this wall time... */
    int want;          /* ...by this engine slot */
    int64_t first_ms;  /* found: its decided_at_ms (0 until then) */
    arena dec_arena;   /* the watcher's */
} fo;

static void fo_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int slot_of_id(const char *engine_id)
{
    for (int k = 0; k < 2; k++)
        if (strcmp(fo.eng[k].id, engine_id) == 0)
            return k;
    return -1;
}

static void on_decision(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc, (void)sub, (void)closure;
    arena *a = &fo.dec_arena; /* this callback runs on one nats.c thread at a time */
    arena_reset(a);
    Decision *d = decision_decode(a, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    if (d) {
        int k = slot_of_id(d->engine_id);
        pthread_mutex_lock(&fo.mu);
        if (k == fo.want && fo.first_ms == 0 && d->decided_at_ms > fo.after_ms)
            fo.first_ms = d->decided_at_ms;
        pthread_mutex_unlock(&fo.mu);
    }
    natsMsg_Destroy(m);
}

/* A PubAck that failed or did not come within MaxWait: that transaction may not be stored, so the exactly-once
 * check at the end would compare against a wrong count. Counted, never waited on (a nats.c callback). */
static void on_pub_error(jsCtx *js, jsPubAckErr *pae, void *closure)
{
    (void)js, (void)closure;
    atomic_fetch_add(&fo.pub_errors, 1);
    int none = 0;
    atomic_compare_exchange_strong(&fo.pub_first_error, &none, (int)pae->Err);
}

static void *publisher(void *arg)
{
    (void)arg;
    simgen_cfg gc = {.seed = 7, .start_ms = now_ms(), .cards = 2000};
    simgen_defaults(&gc);
    simgen *g = simgen_create(&gc);
    if (!g)
        return NULL;
    unsigned char buf[2048];
    int64_t t0 = mono_ns();
    for (long long i = 0; !atomic_load(&fo.pub_stop); i++) {
        int64_t due = t0 + i * 1000000000LL / fo.rate;
        while (mono_ns() < due)
            fo_sleep_ms(1);
        Transaction t;
        simgen_next(g, &t);
        size_t n = verdict__v1__transaction__pack(&t, buf);
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = t.txn_id;
        po.MaxWait = 5000; /* a PubAck that never comes is an error (on_pub_error), not a wait forever */
        if (js_PublishAsync(fo.js, "txn.failover", buf, (int)n, &po) != NATS_OK)
            atomic_fetch_add(&fo.pub_errors, 1);
        else
            atomic_fetch_add(&fo.published, 1);
    }
    simgen_destroy(g);
    return NULL;
}

static bool spawn_engine(int k)
{
    fo_engine *en = &fo.eng[k];
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        FILE *f = freopen(en->log, "a", stderr);
        (void)f;
        execl("/proc/self/exe", "verdict", "serve", "--nats-url", fo.cfg.nats_url, "--lease-ttl", fo.ttl,
              "--engine-id", en->id, "--workers", "1", "--rules", VERDICT_SOURCE_DIR "/rules/default.rules",
              "--model", VERDICT_SOURCE_DIR "/models/verdict-gbdt.json", "--max-keys", "100000",
              "--snapshot-interval", "10s", (char *)NULL);
        _exit(127);
    }
    en->pid = pid;
    return true;
}

static bool wait_lines(int k, const char *needle, int before, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 20) {
        if (file_count_lines(fo.eng[k].log, needle) > before)
            return true;
        if (waitpid(fo.eng[k].pid, NULL, WNOHANG) != 0)
            return false;
        fo_sleep_ms(20);
    }
    return false;
}

/* The engine slot holding the lease, from the lease entry; -1 if none. */
static int owner_slot(void)
{
    char bucket[96];
    lease_bucket(&fo.cfg, bucket, sizeof bucket);
    kvStore *kv = NULL;
    if (js_KeyValue(&kv, fo.js, bucket) != NATS_OK)
        return -1;
    kvEntry *e = NULL;
    int k = -1;
    if (kvStore_Get(&e, kv, fo.cfg.consumer) == NATS_OK) { /* the lease is named after the consumer (lease.h) */
        const char *v = kvEntry_ValueString(e);
        for (int i = 0; v && i < 2; i++) {
            char needle[48];
            snprintf(needle, sizeof needle, "\"owner\":\"%s/", fo.eng[i].id);
            if (strstr(v, needle))
                k = i;
        }
        kvEntry_Destroy(e);
    }
    kvStore_Destroy(kv);
    return k;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* One round: signal the owner, time the other's first decision after it, restart the victim as standby. */
static bool round_once(int sig, int64_t *gap_ms)
{
    int owner = -1;
    for (int waited = 0; waited < 10000 && (owner = owner_slot()) < 0; waited += 50)
        fo_sleep_ms(50);
    if (owner < 0) {
        fprintf(stderr, "verdict bench failover: no engine holds the lease\n");
        return false;
    }
    int other = 1 - owner;
    int standing = file_count_lines(fo.eng[owner].log, "standing by: another engine owns the consumer");
    pthread_mutex_lock(&fo.mu);
    fo.want = other;
    fo.first_ms = 0;
    fo.after_ms = now_ms();
    pthread_mutex_unlock(&fo.mu);
    kill(fo.eng[owner].pid, sig);
    int st = 0;
    for (int waited = 0; waitpid(fo.eng[owner].pid, &st, WNOHANG) == 0; waited += 10) {
        if (waited > 15000) {
            fprintf(stderr, "verdict bench failover: the owner did not exit\n");
            return false;
        }
        fo_sleep_ms(10);
    }
    int64_t first = 0;
    for (int waited = 0; waited < 30000 && first == 0; waited += 10) {
        pthread_mutex_lock(&fo.mu);
        first = fo.first_ms;
        pthread_mutex_unlock(&fo.mu);
        if (!first)
            fo_sleep_ms(10);
    }
    if (!first) {
        fprintf(stderr, "verdict bench failover: the standby made no decision within 30 s (see %s)\n",
                fo.eng[other].log);
        return false;
    }
    *gap_ms = first - fo.after_ms;
    if (!spawn_engine(owner) || !wait_lines(owner, "standing by: another engine owns the consumer", standing, 30000)) {
        fprintf(stderr, "verdict bench failover: the restarted engine did not stand by (see %s)\n",
                fo.eng[owner].log);
        return false;
    }
    return true;
}

static void fo_help(void)
{
    printf("usage: verdict bench failover [--kills N] [--rate PER_S] [--lease-ttl DURATION] [--json]\n\n"
           "Runs two engines (an owner and a hot standby) on a private nats-server while transactions arrive at\n"
           "--rate (default 1000/s), kills the owner --kills times (default 10) with SIGKILL and then as often with\n"
           "SIGTERM, and reports the time from each signal to the standby's first decision (p50 and max). Checks\n"
           "at the end that every transaction has exactly one decision and none is dead-lettered.\n"
           "--lease-ttl is the engines' lease TTL (default 3s).\n");
}

int bench_failover(int argc, char **argv)
{
    int kills = 10;
    bool json = false;
    fo.rate = 1000;
    str_copy(fo.ttl, sizeof fo.ttl, "3s");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "failover") || !strcmp(a, "bench"))
            continue;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fo_help();
            return 0;
        }
        if (!strcmp(a, "--json"))
            json = true;
        else if (!strcmp(a, "--kills") && v && atoi(v) > 0 && atoi(v) <= FO_MAX_KILLS)
            kills = atoi(v), i++;
        else if (!strcmp(a, "--rate") && v && atoi(v) > 0 && atoi(v) <= 20000)
            fo.rate = atoi(v), i++;
        else if (!strcmp(a, "--lease-ttl") && v && str_copy(fo.ttl, sizeof fo.ttl, v))
            i++;
        else {
            fprintf(stderr, "verdict bench failover: bad option '%s' (see --help)\n", a);
            return 2;
        }
    }
    log_set_quiet(1);
    config_defaults(&fo.cfg);
    verror e = {0};
    localserver ls = {0};
    if (localserver_start(&ls, &e) != V_OK) {
        fprintf(stderr, "verdict bench failover: %s\n", e.msg);
        return 1;
    }
    str_copy(fo.cfg.nats_url, sizeof fo.cfg.nats_url, ls.url);
    fprintf(stderr, "[bench] private nats-server on %s; two engines, lease TTL %s, %d transactions/s\n", ls.url,
            fo.ttl, fo.rate);
    int rc = 1;
    pthread_t pub;
    bool pub_started = false;
    natsSubscription *sub = NULL;
    pthread_mutex_init(&fo.mu, NULL);
    if (arena_init(&fo.dec_arena, 64 * 1024) != V_OK || broker_connect_simple(&fo.cfg, &fo.nc, &e) != V_OK) {
        fprintf(stderr, "verdict bench failover: %s\n", e.msg[0] ? e.msg : "out of memory");
        goto out;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = 4096;
    jo.PublishAsync.ErrHandler = on_pub_error;
    if (!fo.nc || natsConnection_JetStream(&fo.js, fo.nc, &jo) != NATS_OK ||
        broker_setup(&fo.cfg, fo.js, &e) != V_OK) {
        fprintf(stderr, "verdict bench failover: %s\n", e.msg[0] ? e.msg : "cannot connect");
        goto out;
    }
    if (natsConnection_Subscribe(&sub, fo.nc, "decision.>", on_decision, NULL) != NATS_OK)
        goto out;
    for (int k = 0; k < 2; k++) {
        snprintf(fo.eng[k].id, sizeof fo.eng[k].id, "fo-%c", 'a' + k);
        snprintf(fo.eng[k].log, sizeof fo.eng[k].log, "/tmp/verdict-failover-%d-%c.log", (int)getpid(), 'a' + k);
        unlink(fo.eng[k].log);
    }
    if (!spawn_engine(0) || !wait_lines(0, "\"engine started\"", 0, 30000) || !spawn_engine(1) ||
        !wait_lines(1, "standing by: another engine owns the consumer", 0, 30000)) {
        fprintf(stderr, "verdict bench failover: the engines did not start (see %s, %s)\n", fo.eng[0].log,
                fo.eng[1].log);
        goto out;
    }
    if (pthread_create(&pub, NULL, publisher, NULL) != 0)
        goto out;
    pub_started = true;
    fo_sleep_ms(2000); /* traffic flowing, the standby current */
    int64_t gaps[2][FO_MAX_KILLS];
    const int sigs[2] = {SIGKILL, SIGTERM};
    for (int m = 0; m < 2; m++)
        for (int i = 0; i < kills; i++) {
            if (!round_once(sigs[m], &gaps[m][i]))
                goto out;
            fprintf(stderr, "[bench] %s %d/%d: deciding again after %lld ms\n", m ? "SIGTERM" : "kill -9", i + 1,
                    kills, (long long)gaps[m][i]);
            fo_sleep_ms(1000);
        }
    atomic_store(&fo.pub_stop, true);
    pthread_join(pub, NULL);
    pub_started = false;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 30000;
    natsStatus cs = js_PublishAsyncComplete(fo.js, &po);
    if (cs != NATS_OK) {
        /* unconfirmed publishes: how many transactions exist is unknown, so exactly-once cannot be checked */
        natsMsgList unconfirmed = {0};
        int n = js_PublishAsyncGetPendingList(&unconfirmed, fo.js) == NATS_OK ? unconfirmed.Count : -1;
        natsMsgList_Destroy(&unconfirmed);
        fprintf(stderr,
                "verdict bench failover: %d published transactions still unconfirmed 30 s after the last (%s); "
                "cannot check exactly one decision each\n",
                n, natsStatus_GetText(cs));
        goto out;
    }
    long long published = atomic_load(&fo.published);
    if (atomic_load(&fo.pub_errors))
        fprintf(stderr, "verdict bench failover: %lld publishes failed (first: %s); see the engines' logs\n",
                (long long)atomic_load(&fo.pub_errors),
                natsStatus_GetText((natsStatus)atomic_load(&fo.pub_first_error)));
    uint64_t decided = 0, dead = 0;
    for (int waited = 0; waited < 60000; waited += 200) {
        jsStreamInfo *si = NULL;
        if (js_GetStreamInfo(&si, fo.js, fo.cfg.decisions_stream, NULL, NULL) == NATS_OK) {
            decided = si->State.Msgs;
            jsStreamInfo_Destroy(si);
        }
        if ((long long)decided >= published)
            break;
        fo_sleep_ms(200);
    }
    jsStreamInfo *di = NULL;
    if (js_GetStreamInfo(&di, fo.js, fo.cfg.dlq_stream, NULL, NULL) == NATS_OK) {
        dead = di->State.Msgs;
        jsStreamInfo_Destroy(di);
    }
    for (int m = 0; m < 2; m++)
        qsort(gaps[m], (size_t)kills, sizeof gaps[m][0], cmp_i64);
    bool ok = (long long)decided == published && dead == 0 && atomic_load(&fo.pub_errors) == 0;
    if (json) {
        printf("{\"bench\":\"failover\",\"lease_ttl\":\"%s\",\"rate\":%d,\"kills\":%d,"
               "\"kill9_p50_ms\":%lld,\"kill9_max_ms\":%lld,\"sigterm_p50_ms\":%lld,\"sigterm_max_ms\":%lld,"
               "\"published\":%lld,\"publish_errors\":%lld,\"decisions\":%llu,\"dead_letters\":%llu,"
               "\"exactly_once\":%s}\n",
               fo.ttl, fo.rate, kills, (long long)gaps[0][kills / 2], (long long)gaps[0][kills - 1],
               (long long)gaps[1][kills / 2], (long long)gaps[1][kills - 1], published,
               (long long)atomic_load(&fo.pub_errors), (unsigned long long)decided, (unsigned long long)dead,
               ok ? "true" : "false");
    } else {
        printf("failover with a hot standby (lease TTL %s, %d transactions/s, %d rounds each)\n", fo.ttl, fo.rate,
               kills);
        printf("  %-9s  p50 %6lld ms   max %6lld ms   (signal to the standby's first decision)\n", "kill -9",
               (long long)gaps[0][kills / 2], (long long)gaps[0][kills - 1]);
        printf("  %-9s  p50 %6lld ms   max %6lld ms\n", "SIGTERM", (long long)gaps[1][kills / 2],
               (long long)gaps[1][kills - 1]);
        printf("  published %lld (%lld failed), decisions %llu, dead letters %llu: %s\n", published,
               (long long)atomic_load(&fo.pub_errors), (unsigned long long)decided, (unsigned long long)dead,
               ok ? "exactly one decision each" : "NOT exactly one decision each");
    }
    rc = ok ? 0 : 1;
    if (ok)
        for (int k = 0; k < 2; k++)
            unlink(fo.eng[k].log);
out:
    atomic_store(&fo.pub_stop, true);
    if (pub_started)
        pthread_join(pub, NULL);
    for (int k = 0; k < 2; k++)
        if (fo.eng[k].pid > 0) {
            kill(fo.eng[k].pid, SIGTERM);
            waitpid(fo.eng[k].pid, NULL, 0);
        }
    natsSubscription_Destroy(sub);
    jsCtx_Destroy(fo.js);
    natsConnection_Destroy(fo.nc);
    localserver_stop(&ls);
    pthread_mutex_destroy(&fo.mu);
    arena_free(&fo.dec_arena);
    if (rc != 0)
        fprintf(stderr, "verdict bench failover: engine logs kept: %s %s\n", fo.eng[0].log, fo.eng[1].log);
    return rc;
}

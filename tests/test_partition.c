/* test_partition.c - network partitions of a three-node cluster under load lose nothing and stall no longer than
 * the fault.
 *
 * Three nats-server nodes, each in its own network namespace, joined by veth pairs to a bridge (tests/support/
 * netns.h); the engine in a fourth namespace, this test's clients in a fifth. `verdict serve --replicas 3`
 * creates R3 streams; publisher threads, as payment services, send a few hundred transactions/s with
 * Nats-Msg-Id and retry each until the cluster confirms it. Under that load three nodes are black-holed in
 * turn, CUT_MS each, then healed: a follower (of TXN and of the consumer, carrying fewest engine connections),
 * the TXN stream's leader, and the node the engine is connected to, right after a burst of BURST transactions
 * so that the engine is writing decisions at full speed into a small TCP send queue when its node goes silent
 * (issue 21's freeze). Then:
 *  - every confirmed transaction has exactly one decision or one dead letter, never both, never two;
 *  - the engine noticed the cut of its node within 8 s (its "disconnected" log line; with nats.c's blocking
 *    writes and 5 s pings it took 12 s, or never while a write was stuck), it is alive, its /readyz answered
 *    every poll and says ready after the last heal (how often it said 503 is printed);
 *  - the longest stall (work pending and no decision stored) is printed, per phase, and must be shorter than
 *    the fault itself.
 * The server binary comes from VERDICT_NATS_SERVER (default: nats-server on PATH; harness_nats_server), to run
 * the same test against several versions. Needs root for the namespaces; skips, saying why, only when it is not root.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "broker.h"
#include "client.h"
#include "harness.h"
#include "netns.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NODES 3
#define ENGINE_HOST 3
#define CLIENT_HOST 4
#define CUT_MS 20000
#define AFTER_HEAL_MS 10000
#define PUBLISHERS 4
#define SOURCES (PUBLISHERS + 1) /* transaction ids pt-<source>-<n>: the publishers, then the burst */
#define BURST 6000               /* a backlog the engine is working through when its node is cut */
#define PUB_PERIOD_MS 13         /* per publisher: 4 x ~75/s, about 300 transactions/s */
#define MAX_PER_PUB 40000
#define METRICS_PORT 9090

static netns_lab lab;
static natsConnection *nc; /* the test's own connection (client namespace, every node's URL) */
static jsCtx *js;
static pid_t server_pid[NODES];
static pid_t engine_pid;
static char store[NODES][64];
static char urls[256];
static char engine_log[256];
static bool passed;
static const char *server_bin = "nats-server";

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- cluster in namespaces ------------------------------------------------------------------------------ */

static bool start_node(int i)
{
    char conf[256], log[256];
    snprintf(conf, sizeof conf, "%s.conf", store[i]);
    snprintf(log, sizeof log, "%s.log", store[i]);
    FILE *f = fopen(conf, "w");
    if (!f)
        return false;
    fprintf(f, "server_name: n%d\nlisten: \"%s:4222\"\nhttp: \"%s:8222\"\n", i, lab.addr[i], lab.addr[i]);
    /* as compose/nats-cluster.conf ships it (docs/operations.md, "Cluster faults"): a silent peer is dropped in
     * 4-6 s instead of when its route's write deadline fills, ~17 s into a cut */
    fprintf(f, "ping_interval: \"2s\"\n");
    fprintf(f, "jetstream { store_dir: \"%s\" }\n", store[i]);
    fprintf(f, "cluster {\n  name: verdict-partition\n  listen: \"%s:6222\"\n  routes: [\n", lab.addr[i]);
    for (int j = 0; j < NODES; j++)
        if (j != i)
            fprintf(f, "    \"nats-route://%s:6222\"\n", lab.addr[j]);
    fprintf(f, "  ]\n}\n");
    const char *extra = getenv("VERDICT_PARTITION_SERVER_CONF"); /* experiments: more server settings */
    if (extra && extra[0])
        fprintf(f, "%s\n", extra);
    if (fclose(f) != 0)
        return false;
    const char *argv[] = {server_bin, "-c", conf, NULL};
    server_pid[i] = netns_spawn(&lab, i, argv, log);
    return server_pid[i] > 0;
}

/* Starts the three nodes on new stores and waits until they place an R3 stream. nats-server 2.10.27 sometimes
 * forms its JetStream meta group of two nodes only, the third routed to both but outside the group, and stays
 * so (6 of 124 starts here on 2026-12-01, 45 s at the longest watched; 0 of 25 with 2.15.1): no R3 stream can be
 * placed ("no suitable peers for placement"). Such a start is thrown away, its logs kept, and the cluster started
 * again, at most attempts times, as the harness's cluster_start and test_compose do. */
static bool start_cluster(int attempts)
{
    for (int attempt = 1; attempt <= attempts; attempt++) {
        bool started = true;
        for (int i = 0; i < NODES && started; i++) {
            snprintf(store[i], sizeof store[i], "/tmp/verdict-pt-XXXXXX"); /* mkdtemp replaces the Xs */
            started = mkdtemp(store[i]) != NULL && start_node(i);
        }
        if (started && netns_js_ready(urls, NODES, 20000, "test_partition"))
            return true;
        netns_print_meta_group(&lab, NODES, "test_partition");
        fprintf(stderr, "test_partition: cluster start %d of %d failed; its logs stay in %s.log ...\n", attempt,
                attempts, store[0]);
        netns_servers_remove(server_pid, store, NODES, true, "test_partition");
        memset(store, 0, sizeof store);
    }
    return false;
}

/* --- load, observation ---------------------------------------------------------------------------------- */

static atomic_bool stop_pub, stop_obs;
static atomic_int confirmed_total, given_up_total;
static atomic_uint_fast64_t stored_max;               /* most DECISIONS + DLQ messages any node reported */
static unsigned char confirmed[SOURCES][MAX_PER_PUB]; /* 1 stored, 2 answered Duplicate */
static uint64_t pub_seq[SOURCES][MAX_PER_PUB];        /* TXN sequence the PubAck named */
static int published[SOURCES];

static void txn_id(char *out, size_t cap, int p, int k) { snprintf(out, cap, "pt-%d-%d", p, k); }

static void *publisher(void *arg)
{
    int p = (int)(intptr_t)arg;
    char who[48];
    snprintf(who, sizeof who, "test_partition: publisher %d", p);
    natsConnection *c = NULL;
    jsCtx *j = NULL;
    if (!tc_thread_js(urls, who, &c, &j))
        return NULL;
    int64_t next = mono_ms();
    for (int k = 0; k < MAX_PER_PUB && !atomic_load(&stop_pub); k++) {
        char id[32];
        txn_id(id, sizeof id, p, k);
        Transaction t;
        tc_txn(&t, id, k % 25 == 0 ? 1500000 : k % 10 == 0 ? 300000 : 1000 + k);
        unsigned char buf[2048];
        int n = tc_pack(&t, buf);
        char subj[64]; /* one subject per transaction, so a lost one can be looked up in TXN */
        snprintf(subj, sizeof subj, "txn.partition.%d.%d", p, k);
        published[p] = k + 1;
        /* a payment service retries until the cluster confirms; it gives up only after a minute */
        bool dup = false;
        uint64_t seq = 0;
        bool ok = tc_publish_until_confirmed(j, subj, buf, n, id, 60000, &dup, &seq);
        if (ok) {
            pub_seq[p][k] = seq;
            confirmed[p][k] = dup ? 2 : 1;
            atomic_fetch_add(&confirmed_total, 1);
        } else {
            atomic_fetch_add(&given_up_total, 1);
        }
        next += PUB_PERIOD_MS;
        int64_t now = mono_ms();
        if (next > now)
            tc_sleep_ms((int)(next - now));
        else
            next = now; /* no catch-up burst after a stall: the rate stays a few hundred a second */
    }
    jsCtx_Destroy(j);
    natsConnection_Destroy(c);
    return NULL;
}

/* Core publishes (Nats-Msg-Id set, no PubAck awaited) of BURST transactions: a backlog that the engine is busy
 * deciding, so writing decisions at full speed, when its node is cut right after. This is what filled the send
 * queue in issue 21. They are confirmed after the last heal by confirm_burst. */
static void burst_publish(void)
{
    for (int k = 0; k < BURST; k++) {
        char id[32], subj[64];
        txn_id(id, sizeof id, PUBLISHERS, k);
        snprintf(subj, sizeof subj, "txn.partition.%d.%d", PUBLISHERS, k);
        Transaction t;
        tc_txn(&t, id, 1000 + k);
        unsigned char buf[2048];
        int n = tc_pack(&t, buf);
        natsMsg *m = NULL;
        cr_assert_eq(natsMsg_Create(&m, subj, NULL, (const char *)buf, n), NATS_OK);
        cr_assert_eq(natsMsgHeader_Set(m, "Nats-Msg-Id", id), NATS_OK);
        cr_assert_eq(natsConnection_PublishMsg(nc, m), NATS_OK);
        natsMsg_Destroy(m);
    }
    published[PUBLISHERS] = BURST;
    cr_assert_eq(natsConnection_FlushTimeout(nc, 10000), NATS_OK);
}

/* The burst again, each confirmed (stored now, or answered Duplicate when the first publish was stored), as a
 * payment service whose first attempt got no answer retries. */
static void confirm_burst(void)
{
    for (int k = 0; k < BURST; k++) {
        char id[32], subj[64];
        txn_id(id, sizeof id, PUBLISHERS, k);
        snprintf(subj, sizeof subj, "txn.partition.%d.%d", PUBLISHERS, k);
        Transaction t;
        tc_txn(&t, id, 1000 + k);
        unsigned char buf[2048];
        int n = tc_pack(&t, buf);
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = id;
        po.MaxWait = 2000;
        int64_t give_up = mono_ms() + 30000;
        natsStatus s = NATS_ERR;
        while (s != NATS_OK && mono_ms() < give_up) {
            jsPubAck *pa = NULL;
            s = js_Publish(&pa, js, subj, buf, n, &po, NULL);
            if (s == NATS_OK) {
                confirmed[PUBLISHERS][k] = pa->Duplicate ? 2 : 1;
                pub_seq[PUBLISHERS][k] = pa->Sequence;
                atomic_fetch_add(&confirmed_total, 1);
            } else {
                tc_sleep_ms(100);
            }
            jsPubAck_Destroy(pa);
        }
        cr_assert_eq(s, NATS_OK, "burst transaction %s not confirmed within 30 s", id);
    }
}

static uint64_t msgs_of(jsCtx *j, const char *stream, bool *ok)
{
    jsStreamInfo *si = NULL;
    uint64_t n = 0;
    if (js_GetStreamInfo(&si, j, stream, NULL, NULL) == NATS_OK) {
        n = si->State.Msgs;
        jsStreamInfo_Destroy(si);
    } else {
        *ok = false;
    }
    return n;
}

/* One per node, connected to that node only: what is stored, as whichever node can answer sees it. A monitor
 * on a single connection would stall with its own node when that node is cut. */
static void *store_monitor(void *arg)
{
    int i = (int)(intptr_t)arg;
    config cc;
    config_defaults(&cc);
    snprintf(cc.nats_url, sizeof cc.nats_url, "nats://%s:4222", lab.addr[i]);
    natsConnection *c = NULL;
    verror e = {0};
    if (broker_connect_simple(&cc, &c, &e) != V_OK)
        return NULL;
    jsCtx *j = NULL;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 500;
    if (natsConnection_JetStream(&j, c, &jo) != NATS_OK) {
        natsConnection_Destroy(c);
        return NULL;
    }
    while (!atomic_load(&stop_obs)) {
        bool ok = true;
        uint64_t n = msgs_of(j, "DECISIONS", &ok) + msgs_of(j, "DLQ", &ok);
        uint64_t cur = atomic_load(&stored_max);
        while (ok && n > cur && !atomic_compare_exchange_weak(&stored_max, &cur, n))
            ;
        tc_sleep_ms(100);
    }
    jsCtx_Destroy(j);
    natsConnection_Destroy(c);
    return NULL;
}

#define PHASES 7
static const char *phase_name[PHASES] = {"load",          "follower cut",    "follower healed",   "leader cut",
                                         "leader healed", "engine node cut", "engine node healed"};
static atomic_int phase;
static int64_t phase_stall[PHASES];    /* longest stall seen in each phase, ms (sampler thread only until joined) */
static int64_t phase_stall_at[PHASES]; /* when it began, ms since the load started */
static int64_t t_start;
static int64_t longest_stall;
static int readyz_503[PHASES], readyz_200[PHASES], readyz_noanswer;
static int64_t readyz_slowest_ms;

/* Every 100 ms: is work pending (confirmed > stored), and how long since the stored count last grew. Also asks
 * the engine's /readyz each time: a process frozen on a nats.c lock would not answer. */
static void *sampler(void *arg)
{
    (void)arg;
    uint64_t last_stored = 0;
    int64_t stall_from = mono_ms();
    while (!atomic_load(&stop_obs)) {
        int64_t now = mono_ms();
        uint64_t st = atomic_load(&stored_max);
        uint64_t conf = (uint64_t)atomic_load(&confirmed_total);
        int ph = atomic_load(&phase);
        if (st > last_stored || conf <= st) {
            last_stored = st > last_stored ? st : last_stored;
            stall_from = now;
        } else {
            int64_t stall = now - stall_from;
            if (stall > phase_stall[ph]) {
                phase_stall[ph] = stall;
                phase_stall_at[ph] = stall_from - t_start;
            }
            if (stall > longest_stall)
                longest_stall = stall;
        }
        int64_t t0 = mono_ms();
        int code = netns_http_get(lab.addr[ENGINE_HOST], METRICS_PORT, "/readyz", 3000, NULL, 0);
        int64_t took = mono_ms() - t0;
        if (took > readyz_slowest_ms)
            readyz_slowest_ms = took;
        if (code == 200)
            readyz_200[ph]++;
        else if (code == 503)
            readyz_503[ph]++;
        else
            readyz_noanswer++;
        tc_sleep_ms(100);
    }
    return NULL;
}

/* --- who leads what -------------------------------------------------------------------------------------- */

static int node_of(const char *server_name)
{
    if (!server_name || server_name[0] != 'n')
        return -1;
    int i = atoi(server_name + 1);
    return i >= 0 && i < NODES ? i : -1;
}

static int stream_leader(const char *stream)
{
    jsStreamInfo *si = NULL;
    int i = -1;
    if (js_GetStreamInfo(&si, js, stream, NULL, NULL) == NATS_OK) {
        i = si->Cluster ? node_of(si->Cluster->Leader) : -1;
        jsStreamInfo_Destroy(si);
    }
    return i;
}

static int consumer_leader(void)
{
    jsConsumerInfo *ci = NULL;
    int i = -1;
    if (js_GetConsumerInfo(&ci, js, "TXN", "verdict", NULL, NULL) == NATS_OK) {
        i = ci->Cluster ? node_of(ci->Cluster->Leader) : -1;
        jsConsumerInfo_Destroy(ci);
    }
    return i;
}

/* The engine's connections on node i, from the node's /connz. */
static int engine_conns_on(int i)
{
    static char body[1 << 18];
    if (netns_http_get(lab.addr[i], 8222, "/connz", 3000, body, sizeof body) != 200)
        return 0;
    int n = 0;
    for (const char *p = body; (p = strstr(p, "\"name\": \"verdict-pt-engine")) != NULL; p++)
        n++;
    return n;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The time (ms since the epoch) of the engine's first log line containing needle at or after since, or -1. The
 * engine logs "ts":"YYYY-MM-DDTHH:MM:SS.mmmZ". */
static int64_t engine_log_first(const char *needle, int64_t since)
{
    FILE *f = fopen(engine_log, "r");
    if (!f)
        return -1;
    char line[4096];
    int64_t found = -1;
    while (found < 0 && fgets(line, sizeof line, f)) {
        const char *ts = strstr(line, "\"ts\":\"");
        struct tm tm;
        memset(&tm, 0, sizeof tm);
        int ms = 0;
        if (!strstr(line, needle) || !ts ||
            sscanf(ts + 6, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                   &tm.tm_sec, &ms) != 7)
            continue;
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        int64_t t = (int64_t)timegm(&tm) * 1000 + ms;
        if (t >= since)
            found = t;
    }
    fclose(f);
    return found;
}

/* Adds every message of stream (subjects filter) to seen, by txn id: decisions by Nats-Msg-Id (a derived
 * "<id>:restored" counts for <id>), dead letters by the transaction they carry (*dlq counts them). Through an
 * ordered consumer; the first attempts may fail while the cluster settles after the last heal, so it tries a
 * few times, each time from the start. */
static bool read_back(const char *stream, const char *filter, unsigned char seen[SOURCES][MAX_PER_PUB], int *dlq)
{
    static unsigned char got_ids[SOURCES][MAX_PER_PUB];
    bool is_dlq = strcmp(stream, "DLQ") == 0;
    for (int attempt = 0; attempt < 5; attempt++) {
        if (attempt)
            tc_sleep_ms(2000);
        jsStreamInfo *si = NULL;
        natsStatus s = js_GetStreamInfo(&si, js, stream, NULL, NULL);
        if (s != NATS_OK) {
            fprintf(stderr, "test_partition: stream info %s: %s\n", stream, natsStatus_GetText(s));
            continue;
        }
        uint64_t total = si->State.Msgs;
        jsStreamInfo_Destroy(si);
        if (total == 0)
            return true;
        natsSubscription *sub = NULL;
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = 5000;
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = stream;
        so.Ordered = true;
        jsErrCode jerr = 0;
        s = js_SubscribeSync(&sub, js, filter, &jo, &so, &jerr);
        if (s != NATS_OK) {
            fprintf(stderr, "test_partition: reading %s: %s (%d: %s)\n", stream, natsStatus_GetText(s), (int)jerr,
                    nats_GetLastError(NULL));
            continue;
        }
        memset(got_ids, 0, sizeof got_ids);
        int letters = 0;
        uint64_t got = 0;
        for (; got < total; got++) {
            natsMsg *m = NULL;
            s = natsSubscription_NextMsg(&m, sub, 10000);
            if (s != NATS_OK)
                break;
            int p = -1, idx = -1;
            if (!is_dlq) {
                const char *id = NULL;
                cr_assert_eq(natsMsgHeader_Get(m, "Nats-Msg-Id", &id), NATS_OK);
                cr_assert(sscanf(id, "pt-%d-%d", &p, &idx) == 2, "unknown decision %s", id);
                if (strchr(id, ':'))
                    fprintf(stderr, "test_partition: decision stored under a derived id: %s\n", id);
            } else {
                Transaction *t = verdict__v1__transaction__unpack(NULL, (size_t)natsMsg_GetDataLength(m),
                                                                  (const uint8_t *)natsMsg_GetData(m));
                cr_assert_not_null(t, "a dead letter that is not a transaction");
                cr_assert(sscanf(t->txn_id, "pt-%d-%d", &p, &idx) == 2, "unknown dead letter %s", t->txn_id);
                verdict__v1__transaction__free_unpacked(t, NULL);
                letters++;
            }
            cr_assert(p >= 0 && p < SOURCES && idx >= 0 && idx < MAX_PER_PUB);
            if (got_ids[p][idx] < 255)
                got_ids[p][idx]++;
            natsMsg_Destroy(m);
        }
        natsSubscription_Destroy(sub);
        if (got < total) {
            fprintf(stderr, "test_partition: reading %s: %s after %llu of %llu\n", stream, natsStatus_GetText(s),
                    (unsigned long long)got, (unsigned long long)total);
            continue;
        }
        for (int p = 0; p < SOURCES; p++)
            for (int k = 0; k < MAX_PER_PUB; k++)
                seen[p][k] = (unsigned char)(seen[p][k] + got_ids[p][k]);
        *dlq += letters;
        return true;
    }
    return false;
}

static bool engine_alive(void)
{
    int st;
    return engine_pid > 0 && waitpid(engine_pid, &st, WNOHANG) == 0;
}

/* --- suite ----------------------------------------------------------------------------------------------- */

static void teardown(void)
{
    atomic_store(&stop_pub, true);
    atomic_store(&stop_obs, true);
    if (engine_pid > 0) {
        kill(engine_pid, SIGKILL);
        child_wait(engine_pid, 5000);
        engine_pid = 0;
    }
    jsCtx_Destroy(js);
    js = NULL;
    natsConnection_Destroy(nc);
    nc = NULL;
    /* nats.c frees a destroyed connection once its own threads have let go of it; a connection that went
     * through cuts may still be held when the process exits, and LeakSanitizer reports it (CI, make asan: a
     * store monitor's connection, 36 KB). Wait for the release, in a passed run only: then every thread of the
     * test has been joined, as nats_CloseAndWait requires. */
    if (passed && nats_CloseAndWait(5000) != NATS_OK)
        fprintf(stderr, "test_partition: nats.c did not release its objects within 5 s\n");
    if (getenv("VERDICT_PARTITION_KEEP_LOGS"))
        passed = false; /* keep the logs of a passing run too, to study it */
    netns_servers_remove(server_pid, store, NODES, !passed, "test_partition");
    netns_lab_destroy(&lab);
    if (engine_log[0] && passed)
        unlink(engine_log);
    else if (engine_log[0])
        fprintf(stderr, "test_partition: engine log kept: %s; server logs: %s.log ...\n", engine_log, store[0]);
}

/* Criterion does not run .fini when .init fails: clean up (namespaces, servers, stores) before failing. */
#define SETUP_REQUIRE(cond, ...)                                                                                       \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            teardown();                                                                                                \
            cr_assert_fail(__VA_ARGS__);                                                                               \
        }                                                                                                              \
    } while (0)

static void setup(void)
{
    const char *why = netns_unavailable();
    if (why)
        cr_skip_test("partition test skipped: %s", why);
    server_bin = harness_nats_server(); /* VERDICT_NATS_SERVER, its version checked against VERDICT_NATS_VERSION */
    SETUP_REQUIRE(server_bin, "not the nats-server version asked for (above)");
    /* before any nats.c call: nats.c's own threads must be created in the client namespace too */
    SETUP_REQUIRE(netns_lab_create(&lab, 5), "cannot create the network namespaces (root is available)");
    SETUP_REQUIRE(netns_enter(&lab, CLIENT_HOST), "cannot enter the client namespace");
    /* A small TCP send queue for the engine (its namespace only): a cut then fills it within a fraction of a
     * second, the situation in which issue 21's engine froze in send() while holding nats.c's connection lock
     * (1.2 MB were queued there, at a higher rate). Without a write deadline this test then stalls until TCP
     * gives up. */
    SETUP_REQUIRE(netns_sysctl(&lab, ENGINE_HOST, "net/ipv4/tcp_wmem", "4096 16384 16384"), "cannot set tcp_wmem");
    const char *retries = getenv("VERDICT_PARTITION_TCP_RETRIES2"); /* to shorten such a freeze, experiments */
    if (retries && retries[0])
        SETUP_REQUIRE(netns_sysctl(&lab, ENGINE_HOST, "net/ipv4/tcp_retries2", retries), "cannot set tcp_retries2");
    size_t o = 0;
    for (int i = 0; i < NODES; i++)
        o += (size_t)snprintf(urls + o, sizeof urls - o, "%snats://%s:4222", i ? "," : "", lab.addr[i]);
    SETUP_REQUIRE(start_cluster(3), "three starts of the cluster failed (stderr says why)");
    temp_path(engine_log, sizeof engine_log, ".log");
}

TestSuite(partition, .init = setup, .fini = teardown, .timeout = 420);

static void set_phase(int ph, int node)
{
    atomic_store(&phase, ph);
    char which[16] = "";
    if (node >= 0)
        snprintf(which, sizeof which, ": n%d", node);
    fprintf(stderr, "test_partition: %6.1f s  %s%s (stored %llu, confirmed %d)\n", (mono_ms() - t_start) / 1000.0,
            phase_name[ph], which, (unsigned long long)atomic_load(&stored_max), atomic_load(&confirmed_total));
}

/* Cuts node, waits CUT_MS, heals it, waits AFTER_HEAL_MS; phases ph (cut) and ph+1 (healed). */
static void fault(int ph, int node)
{
    cr_assert(node >= 0 && node < NODES);
    set_phase(ph, node);
    cr_assert(netns_cut(&lab, node));
    tc_sleep_ms(CUT_MS);
    cr_assert(netns_heal(&lab, node));
    set_phase(ph + 1, node);
    tc_sleep_ms(AFTER_HEAL_MS);
    cr_assert(engine_alive(), "the engine died during '%s' (status in %s)", phase_name[ph], engine_log);
}

Test(partition, cuts_of_follower_leader_and_engine_node_lose_nothing_and_stall_less_than_the_fault)
{
    char version[128] = "";
    {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "'%s' --version 2>&1", server_bin);
        FILE *p = popen(cmd, "r");
        if (p) {
            if (!fgets(version, sizeof version, p))
                version[0] = 0;
            pclose(p);
        }
        version[strcspn(version, "\n")] = 0;
    }
    fprintf(stderr, "test_partition: %s, cuts of %d s\n", version, CUT_MS / 1000);

    config cc;
    config_defaults(&cc);
    cr_assert(str_copy(cc.nats_url, sizeof cc.nats_url, urls));
    verror e = {0};
    cr_assert_eq(broker_connect_simple(&cc, &nc, &e), V_OK, "connect: %s", e.msg);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 3000;
    cr_assert_eq(natsConnection_JetStream(&js, nc, &jo), NATS_OK);

    char metrics[64];
    snprintf(metrics, sizeof metrics, "%s:%d", lab.addr[ENGINE_HOST], METRICS_PORT);
    const char *argv[] = {VERDICT_BIN,   "serve",     "--nats-url", urls, "--replicas",     "3",
                          "--engine-id", "pt-engine", "--workers",  "2",  "--metrics-addr", metrics,
                          NULL};
    engine_pid = netns_spawn(&lab, ENGINE_HOST, argv, engine_log);
    cr_assert(engine_pid > 0);
    cr_assert(file_wait_for(engine_log, "engine started", 30000), "engine did not start; see %s", engine_log);

    t_start = mono_ms();
    pthread_t pub[PUBLISHERS], mon[NODES], samp;
    for (int p = 0; p < PUBLISHERS; p++)
        cr_assert_eq(pthread_create(&pub[p], NULL, publisher, (void *)(intptr_t)p), 0);
    for (int i = 0; i < NODES; i++)
        cr_assert_eq(pthread_create(&mon[i], NULL, store_monitor, (void *)(intptr_t)i), 0);
    cr_assert_eq(pthread_create(&samp, NULL, sampler, NULL), 0);
    set_phase(0, -1); /* "load" */
    tc_sleep_ms(8000);
    cr_assert(atomic_load(&stored_max) > 0, "nothing decided under load before any fault; see %s", engine_log);

    /* 1. a follower: of TXN and of the consumer (with three nodes and R3 assets, every node usually leads
     * something; DECISIONS is the lesser evil), carrying the fewest engine connections */
    int lt = stream_leader("TXN"), ld = stream_leader("DECISIONS"), lc = consumer_leader();
    int follower = -1, best = 1 << 30;
    for (int i = 0; i < NODES; i++) {
        int score = 100 * ((i == lt) + (i == lc)) + 10 * (i == ld) + engine_conns_on(i);
        if (score < best) {
            best = score;
            follower = i;
        }
    }
    fprintf(stderr, "test_partition: leaders TXN n%d DECISIONS n%d consumer n%d; follower n%d\n", lt, ld, lc, follower);
    fault(1, follower);

    /* 2. the TXN stream's leader, as it is now */
    int leader = stream_leader("TXN");
    cr_assert(leader >= 0, "TXN has no leader after the follower's heal");
    fault(3, leader);

    /* 3. the node carrying most of the engine's connections */
    int en = -1, most = -1;
    for (int i = 0; i < NODES; i++) {
        int k = engine_conns_on(i);
        if (k > most) {
            most = k;
            en = i;
        }
    }
    cr_assert(most > 0, "no node reports the engine's connections");
    fprintf(stderr, "test_partition: engine has %d connections on n%d\n", most, en);
    burst_publish();
    int64_t engine_cut_at = wall_ms();
    fault(5, en);

    atomic_store(&stop_pub, true);
    for (int p = 0; p < PUBLISHERS; p++)
        pthread_join(pub[p], NULL);
    confirm_burst();
    int conf = atomic_load(&confirmed_total);
    /* everything confirmed is decided (or dead-lettered) in bounded time, and the consumer is empty */
    int64_t deadline = mono_ms() + 90000;
    uint64_t ack_pending = 1, pending = 1;
    while (mono_ms() < deadline) {
        if (atomic_load(&stored_max) >= (uint64_t)conf && tc_consumer_counts(js, &ack_pending, &pending, NULL) &&
            ack_pending == 0 && pending == 0)
            break;
        tc_sleep_ms(250);
    }
    atomic_store(&stop_obs, true);
    for (int i = 0; i < NODES; i++)
        pthread_join(mon[i], NULL);
    pthread_join(samp, NULL);

    fprintf(stderr, "test_partition: %s: %d confirmed, %d given up by the publishers, %llu stored\n", version, conf,
            atomic_load(&given_up_total), (unsigned long long)atomic_load(&stored_max));
    for (int ph = 0; ph < PHASES; ph++)
        fprintf(stderr, "test_partition:   %-19s longest stall %5.1f s (from %5.1f s); /readyz 200 x%d, 503 x%d\n",
                phase_name[ph], phase_stall[ph] / 1000.0, phase_stall_at[ph] / 1000.0, readyz_200[ph], readyz_503[ph]);
    fprintf(stderr, "test_partition: longest stall %.1f s; /readyz unanswered %d times, slowest answer %lld ms\n",
            longest_stall / 1000.0, readyz_noanswer, (long long)readyz_slowest_ms);

    /* how long the engine took to notice that its node was gone: its "disconnected" log line */
    int64_t noticed = engine_log_first("disconnected from NATS", engine_cut_at);
    fprintf(stderr, "test_partition: the engine noticed the cut of its node after %.1f s\n",
            noticed < 0 ? -1.0 : (noticed - engine_cut_at) / 1000.0);

    /* read every decision and dead letter back: one per confirmed transaction */
    static unsigned char seen[SOURCES][MAX_PER_PUB];
    memset(seen, 0, sizeof seen);
    int dlq = 0;
    cr_assert(read_back("DECISIONS", "decision.>", seen, &dlq), "cannot read DECISIONS back");
    cr_assert(read_back("DLQ", "dlq.>", seen, &dlq), "cannot read DLQ back");
    /* nats-server before 2.11 can answer a retry Duplicate (sequence 0) for a write it never stored: a loss the
     * engine never sees, since these publishers write to TXN directly (through the ingress the engine stores
     * such a retry again). On those servers that one signature is reported, not failed: docs/operations.md says
     * clusters need 2.11 or later. Every other loss fails on every version. */
    unsigned vmaj = 0, vmin = 0;
    const char *vp = strstr(version, "v2.");
    bool old_server = vp && sscanf(vp, "v%u.%u", &vmaj, &vmin) == 2 && vmaj == 2 && vmin < 11;
    int missing = 0, doubled = 0, server_lost = 0;
    for (int p = 0; p < SOURCES; p++)
        for (int k = 0; k < published[p]; k++) {
            if (seen[p][k] > 1 && doubled++ < 5)
                fprintf(stderr, "test_partition: pt-%d-%d has %d decisions/dead letters (derived ids included)\n", p, k,
                        seen[p][k]);
            if (confirmed[p][k] == 2 && !seen[p][k] && old_server) {
                char subj[64];
                snprintf(subj, sizeof subj, "txn.partition.%d.%d", p, k);
                natsMsg *m = NULL;
                if (js_GetLastMsg(&m, js, "TXN", subj, NULL, NULL) == NATS_NOT_FOUND) {
                    server_lost++;
                    fprintf(stderr,
                            "test_partition: pt-%d-%d: KNOWN nats-server < 2.11 BUG: confirmed as a Duplicate, "
                            "never stored (%s); not counted against the engine\n",
                            p, k, version);
                    continue;
                }
                natsMsg_Destroy(m);
            }
            if (confirmed[p][k] && !seen[p][k] && missing++ < 5) {
                /* which loss: never stored (a Duplicate answer for a write that did not commit), or stored and
                 * skipped by the consumer */
                char subj[64];
                snprintf(subj, sizeof subj, "txn.partition.%d.%d", p, k);
                natsMsg *m = NULL;
                natsStatus s = js_GetLastMsg(&m, js, "TXN", subj, NULL, NULL);
                fprintf(stderr,
                        "test_partition: pt-%d-%d confirmed (%s, TXN seq %llu) but never decided; TXN %s "
                        "(seq %llu)\n",
                        p, k, confirmed[p][k] == 2 ? "as a Duplicate" : "stored", (unsigned long long)pub_seq[p][k],
                        s == NATS_OK          ? "holds it"
                        : s == NATS_NOT_FOUND ? "does NOT hold it"
                                              : natsStatus_GetText(s),
                        s == NATS_OK ? (unsigned long long)natsMsg_GetSequence(m) : 0ULL);
                natsMsg_Destroy(m);
            }
        }
    fprintf(stderr, "test_partition: %d dead letters, %d confirmed without decision, %d with more than one\n", dlq,
            missing, doubled);
    if (missing)
        fprintf(stderr, "test_partition: (a lost transaction stays 'pending' to the stall clock: the stalls after "
                        "its loss are not the engine's)\n");
    cr_assert_eq(missing, 0,
                 "%d confirmed transactions without a decision or dead letter (%s; one confirmed 'as a Duplicate' "
                 "that TXN does not hold is the nats-server < 2.11 bug of docs/operations.md, 'Cluster faults'); "
                 "see %s",
                 missing, version, engine_log);
    cr_assert_eq(doubled, 0, "%d transactions decided or dead-lettered more than once (%s)", doubled, version);

    /* the process never froze: /readyz answered every time; it said 503 while the engine's node was cut off
     * (at least until the engine moved) and 200 at the end */
    cr_assert_eq(readyz_noanswer, 0, "/readyz did not answer %d times: the process froze", readyz_noanswer);
    cr_assert(readyz_200[PHASES - 1] > 0, "/readyz never said ready after the last heal");
    /* pings every second, 2 out, and a 1 s write deadline: 2-4 s; 8 s leaves room for a loaded machine, and
     * nats.c's defaults took minutes (5 s pings: 12 s) */
    cr_assert(noticed >= 0 && noticed - engine_cut_at < 8000,
              "the engine noticed the cut of its node after %.1f s (or never: -1); see %s",
              noticed < 0 ? -1.0 : (noticed - engine_cut_at) / 1000.0, engine_log);
    if (server_lost)
        fprintf(stderr,
                "test_partition: the stall bound is not checked: %d transaction(s) the server lost stay "
                "'pending' to the stall clock (longest stall %.1f s)\n",
                server_lost, longest_stall / 1000.0);
    else
        cr_assert(longest_stall < CUT_MS, "a stall of %.1f s is longer than the %d s fault (%s); see %s",
                  longest_stall / 1000.0, CUT_MS / 1000, version, engine_log);
    cr_assert(engine_alive(), "the engine died; see %s", engine_log);
    kill(engine_pid, SIGTERM);
    cr_assert_eq(child_wait(engine_pid, 15000), 0, "engine did not exit 0 on SIGTERM; see %s", engine_log);
    engine_pid = 0;
    passed = true;
}

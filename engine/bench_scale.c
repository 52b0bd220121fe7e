/* bench_scale.c - `verdict bench scale`: partitioned engines (--partitions N) on a private nats-server: decisions/s
 * and CPU per decision with 1, 2 and 3 engines, the time a killed engine's partitions take to decide again, and
 * what the whole-stream state costs each engine (the sequencer's catch-up reads).
 *
 * Rate: for each engine count, a fresh private nats-server; the engines (this binary, `verdict serve`) are
 * started and left to share the partitions on an empty stream, then --count transactions are published as one
 * burst (async, to txn.p.<P>.<card_id>, P = partition_of(card_id)), and the clock runs from the first publish
 * until DECISIONS holds all of them. CPU is utime+stime from /proc/<pid>/stat of the engines (summed) and of the
 * server over the same interval; the catch-up figures are the engines' /metrics counters over it.
 * Failover: three engines while transactions arrive at --rate; --kills times the engine owning the partitions
 * read from the lease bucket is killed with SIGKILL, and the round's time is from the kill until every one of
 * its partitions has a decision by another engine (decided_at_ms, read live from decision.>): deciding, not
 * lease taking. The victim is restarted and the partitions shared again before the next round. Every phase
 * ends with exactly one decision per transaction and no dead letter, or the bench fails.
 * There is no replication lag to measure: every engine counts the whole stream in stream order (its catch-up
 * reads TXN for the sequences of partitions it does not decide), so every feature is exact. Method and
 * figures: docs/benchmarks.md, "Scale-out (verdict bench scale)". */
#include "broker.h"
#include "codec.h"
#include "config.h"
#include "lease.h"
#include "localserver.h"
#include "log.h"
#include "partition.h"
#include "simgen.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SC_ENGINES 3
#define SC_MAX_KILLS 50

double bench_cpu_proc_us(pid_t pid); /* bench.c */

typedef struct sc_engine {
    pid_t pid; /* 0: not running */
    char id[32];
    char log[256];
    int metrics_port;
    int base_owned; /* owned_in_log at this incarnation's start: what earlier ones left in the same log */
} sc_engine;

typedef struct sc_run {
    int engines;
    long long decisions, dead;
    double seconds, per_s, publish_ms;
    double cpu_engines_us, cpu_server_us; /* per decision */
    long long catch_up_reads, catch_up_msgs;
} sc_run;

static struct {
    config cfg;
    int parts, rate, count;
    char ttl[32];
    sc_engine eng[SC_ENGINES];
    localserver ls;
    natsConnection *nc;
    jsCtx *js;
    long long next_txn; /* txn ids are unique across the phases */
    atomic_bool pub_stop;
    atomic_llong published, pub_errors;
    /* the decision watcher (failover): per partition, the first decision by another engine after after_ms */
    pthread_mutex_t mu;
    int64_t after_ms;
    char victim[32];
    bool want[PARTITIONS_MAX];
    int64_t first_ms[PARTITIONS_MAX];
    arena dec_arena;
} sc;

static void sc_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* --- engines ---------------------------------------------------------------------------------------- */

/* Partitions this log's engine holds, by its own lines: taken minus released and lost. */
static int owned_in_log(const char *log)
{
    return file_count_lines(log, "\"partition taken: this engine decides it\"") -
           file_count_lines(log, "\"partition released for another engine\"") -
           file_count_lines(log, "\"partition released at the stop\"") -
           file_count_lines(log, "\"partition lost: another engine owns it now\"");
}

static int owned(int k) { return sc.eng[k].pid > 0 ? owned_in_log(sc.eng[k].log) - sc.eng[k].base_owned : 0; }

static bool spawn_engine(int k)
{
    sc_engine *en = &sc.eng[k];
    en->base_owned = owned_in_log(en->log);
    en->metrics_port = localserver_free_port();
    if (en->metrics_port <= 0)
        return false;
    char parts[16], maddr[32];
    snprintf(parts, sizeof parts, "%d", sc.parts);
    snprintf(maddr, sizeof maddr, "127.0.0.1:%d", en->metrics_port);
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* an engine does not outlive an interrupted bench */
        FILE *f = freopen(en->log, "a", stderr);
        (void)f;
        execl("/proc/self/exe", "verdict", "serve", "--nats-url", sc.cfg.nats_url, "--partitions", parts,
              "--lease-ttl", sc.ttl, "--engine-id", en->id, "--metrics-addr", maddr, "--rules",
              VERDICT_SOURCE_DIR "/rules/default.rules", "--model", VERDICT_SOURCE_DIR "/models/verdict-gbdt.json",
              "--max-keys", "100000", "--snapshot-interval", "10s", (char *)NULL);
        _exit(127);
    }
    en->pid = pid;
    return true;
}

static void stop_engine(int k, int sig)
{
    if (sc.eng[k].pid <= 0)
        return;
    kill(sc.eng[k].pid, sig);
    waitpid(sc.eng[k].pid, NULL, 0);
    sc.eng[k].pid = 0;
}

/* The n running engines share all partitions, none above its share ceil(parts/n). (With few partitions an engine
 * may hold none: 4 among 3 engines can be 2, 2, 0; it stands by.) */
static bool wait_shared(int n, int timeout_ms)
{
    int share = (sc.parts + n - 1) / n;
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        int total = 0, running = 0;
        bool fair = true;
        for (int k = 0; k < SC_ENGINES; k++) {
            if (sc.eng[k].pid <= 0)
                continue;
            if (waitpid(sc.eng[k].pid, NULL, WNOHANG) != 0) {
                fprintf(stderr, "verdict bench scale: engine %s exited (see %s)\n", sc.eng[k].id, sc.eng[k].log);
                sc.eng[k].pid = 0;
                return false;
            }
            int o = owned(k);
            total += o;
            running++;
            fair = fair && o <= share;
        }
        if (running == n && total == sc.parts && fair)
            return true;
        sc_sleep_ms(50);
    }
    fprintf(stderr, "verdict bench scale: %d engines did not share the %d partitions within %d ms\n", n, sc.parts,
            timeout_ms);
    return false;
}

/* The value of a counter line "name value" in a /metrics reply; -1 if absent. */
static long long metric(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = strstr(text, name); p; p = strstr(p + 1, name))
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return atoll(p + n + 1);
    return -1;
}

/* Summed over the running engines: sequencer catch-up reads and the transactions they counted. */
static bool catch_up_totals(long long *reads, long long *msgs)
{
    static char buf[65536]; /* the bench's main thread only */
    *reads = *msgs = 0;
    for (int k = 0; k < SC_ENGINES; k++) {
        if (sc.eng[k].pid <= 0)
            continue;
        if (!localserver_http_get(sc.eng[k].metrics_port, "/metrics", buf, sizeof buf))
            return false;
        long long r = metric(buf, "verdict_sequence_catch_ups_total");
        long long m = metric(buf, "verdict_sequence_gap_msgs_total");
        if (r < 0 || m < 0)
            return false;
        *reads += r;
        *msgs += m;
    }
    return true;
}

static double engines_cpu_us(void)
{
    double s = 0;
    for (int k = 0; k < SC_ENGINES; k++)
        if (sc.eng[k].pid > 0)
            s += bench_cpu_proc_us(sc.eng[k].pid);
    return s;
}

/* --- traffic ---------------------------------------------------------------------------------------- */

/* Publishes one simulated transaction to its partition's subject, as a payment service publishing directly
 * would (partition.h); the txn id carries the partition ("sc<P>-<n>") for the decision watcher. */
static natsStatus publish_one(simgen *g)
{
    Transaction t;
    simgen_next(g, &t);
    unsigned p = partition_of(t.card_id, strlen(t.card_id), (uint32_t)sc.parts);
    char id[48], subj[NAME_MAX_LEN + 64];
    snprintf(id, sizeof id, "sc%u-%lld", p, sc.next_txn++);
    t.txn_id = id;
    size_t base = strlen(sc.cfg.txn_subjects) - 2; /* "txn.p.>" without ".>" */
    snprintf(subj, sizeof subj, "%.*s.%u.%s", (int)base, sc.cfg.txn_subjects, p, t.card_id);
    unsigned char buf[2048];
    size_t n = verdict__v1__transaction__pack(&t, buf);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = id;
    po.MaxWait = 10000; /* a PubAck that never comes is an error (on_pub_error), not a wait forever */
    natsStatus s = js_PublishAsync(sc.js, subj, buf, (int)n, &po);
    atomic_fetch_add(s == NATS_OK ? &sc.published : &sc.pub_errors, 1);
    return s;
}

static void on_pub_error(jsCtx *js, jsPubAckErr *pae, void *closure)
{
    (void)js, (void)pae, (void)closure;
    atomic_fetch_add(&sc.pub_errors, 1);
}

static void *publisher(void *arg)
{
    simgen *g = arg;
    int64_t t0 = mono_ns();
    for (long long i = 0; !atomic_load(&sc.pub_stop); i++) {
        int64_t due = t0 + i * 1000000000LL / sc.rate;
        while (mono_ns() < due)
            sc_sleep_ms(1);
        publish_one(g);
    }
    return NULL;
}

static bool publish_complete(void)
{
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 30000;
    natsStatus s = js_PublishAsyncComplete(sc.js, &po);
    if (s != NATS_OK)
        fprintf(stderr, "verdict bench scale: publishes unconfirmed 30 s after the last (%s)\n", natsStatus_GetText(s));
    return s == NATS_OK;
}

static uint64_t stream_msgs(const char *stream)
{
    jsStreamInfo *si = NULL;
    uint64_t n = 0;
    if (js_GetStreamInfo(&si, sc.js, stream, NULL, NULL) == NATS_OK) {
        n = si->State.Msgs;
        jsStreamInfo_Destroy(si);
    }
    return n;
}

/* Waits until DECISIONS holds want decisions (bounded); progress on stderr every 2 s. */
static uint64_t wait_decisions(uint64_t want, int timeout_ms, const char *label)
{
    uint64_t n = 0;
    int64_t last = mono_ns();
    for (int waited = 0; waited < timeout_ms; waited += 20) {
        if ((n = stream_msgs(sc.cfg.decisions_stream)) >= want)
            break;
        if (mono_ns() - last > 2000000000LL) {
            fprintf(stderr, "[bench] %s: %llu/%llu decided\n", label, (unsigned long long)n, (unsigned long long)want);
            last = mono_ns();
        }
        sc_sleep_ms(20);
    }
    return n;
}

static void on_decision(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc, (void)sub, (void)closure;
    arena *a = &sc.dec_arena; /* this callback runs on one nats.c thread at a time */
    arena_reset(a);
    Decision *d = decision_decode(a, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    if (d && d->txn_id && strncmp(d->txn_id, "sc", 2) == 0 && d->engine_id) {
        unsigned long p = strtoul(d->txn_id + 2, NULL, 10);
        pthread_mutex_lock(&sc.mu);
        if (p < PARTITIONS_MAX && sc.want[p] && sc.first_ms[p] == 0 && d->decided_at_ms > sc.after_ms &&
            strcmp(d->engine_id, sc.victim) != 0)
            sc.first_ms[p] = d->decided_at_ms;
        pthread_mutex_unlock(&sc.mu);
    }
    natsMsg_Destroy(m);
}

/* --- phases ----------------------------------------------------------------------------------------- */

/* A fresh private server with the partitioned streams, and the bench's connection to it. */
static bool server_up(void)
{
    verror e = {0};
    if (localserver_start(&sc.ls, &e) != V_OK) {
        fprintf(stderr, "verdict bench scale: %s\n", e.msg);
        return false;
    }
    str_copy(sc.cfg.nats_url, sizeof sc.cfg.nats_url, sc.ls.url);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = 4096;
    /* a burst fills MaxPending; on a busy machine the PubAcks can lag the 200 ms default, and a publish refused
     * then would leave the burst short */
    jo.PublishAsync.StallWait = 30000;
    jo.PublishAsync.ErrHandler = on_pub_error;
    if (broker_connect_simple(&sc.cfg, &sc.nc, &e) != V_OK || !sc.nc ||
        natsConnection_JetStream(&sc.js, sc.nc, &jo) != NATS_OK || broker_setup(&sc.cfg, sc.js, &e) != V_OK) {
        fprintf(stderr, "verdict bench scale: %s\n", e.msg[0] ? e.msg : "cannot connect");
        return false;
    }
    return true;
}

static void server_down(void)
{
    for (int k = 0; k < SC_ENGINES; k++)
        stop_engine(k, SIGTERM);
    jsCtx_Destroy(sc.js);
    sc.js = NULL;
    natsConnection_Destroy(sc.nc);
    sc.nc = NULL;
    localserver_stop(&sc.ls);
    memset(&sc.ls, 0, sizeof sc.ls);
}

static bool start_engines(int n)
{
    for (int k = 0; k < n; k++)
        if (!spawn_engine(k))
            return false;
    return wait_shared(n, 60000);
}

/* n engines, --count transactions in one burst: decisions/s, CPU per decision, catch-up. */
static bool run_rate(int n, simgen *g, sc_run *r)
{
    memset(r, 0, sizeof *r);
    r->engines = n;
    bool ok = false;
    if (!server_up() || !start_engines(n))
        goto out;
    fprintf(stderr, "[bench] %d engine%s share %d partitions; publishing %d transactions\n", n, n > 1 ? "s" : "",
            sc.parts, sc.count);
    long long reads0 = 0, msgs0 = 0, reads1 = 0, msgs1 = 0;
    if (!catch_up_totals(&reads0, &msgs0)) {
        fprintf(stderr, "verdict bench scale: cannot read the engines' /metrics\n");
        goto out;
    }
    double cpu_e0 = engines_cpu_us(), cpu_s0 = bench_cpu_proc_us(sc.ls.pid);
    int64_t t0 = mono_ns();
    for (int i = 0; i < sc.count; i++) {
        natsStatus ps = publish_one(g);
        if (ps != NATS_OK) {
            fprintf(stderr, "verdict bench scale: publish %d of the burst refused (%s)\n", i + 1,
                    natsStatus_GetText(ps));
            goto out;
        }
    }
    if (!publish_complete() || atomic_load(&sc.pub_errors) != 0) {
        fprintf(stderr, "verdict bench scale: %lld publishes failed\n", (long long)atomic_load(&sc.pub_errors));
        goto out;
    }
    r->publish_ms = (double)(mono_ns() - t0) / 1e6;
    char label[32];
    snprintf(label, sizeof label, "%d engine%s", n, n > 1 ? "s" : "");
    r->decisions = (long long)wait_decisions((uint64_t)sc.count, 300000, label);
    int64_t t1 = mono_ns();
    r->cpu_engines_us = engines_cpu_us() - cpu_e0;
    r->cpu_server_us = bench_cpu_proc_us(sc.ls.pid) - cpu_s0;
    if (!catch_up_totals(&reads1, &msgs1)) {
        fprintf(stderr, "verdict bench scale: cannot read the engines' /metrics\n");
        goto out;
    }
    r->catch_up_reads = reads1 - reads0;
    r->catch_up_msgs = msgs1 - msgs0;
    r->seconds = (double)(t1 - t0) / 1e9;
    r->per_s = r->seconds > 0 ? (double)r->decisions / r->seconds : 0;
    if (r->decisions > 0) {
        r->cpu_engines_us /= (double)r->decisions;
        r->cpu_server_us /= (double)r->decisions;
    }
    sc_sleep_ms(300); /* a duplicate decision would land after the count was reached */
    r->decisions = (long long)stream_msgs(sc.cfg.decisions_stream);
    r->dead = (long long)stream_msgs(sc.cfg.dlq_stream);
    ok = r->decisions == sc.count && r->dead == 0;
    if (!ok)
        fprintf(stderr, "verdict bench scale: %d engines: %lld decisions and %lld dead letters for %d transactions\n",
                n, r->decisions, r->dead, sc.count);
out:
    server_down();
    return ok;
}

/* The partitions whose lease names engine k as owner, into want[]; how many. */
static int partitions_of(int k, bool *want)
{
    char bucket[96];
    lease_bucket(&sc.cfg, bucket, sizeof bucket);
    kvStore *kv = NULL;
    if (js_KeyValue(&kv, sc.js, bucket) != NATS_OK)
        return 0;
    char needle[48];
    snprintf(needle, sizeof needle, "\"owner\":\"%s/", sc.eng[k].id);
    int n = 0;
    for (int p = 0; p < sc.parts; p++) {
        char key[NAME_MAX_LEN + 16];
        partition_consumer(&sc.cfg, (unsigned)p, key, sizeof key); /* a lease is named after its consumer */
        kvEntry *e = NULL;
        want[p] = false;
        if (kvStore_Get(&e, kv, key) == NATS_OK) {
            const char *v = kvEntry_ValueString(e);
            want[p] = v && strstr(v, needle);
            n += want[p];
            kvEntry_Destroy(e);
        }
    }
    kvStore_Destroy(kv);
    return n;
}

/* One round: SIGKILL engine k, time until each of its partitions has a decision by another engine, restart it
 * and wait for the partitions to be shared again. */
static bool kill_round(int k, int64_t *gap_ms, int *nparts)
{
    bool want[PARTITIONS_MAX];
    int n = 0;
    for (int i = 0; i < SC_ENGINES; i++) /* k, or the next that decides some (with few partitions one may not) */
        if ((n = partitions_of((k + i) % SC_ENGINES, want)) > 0) {
            k = (k + i) % SC_ENGINES;
            break;
        }
    if (n == 0) {
        fprintf(stderr, "verdict bench scale: no engine holds a partition lease\n");
        return false;
    }
    pthread_mutex_lock(&sc.mu);
    memcpy(sc.want, want, sizeof want);
    memset(sc.first_ms, 0, sizeof sc.first_ms);
    str_copy(sc.victim, sizeof sc.victim, sc.eng[k].id);
    sc.after_ms = now_ms();
    pthread_mutex_unlock(&sc.mu);
    stop_engine(k, SIGKILL);
    int64_t last = 0;
    for (int waited = 0; waited < 60000; waited += 10) {
        int done = 0;
        pthread_mutex_lock(&sc.mu);
        for (int p = 0; p < sc.parts; p++)
            if (want[p] && sc.first_ms[p]) {
                done++;
                last = sc.first_ms[p] > last ? sc.first_ms[p] : last;
            }
        pthread_mutex_unlock(&sc.mu);
        if (done == n)
            break;
        last = 0;
        sc_sleep_ms(10);
    }
    if (!last) {
        fprintf(stderr, "verdict bench scale: the killed engine's partitions were not all deciding within 60 s\n");
        return false;
    }
    *gap_ms = last - sc.after_ms;
    *nparts = n;
    return spawn_engine(k) && wait_shared(SC_ENGINES, 60000);
}

static bool run_failover(simgen *g, int kills, int64_t *gaps, double *parts_per_kill, long long *published,
                         long long *decided, long long *dead)
{
    bool ok = false, pub_started = false;
    pthread_t pub;
    natsSubscription *sub = NULL;
    if (!server_up() || natsConnection_Subscribe(&sub, sc.nc, "decision.>", on_decision, NULL) != NATS_OK ||
        !start_engines(SC_ENGINES))
        goto out;
    atomic_store(&sc.pub_stop, false);
    long long pub0 = atomic_load(&sc.published);
    if (pthread_create(&pub, NULL, publisher, g) != 0)
        goto out;
    pub_started = true;
    sc_sleep_ms(2000); /* traffic flowing */
    int total_parts = 0;
    for (int i = 0; i < kills; i++) {
        int np = 0;
        if (!kill_round(i % SC_ENGINES, &gaps[i], &np))
            goto out;
        total_parts += np;
        fprintf(stderr, "[bench] kill -9 %d/%d: its %d partitions deciding again after %lld ms\n", i + 1, kills, np,
                (long long)gaps[i]);
        sc_sleep_ms(1000);
    }
    *parts_per_kill = (double)total_parts / kills;
    atomic_store(&sc.pub_stop, true);
    pthread_join(pub, NULL);
    pub_started = false;
    if (!publish_complete())
        goto out;
    *published = atomic_load(&sc.published) - pub0;
    *decided = (long long)wait_decisions((uint64_t)*published, 120000, "failover drain");
    sc_sleep_ms(300);
    *decided = (long long)stream_msgs(sc.cfg.decisions_stream);
    *dead = (long long)stream_msgs(sc.cfg.dlq_stream);
    ok = true;
out:
    atomic_store(&sc.pub_stop, true);
    if (pub_started)
        pthread_join(pub, NULL);
    natsSubscription_Destroy(sub);
    server_down();
    return ok;
}

/* --- command ---------------------------------------------------------------------------------------- */

static void sc_help(void)
{
    printf("usage: verdict bench scale [--partitions N] [--count N] [--rate PER_S] [--kills N] [--lease-ttl D]\n"
           "                           [--json]\n\n"
           "Partitioned engines (verdict serve --partitions N, this binary) on a private nats-server:\n"
           "  rate      for 1, 2 and 3 engines, each on a fresh server: the engines share the partitions on an\n"
           "            empty stream, then --count transactions (default 20000) are published as one burst to\n"
           "            txn.p.<P>.<card_id>; decisions/s from the first publish until all are decided, with the\n"
           "            engines' summed CPU and the server's CPU per decision (/proc/<pid>/stat)\n"
           "  catch-up  every engine counts the whole stream (its sequencer reads TXN for the partitions it does\n"
           "            not decide), so every feature is exact and there is no replication lag; its cost is shown\n"
           "            as the engines' catch-up reads and transactions counted by them, per decision\n"
           "  failover  three engines while transactions arrive at --rate (default 1000/s); --kills times (default\n"
           "            10) the engine holding some partitions' leases is killed with SIGKILL; the time from the\n"
           "            kill until each of its partitions has a decision by another engine, p50 and max; the\n"
           "            engine is restarted and the partitions shared again before the next kill\n"
           "Every phase must end with exactly one decision per transaction and no dead letter, or the bench fails.\n"
           "--partitions 3..1024 (default 16), --lease-ttl the engines' lease TTL (default 3s).\n"
           "--json: one JSON object on the last line. Keys: bench, partitions, count, rate, kills, lease_ttl,\n"
           "runs (engines, decisions, seconds, publish_ms, decisions_per_s, cpu_engines_us_per_decision,\n"
           "cpu_server_us_per_decision, catch_up_reads, catch_up_msgs, catch_up_msgs_per_decision, dead_letters),\n"
           "decisions_per_s_1, decisions_per_s_2, decisions_per_s_3, speedup_2, speedup_3, failover_p50_ms,\n"
           "failover_max_ms, failover_partitions_per_kill, transactions, decisions, dead_letters, publish_errors,\n"
           "exactly_once, replication_lag.\n");
}

static void print_run_json(const sc_run *r, bool comma)
{
    printf("{\"engines\":%d,\"decisions\":%lld,\"seconds\":%.3f,\"publish_ms\":%.1f,\"decisions_per_s\":%.1f,"
           "\"cpu_engines_us_per_decision\":%.1f,\"cpu_server_us_per_decision\":%.1f,\"catch_up_reads\":%lld,"
           "\"catch_up_msgs\":%lld,\"catch_up_msgs_per_decision\":%.3f,\"dead_letters\":%lld}%s",
           r->engines, r->decisions, r->seconds, r->publish_ms, r->per_s, r->cpu_engines_us, r->cpu_server_us,
           r->catch_up_reads, r->catch_up_msgs, r->decisions ? (double)r->catch_up_msgs / (double)r->decisions : 0,
           r->dead, comma ? "," : "");
}

int bench_scale(int argc, char **argv)
{
    int kills = 10;
    bool json = false;
    sc.parts = 16;
    sc.rate = 1000;
    sc.count = 20000;
    str_copy(sc.ttl, sizeof sc.ttl, "3s");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "scale") || !strcmp(a, "bench"))
            continue;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            sc_help();
            return 0;
        }
        if (!strcmp(a, "--json"))
            json = true;
        else if (!strcmp(a, "--kills") && v && atoi(v) > 0 && atoi(v) <= SC_MAX_KILLS)
            kills = atoi(v), i++;
        else if (!strcmp(a, "--rate") && v && atoi(v) > 0 && atoi(v) <= 20000)
            sc.rate = atoi(v), i++;
        else if (!strcmp(a, "--count") && v && atoi(v) > 0 && atoi(v) <= 10000000)
            sc.count = atoi(v), i++;
        else if (!strcmp(a, "--partitions") && v && atoi(v) >= SC_ENGINES && atoi(v) <= (int)PARTITIONS_MAX)
            sc.parts = atoi(v), i++;
        else if (!strcmp(a, "--lease-ttl") && v && str_copy(sc.ttl, sizeof sc.ttl, v))
            i++;
        else {
            fprintf(stderr, "verdict bench scale: bad option '%s' (see --help; --partitions is 3..%u)\n", a,
                    PARTITIONS_MAX);
            return 2;
        }
    }
    log_set_quiet(1);
    config_defaults(&sc.cfg);
    {
        char parts[16];
        snprintf(parts, sizeof parts, "%d", sc.parts);
        char *args[] = {"serve", "--partitions", parts, "--lease-ttl", sc.ttl, NULL};
        bool help = false;
        verror e = {0};
        if (config_parse(&sc.cfg, 5, args, &help, NULL, NULL, &e) != V_OK) {
            fprintf(stderr, "verdict bench scale: %s\n", e.msg);
            return 2;
        }
    }
    for (int k = 0; k < SC_ENGINES; k++) {
        snprintf(sc.eng[k].id, sizeof sc.eng[k].id, "sc-%c", 'a' + k);
        snprintf(sc.eng[k].log, sizeof sc.eng[k].log, "/tmp/verdict-scale-%d-%c.log", (int)getpid(), 'a' + k);
        unlink(sc.eng[k].log);
    }
    pthread_mutex_init(&sc.mu, NULL);
    simgen_cfg gc = {.seed = 11, .start_ms = now_ms(), .cards = 5000};
    simgen_defaults(&gc);
    simgen *g = simgen_create(&gc);
    int rc = 1;
    sc_run runs[SC_ENGINES];
    int64_t gaps[SC_MAX_KILLS];
    double parts_per_kill = 0;
    long long fo_pub = 0, fo_dec = 0, fo_dead = 0;
    if (!g || arena_init(&sc.dec_arena, 64 * 1024) != V_OK) {
        fprintf(stderr, "verdict bench scale: out of memory\n");
        goto out;
    }
    fprintf(stderr,
            "[bench] scale: %d partitions, %d transactions per engine count, then %d kills at %d/s (lease TTL %s)\n",
            sc.parts, sc.count, kills, sc.rate, sc.ttl);
    for (int n = 1; n <= SC_ENGINES; n++) {
        if (!run_rate(n, g, &runs[n - 1]))
            goto out;
        fprintf(stderr, "[bench] %d engine%s: %.0f decisions/s\n", n, n > 1 ? "s" : "", runs[n - 1].per_s);
        for (int k = 0; k < SC_ENGINES; k++) /* the next phase's logs start empty */
            unlink(sc.eng[k].log);
    }
    if (!run_failover(g, kills, gaps, &parts_per_kill, &fo_pub, &fo_dec, &fo_dead))
        goto out;
    qsort(gaps, (size_t)kills, sizeof gaps[0], cmp_i64);
    long long txns = fo_pub, decs = fo_dec, dead = fo_dead;
    for (int n = 0; n < SC_ENGINES; n++)
        txns += sc.count, decs += runs[n].decisions, dead += runs[n].dead;
    long long pub_errors = atomic_load(&sc.pub_errors);
    bool once = decs == txns && dead == 0 && pub_errors == 0;
    double r1 = runs[0].per_s > 0 ? runs[0].per_s : 1;
    const char *lag = "none: every engine counts the whole stream in stream order (catch-up), every feature is exact";
    if (json) {
        printf("{\"bench\":\"scale\",\"partitions\":%d,\"count\":%d,\"rate\":%d,\"kills\":%d,\"lease_ttl\":\"%s\","
               "\"runs\":[",
               sc.parts, sc.count, sc.rate, kills, sc.ttl);
        for (int n = 0; n < SC_ENGINES; n++)
            print_run_json(&runs[n], n + 1 < SC_ENGINES);
        printf("],\"decisions_per_s_1\":%.1f,\"decisions_per_s_2\":%.1f,\"decisions_per_s_3\":%.1f,"
               "\"speedup_2\":%.3f,\"speedup_3\":%.3f,\"failover_p50_ms\":%lld,\"failover_max_ms\":%lld,"
               "\"failover_partitions_per_kill\":%.1f,\"transactions\":%lld,\"decisions\":%lld,\"dead_letters\":%lld,"
               "\"publish_errors\":%lld,\"exactly_once\":%s,\"replication_lag\":\"%s\"}\n",
               runs[0].per_s, runs[1].per_s, runs[2].per_s, runs[1].per_s / r1, runs[2].per_s / r1,
               (long long)gaps[kills / 2], (long long)gaps[kills - 1], parts_per_kill, txns, decs, dead, pub_errors,
               once ? "true" : "false", lag);
    } else {
        printf("scale-out: %d partitions, %d transactions per run published as one burst\n", sc.parts, sc.count);
        printf("  engines  decisions/s  speedup  engines CPU/dec  server CPU/dec  catch-up reads  "
               "counted by catch-up/dec\n");
        for (int n = 0; n < SC_ENGINES; n++)
            printf("  %7d  %11.0f  %6.2fx  %12.0f us  %11.0f us  %14lld  %23.2f\n", runs[n].engines, runs[n].per_s,
                   runs[n].per_s / r1, runs[n].cpu_engines_us, runs[n].cpu_server_us, runs[n].catch_up_reads,
                   runs[n].decisions ? (double)runs[n].catch_up_msgs / (double)runs[n].decisions : 0);
        printf("  replication lag: %s\n", lag);
        printf("failover: 3 engines at %d transactions/s, lease TTL %s, %d kill -9 (%.1f partitions each)\n", sc.rate,
               sc.ttl, kills, parts_per_kill);
        printf("  kill to every partition of the killed engine deciding again: p50 %lld ms, max %lld ms\n",
               (long long)gaps[kills / 2], (long long)gaps[kills - 1]);
        printf("  transactions %lld (%lld publishes failed), decisions %lld, dead letters %lld: %s\n", txns,
               pub_errors, decs, dead, once ? "exactly one decision each" : "NOT exactly one decision each");
    }
    rc = once ? 0 : 1;
    if (once)
        for (int k = 0; k < SC_ENGINES; k++)
            unlink(sc.eng[k].log);
out:
    server_down();
    simgen_destroy(g);
    arena_free(&sc.dec_arena);
    pthread_mutex_destroy(&sc.mu);
    if (rc != 0)
        fprintf(stderr, "verdict bench scale: engine logs kept: %s %s %s\n", sc.eng[0].log, sc.eng[1].log,
                sc.eng[2].log);
    return rc;
}

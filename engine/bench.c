/* bench.c - `verdict bench`: performance measured side by side with a bare JetStream baseline in the same run.
 *
 * These machines are small and noisy, so every figure is a ratio against a baseline measured in the same
 * process, on the same private nats-server, moments apart: the baseline is the engine itself in passthrough
 * mode (same pull, same republish with a msg-id, same reply and ack; no decode, no decision). Method and the
 * latest figures: docs/benchmarks.md. */
#include "broker.h"
#include "cli.h"
#include "codec.h"
#include "config.h"
#include "hist.h"
#include "localserver.h"
#include "log.h"
#include "pipeline.h"
#include "simgen.h"
#include "snapshot.h"

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BENCH_MAX_RATES 8

typedef struct bench_opts {
    config cfg;
    int seconds; /* 0: each bench's default (throughput 20, latency 30 per side and rate) */
    int count;
    int rates[BENCH_MAX_RATES];
    int nrates;
    bool json;
    int only; /* throughput: -1 both sides; 0 the pass-through only, 1 the full engine only (--only, for profiling) */
    int rounds; /* throughput: ABBA rounds, each on fresh streams; the figures are the rounds' medians */
    const char *out_dir; /* latency: per-second series, percentile curves and timelines as TSV files */
    int max_rate;        /* latency, `max` in --rates: the ramp's highest probe (--max-rate) */
} bench_opts;

/* `max` in --rates: the highest rate the pass-through sustains, found by a ramp of short pass-through runs */
#define RATE_MAX 0
#define RAMP_FIRST 1000
#define RAMP_STEPS 24
#define RAMP_CAP 100000

static void sleep_us(int64_t us)
{
    if (us <= 0)
        return;
    struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000L};
    nanosleep(&ts, NULL);
}

int bench_state(int argc, char **argv);
int bench_snapshot(int argc, char **argv);
int bench_eval(int argc, char **argv);
int bench_model(int argc, char **argv);
int bench_failover(int argc, char **argv);
int bench_durability(int argc, char **argv);
int bench_scale(int argc, char **argv);

static void with_prefix(config *c, const char *prefix, bool passthrough)
{
    bool help;
    char *argv[] = {"bench", "--prefix", (char *)prefix};
    config_parse(c, 3, argv, &help, NULL, NULL, NULL);
    c->passthrough = passthrough;
    /* the full engine decides with the shipped rules and model (the pass-through decides nothing) */
    if (!passthrough && !c->rules_file[0])
        str_copy(c->rules_file, sizeof c->rules_file, VERDICT_SOURCE_DIR "/rules/default.rules");
    if (!passthrough && !c->model_file[0])
        str_copy(c->model_file, sizeof c->model_file, VERDICT_SOURCE_DIR "/models/verdict-gbdt.json");
    c->max_keys = 100000;
}

/* with_prefix for the benches in other files (bench_durability.c) */
void bench_config_prefix(config *c, const char *prefix, bool passthrough);
void bench_config_prefix(config *c, const char *prefix, bool passthrough)
{
    with_prefix(c, prefix, passthrough);
}

/* --- throughput ------------------------------------------------------------------------------------- */

static vstatus preload_cards(jsCtx *js, const config *c, int count, uint64_t seed, int cards, verror *e)
{
    simgen_cfg gc = {.seed = seed, .start_ms = now_ms() - 3600 * 1000, .cards = cards};
    simgen *g = simgen_create(&gc);
    if (!g)
        return verror_set(e, V_ENOMEM, "out of memory");
    char subj[NAME_MAX_LEN + 16];
    snprintf(subj, sizeof subj, "%.*s.bench", (int)(strlen(c->txn_subjects) - 2), c->txn_subjects);
    unsigned char buf[2048];
    int64_t last = now_ms();
    for (int i = 0; i < count; i++) {
        Transaction t;
        simgen_next(g, &t);
        if (count >= 200000 && now_ms() - last > 2000) {
            fprintf(stderr, "[bench] preloading %d/%d\n", i, count);
            last = now_ms();
        }
        size_t n = verdict__v1__transaction__pack(&t, buf);
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = t.txn_id;
        natsStatus s = js_PublishAsync(js, subj, buf, (int)n, &po);
        if (s != NATS_OK) {
            simgen_destroy(g);
            return broker_err(e, s, 0, "preload publish failed");
        }
    }
    simgen_destroy(g);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 60000;
    natsStatus s = js_PublishAsyncComplete(js, &po);
    return s == NATS_OK ? V_OK : broker_err(e, s, 0, "preload not confirmed");
}

static vstatus preload(jsCtx *js, const config *c, int count, uint64_t seed, verror *e)
{
    return preload_cards(js, c, count, seed, 0, e);
}

/* What the shadow bench measures besides the rate: from ready to the end of the drain, CPU time of this process
 * (the engine runs in it) and of the private nats-server, and the decisions made in that time. */
typedef struct drain_extra {
    pid_t server; /* 0: not ours, not measured */
    long long shadow_decided, decisions;
    double cpu_self_us, cpu_server_us;
    double shadow_cpu_us; /* the workers' CPU in the shadow step (engine_stats.shadow_cpu_ns) */
    double user_us, sys_us; /* this process's CPU split: user and kernel */
    long long cswitches;    /* this process's context switches, voluntary and not */
} drain_extra;

static double tv_us(struct timeval tv) { return (double)tv.tv_sec * 1e6 + (double)tv.tv_usec; }

/* utime + stime of a process from /proc/PID/stat, in us; 0 if unreadable */
static double cpu_proc_us(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = pid > 0 ? fopen(path, "r") : NULL;
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) * 1e6 / (double)sysconf(_SC_CLK_TCK);
}

/* cpu_proc_us for the benches in other files (bench_scale.c) */
double bench_cpu_proc_us(pid_t pid);
double bench_cpu_proc_us(pid_t pid) { return cpu_proc_us(pid); }

/* Runs one engine over a preloaded stream and returns decisions per second. */
static double drain_rate(const bench_opts *o, const config *c, jsCtx *js, int count, const char *label,
                         drain_extra *x)
{
    engine *en = NULL;
    verror e = {0};
    int64_t t0 = now_us();
    if (engine_start(c, &en, &e) != V_OK) {
        fprintf(stderr, "bench: %s\n", e.msg);
        return 0;
    }
    const engine_stats *st = engine_get_stats(en);
    long long done0 = 0;
    double self0 = 0, server0 = 0;
    struct rusage ru0 = {0};
    if (x) {
        /* the shadow bench times from ready: a start that loads a second policy (and model) is not the cost
         * of deciding in shadow */
        t0 = now_us();
        done0 = st->decided[1] + st->decided[2] + st->decided[3];
        getrusage(RUSAGE_SELF, &ru0);
        self0 = tv_us(ru0.ru_utime) + tv_us(ru0.ru_stime);
        server0 = cpu_proc_us(x->server);
    }
    int64_t deadline = t0 + (int64_t)o->seconds * 1000000 / 2;
    int64_t last = t0;
    long long done = 0;
    while ((done = st->decided[1] + st->decided[2] + st->decided[3]) < count && now_us() < deadline) {
        sleep_us(2000);
        if (now_us() - last > 1000000) {
            fprintf(stderr, "[bench] %-12s %lld/%d\n", label, done, count);
            last = now_us();
        }
    }
    int64_t elapsed = now_us() - t0;
    if (x) {
        struct rusage ru1;
        getrusage(RUSAGE_SELF, &ru1);
        x->cpu_self_us += tv_us(ru1.ru_utime) + tv_us(ru1.ru_stime) - self0;
        x->user_us += tv_us(ru1.ru_utime) - tv_us(ru0.ru_utime);
        x->sys_us += tv_us(ru1.ru_stime) - tv_us(ru0.ru_stime);
        x->cswitches += (ru1.ru_nvcsw - ru0.ru_nvcsw) + (ru1.ru_nivcsw - ru0.ru_nivcsw);
        x->cpu_server_us += x->server ? cpu_proc_us(x->server) - server0 : 0;
        x->decisions += done - done0;
        x->shadow_decided += st->shadow_decided[1] + st->shadow_decided[2] + st->shadow_decided[3];
        x->shadow_cpu_us += (double)st->shadow_cpu_ns / 1000.0;
    }
    engine_stop(en);
    (void)js;
    double rate = elapsed > 0 ? (double)(done - done0) * 1e6 / (double)elapsed : 0;
    fprintf(stderr, "[bench] %-12s %lld in %.2f s: %.0f/s\n", label, done - done0, (double)elapsed / 1e6, rate);
    if (done0 >= count)
        fprintf(stderr, "[bench] %-12s decided all %d while starting, before the timing began: nothing measured; "
                        "use a larger --count\n", label, count);
    return rate;
}

/* Whether stream name belongs to the bench's own prefix (config_name: "BP1_TXN", a KV bucket "KV_bp1_...", an
 * object store "OBJ_bp1_..."). */
static bool bench_owned(const char *name, const char *prefix)
{
    if (strncmp(name, "KV_", 3) == 0)
        name += 3;
    else if (strncmp(name, "OBJ_", 4) == 0)
        name += 4;
    size_t n = strlen(prefix);
    if (strlen(name) <= n || name[n] != '_')
        return false;
    for (size_t i = 0; i < n; i++)
        if (name[i] != prefix[i] && name[i] != prefix[i] - 32)
            return false;
    return true;
}

/* The streams of prefixes[0..n) on the server: counted (*found), or deleted when del. */
static void bench_streams(jsCtx *js, const char *const *prefixes, int n, bool del, int *found)
{
    jsStreamNamesList *names = NULL;
    *found = 0;
    if (js_StreamNames(&names, js, NULL, NULL) != NATS_OK || !names)
        return;
    for (int i = 0; i < names->Count; i++)
        for (int k = 0; k < n; k++)
            if (bench_owned(names->List[i], prefixes[k])) {
                if (!*found && !del)
                    fprintf(stderr, "verdict bench: stream %s is already on the server (an earlier bench run that "
                                    "was interrupted?); delete it (nats stream rm %s) or use a fresh server\n",
                            names->List[i], names->List[i]);
                (*found)++;
                if (del)
                    js_DeleteStream(js, names->List[i], NULL, NULL);
                break;
            }
    jsStreamNamesList_Destroy(names);
}

/* Two sides a and b in ABBA order (a, b, b, a), each run on its own freshly preloaded stream (prefixes[i]), so
 * neither side always runs on the emptier server; rate[0] (a) and rate[1] (b) are each the mean of the side's two
 * runs. side() makes a run's configuration from o->cfg; xs: NULL, or one drain_extra per side. */
static int bench_abba(const bench_opts *o, natsConnection *nc, const char *const prefixes[4],
                      void (*side)(config *c, const char *prefix, bool b), const char *const labels[2], double rate[2],
                      drain_extra *xs)
{
    static const bool is_b[] = {false, true, true, false};
    rate[0] = rate[1] = 0;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = 4096;
    jsCtx *js = NULL;
    if (natsConnection_JetStream(&js, nc, &jo) != NATS_OK)
        return 1;
    config cs[4];
    verror e = {0};
    int found = 0;
    /* a stream left on a --nats-url server by an interrupted run would be drained already: refused, never
     * measured as 0/s (and never deleted: it is not this run's) */
    bench_streams(js, prefixes, 4, false, &found);
    if (found) {
        jsCtx_Destroy(js);
        return 1;
    }
    for (int i = 0; i < 4; i++) {
        cs[i] = o->cfg;
        side(&cs[i], prefixes[i], is_b[i]);
        if (broker_setup(&cs[i], js, &e) != V_OK || preload(js, &cs[i], o->count, 7, &e) != V_OK) {
            fprintf(stderr, "bench: %s\n", e.msg);
            bench_streams(js, prefixes, 4, true, &found);
            jsCtx_Destroy(js);
            return 1;
        }
    }
    fprintf(stderr, "[bench] preloaded %d transactions into each of 4 streams\n", o->count);
    bench_opts quarter = *o;
    quarter.seconds = o->seconds / 2 > 1 ? o->seconds / 2 : 1; /* drain_rate uses half of this: 1/4 each */
    for (int i = 0; i < 4; i++) {
        if (o->only >= 0 && o->only != (int)is_b[i])
            continue; /* --only: one side's two runs, for a profiler */
        double r = drain_rate(&quarter, &cs[i], js, o->count, labels[is_b[i]], xs ? &xs[is_b[i]] : NULL);
        rate[is_b[i]] += r / 2;
    }
    bench_streams(js, prefixes, 4, true, &found); /* this run's: nothing left behind */
    jsCtx_Destroy(js);
    return 0;
}

static void throughput_side(config *c, const char *prefix, bool full) { with_prefix(c, prefix, !full); }

#define BENCH_MAX_ROUNDS 50

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of v[0..n) (n >= 1; v is sorted in place). */
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The pass-through against the full engine, ABBA, timed from ready as the shadow bench is (what a start costs,
 * loading the model and touching the state's memory, is not the rate of deciding), with the CPU of both
 * processes beside each rate: xs[0] the pass-through, xs[1] the full engine (summed over every round). o->rounds
 * such rounds, each on fresh streams: *full, *pt and *ratio are the medians over the rounds (a burst of other
 * work on the machine moves one round, not the figure), ratios[] each round's ratio. */
static int bench_throughput(const bench_opts *o, natsConnection *nc, double *full, double *pt, double *ratio,
                            double ratios[BENCH_MAX_ROUNDS], drain_extra xs[2])
{
    static const char *const labels[] = {"passthrough", "full"};
    double f[BENCH_MAX_ROUNDS], p[BENCH_MAX_ROUNDS], r[BENCH_MAX_ROUNDS];
    int rc = 0, n = 0;
    for (int k = 0; k < o->rounds && !rc; k++) {
        char names[4][16];
        const char *prefixes[4];
        static const char *const base[] = {"bp1", "bt1", "bt2", "bp2"};
        for (int i = 0; i < 4; i++) {
            snprintf(names[i], sizeof names[i], k ? "%sr%d" : "%s", base[i], k + 1);
            prefixes[i] = names[i];
        }
        if (o->rounds > 1)
            fprintf(stderr, "[bench] throughput round %d/%d\n", k + 1, o->rounds);
        double rate[2];
        rc = bench_abba(o, nc, prefixes, throughput_side, labels, rate, xs);
        if (rc)
            break;
        p[n] = rate[0];
        f[n] = rate[1];
        r[n] = rate[0] > 0 ? rate[1] / rate[0] : 0;
        ratios[n] = r[n];
        n++;
    }
    *pt = n ? median(p, n) : 0;
    *full = n ? median(f, n) : 0;
    *ratio = n ? median(r, n) : 0;
    return rc;
}

/* The shadow candidate, unless one was given, is the live policy's rules again; the live-only side has none. */
static void shadow_side(config *c, const char *prefix, bool shadow)
{
    with_prefix(c, prefix, false);
    if (shadow && !c->shadow_rules_file[0])
        str_copy(c->shadow_rules_file, sizeof c->shadow_rules_file, c->rules_file);
    if (!shadow)
        c->shadow_rules_file[0] = c->shadow_model_file[0] = 0;
}

/* The shadow policy's cost (docs/shadow.md): the full engine alone and the same with a shadow candidate (the
 * shipped rules and model again: a candidate as costly as the live policy), ABBA on fresh streams, as above. */
static int bench_shadow(const bench_opts *o, natsConnection *nc, double *with, double *without, drain_extra xs[2])
{
    static const char *const prefixes[] = {"bl1", "bs1", "bs2", "bl2"};
    static const char *const labels[] = {"live", "live+shadow"};
    double rate[2];
    int rc = bench_abba(o, nc, prefixes, shadow_side, labels, rate, xs);
    *without = rate[0];
    *with = rate[1];
    return rc;
}

/* --- latency ------------------------------------------------------------------------------------------ */

/* One side (engine or pass-through) at one rate. Latencies are also kept per request (by intended send time), so a
 * stall shows in the per-second series and in the raw timeline (--out). */
typedef struct lat_side {
    hist h;            /* the whole run */
    hist *per_sec;     /* by the second the request was due in */
    int nsec;
    int64_t *lat;      /* per request, us; -1 until answered */
    /* per request, from the Decision in the reply (the full engine only; -1 otherwise): its JetStream store time
     * to the batch's fetch (queued_us, wall clocks) and the fetch to the decision stored (latency_us) */
    int32_t *queued, *engine_us;
    int sent, received;
    int64_t t0_us;                /* the first request's due time, wall clock (us since the epoch) */
    long long over_budget;        /* the engine's budget_exceeded: stored latency (from fetch) over the budget */
    long long client_over_budget; /* answered later than the budget after the intended send time */
    long long redeliveries, catch_ups; /* the engine's counters, for explaining a stall */
} lat_side;

static void lat_side_free(lat_side *s)
{
    free(s->per_sec);
    free(s->lat);
    free(s->queued);
    free(s->engine_us);
    memset(s, 0, sizeof *s);
}

typedef struct lat_run {
    int64_t *intended; /* per request, us */
    int64_t t0;
    int total;
    int64_t budget_us;
    atomic_int received;
    lat_side *side;
    pthread_mutex_t mu;
} lat_run;

static void on_reply(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc;
    (void)sub;
    lat_run *r = closure;
    int64_t now = now_us();
    const char *subj = natsMsg_GetSubject(m);
    const char *dot = strrchr(subj, '.');
    long i = dot ? strtol(dot + 1, NULL, 10) : -1;
    if (i >= 0 && i < r->total) {
        pthread_mutex_lock(&r->mu);
        lat_side *s = r->side;
        int64_t v = now - r->intended[i];
        if (s->lat[i] < 0) {
            s->lat[i] = v;
            Decision *d = verdict__v1__decision__unpack(NULL, (size_t)natsMsg_GetDataLength(m),
                                                         (const uint8_t *)natsMsg_GetData(m));
            if (d && d->txn_id && d->txn_id[0]) { /* the pass-through replies with the transaction itself */
                s->queued[i] = (int32_t)(d->queued_us < INT32_MAX ? d->queued_us : INT32_MAX);
                s->engine_us[i] = (int32_t)(d->latency_us < INT32_MAX ? d->latency_us : INT32_MAX);
            }
            verdict__v1__decision__free_unpacked(d, NULL);
            hist_record(&s->h, v);
            int sec = (int)((r->intended[i] - r->t0) / 1000000);
            hist_record(&s->per_sec[sec < s->nsec ? sec : s->nsec - 1], v);
            if (v > r->budget_us)
                s->client_over_budget++;
        }
        pthread_mutex_unlock(&r->mu);
        atomic_fetch_add(&r->received, 1);
    }
    natsMsg_Destroy(m);
}

/* Open loop: request i is due at t0 + i/rate whatever happened to earlier ones, and its latency is measured
 * from that intended time, so a stall is charged to every request it delayed (coordinated omission). */
static int latency_run(const config *c, natsConnection *nc, int rate, int seconds, uint64_t seed, const char *label,
                       lat_side *out)
{
    memset(out, 0, sizeof *out);
    engine *en = NULL;
    verror e = {0};
    if (engine_start(c, &en, &e) != V_OK) {
        fprintf(stderr, "bench: %s\n", e.msg);
        return 1;
    }
    lat_run r;
    memset(&r, 0, sizeof r);
    r.total = rate * seconds;
    r.budget_us = c->budget_ms * 1000;
    r.side = out;
    hist_reset(&out->h);
    out->nsec = seconds;
    out->per_sec = malloc((size_t)seconds * sizeof *out->per_sec);
    out->lat = malloc((size_t)r.total * sizeof *out->lat);
    out->queued = malloc((size_t)r.total * sizeof *out->queued);
    out->engine_us = malloc((size_t)r.total * sizeof *out->engine_us);
    pthread_mutex_init(&r.mu, NULL);
    r.intended = calloc((size_t)r.total, sizeof *r.intended);
    char inbox[64], wildcard[80];
    snprintf(inbox, sizeof inbox, "_INBOX.bench.%s", label);
    snprintf(wildcard, sizeof wildcard, "%s.*", inbox);
    natsSubscription *sub = NULL;
    simgen_cfg gc = {.seed = seed, .start_ms = now_ms() - 3600 * 1000};
    simgen *g = simgen_create(&gc);
    if (!out->per_sec || !out->lat || !out->queued || !out->engine_us || !r.intended || !g ||
        natsConnection_Subscribe(&sub, nc, wildcard, on_reply, &r) != NATS_OK ||
        natsSubscription_SetPendingLimits(sub, -1, -1) != NATS_OK || natsConnection_Flush(nc) != NATS_OK) {
        fprintf(stderr, "bench: cannot set up the latency client\n");
        natsSubscription_Destroy(sub);
        simgen_destroy(g);
        free(r.intended);
        engine_stop(en);
        lat_side_free(out);
        return 1;
    }
    for (int i = 0; i < seconds; i++)
        hist_reset(&out->per_sec[i]);
    for (int i = 0; i < r.total; i++) {
        out->lat[i] = -1;
        out->queued[i] = out->engine_us[i] = -1;
    }
    unsigned char buf[2048];
    /* the first request is due 200 ms after the engine is ready; every request is measured */
    r.t0 = now_us() + 200000;
    int sent = 0;
    int64_t last = now_us();
    for (int i = 0; i < r.total; i++) {
        Transaction t;
        simgen_next(g, &t);
        size_t n = verdict__v1__transaction__pack(&t, buf);
        int64_t due = r.t0 + (int64_t)i * 1000000 / rate;
        sleep_us(due - now_us());
        r.intended[i] = due;
        char reply[96];
        snprintf(reply, sizeof reply, "%s.%d", inbox, i);
        if (natsConnection_PublishRequest(nc, c->decide_subject, reply, buf, (int)n) == NATS_OK)
            sent++;
        if (now_us() - last > 5000000) {
            fprintf(stderr, "[bench] %-12s sent %d/%d at %d/s\n", label, sent, r.total, rate);
            last = now_us();
        }
    }
    natsConnection_Flush(nc);
    for (int waited = 0; waited < 3000 && atomic_load(&r.received) < sent; waited += 10)
        sleep_us(10000);
    const engine_stats *st = engine_get_stats(en);
    out->over_budget = atomic_load(&st->budget_exceeded);
    out->redeliveries = atomic_load(&st->redeliveries);
    out->catch_ups = atomic_load(&st->sequence_catch_ups);
    /* drained: no reply callback runs after this, so out and r are ours again */
    if (natsSubscription_Drain(sub) != NATS_OK || natsSubscription_WaitForDrainCompletion(sub, 2000) != NATS_OK)
        natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
    engine_stop(en);
    simgen_destroy(g);
    pthread_mutex_destroy(&r.mu);
    out->sent = sent;
    out->received = atomic_load(&r.received);
    out->t0_us = r.t0;
    free(r.intended);
    return 0;
}

typedef struct lat_result {
    int rate, seconds;
    lat_side d, b; /* decide (the full engine), baseline (the pass-through) */
} lat_result;

/* The largest per-second p99 and the second it was in. */
static int64_t worst_second(const lat_side *s, int *at)
{
    int64_t w = 0;
    *at = 0;
    for (int i = 0; i < s->nsec; i++) {
        int64_t v = hist_quantile(&s->per_sec[i], 0.99);
        if (v > w) {
            w = v;
            *at = i;
        }
    }
    return w;
}

/* The quantiles of the percentile curve: 0.5, then 1 - 10^(-k/10) up to 99.999%. */
static double curve_q(int k)
{
    double q = 1.0;
    for (int i = 0; i < k; i++)
        q /= 1.2589254117941673; /* 10^(1/10) */
    return 1.0 - 0.5 * q;
}
#define CURVE_POINTS 44 /* 1 - 0.5 * 10^(-43/10) > 0.99997 */

/* --- the highest rate the pass-through sustains (`max` in --rates) -------------------------------------- */

#define RAMP_SECONDS 5

typedef struct ramp_probe {
    int rate, seconds, answered, sent;
    int64_t p99_us;
} ramp_probe;

/* The next probe's rate: a quarter more, rounded to a hundred, at most cap. */
static int ramp_next(int rate, int cap)
{
    int next = (rate + rate / 4 + 50) / 100 * 100;
    return next > cap ? cap : next;
}

/* Short open-loop runs of the pass-through alone, from RAMP_FIRST requests/s up by a quarter each, until one does
 * not sustain its rate: every request answered and its p99 within the budget (a payment service's deadline), or
 * the rate reaches cap. *sustained is the last rate that held (0: not even the first). Each probe on fresh streams
 * and a fresh pass-through, like every latency run. */
static int find_sustained(const config *base, natsConnection *nc, int seconds, int cap, ramp_probe *probes, int *n,
                          int *sustained)
{
    *n = 0;
    *sustained = 0;
    int64_t budget_us = base->budget_ms * 1000;
    jsCtx *js = NULL;
    if (natsConnection_JetStream(&js, nc, NULL) != NATS_OK) {
        fprintf(stderr, "bench: cannot set up JetStream for the ramp\n");
        return 1;
    }
    int rc = 0;
    for (int rate = RAMP_FIRST < cap ? RAMP_FIRST : cap; *n < RAMP_STEPS; rate = ramp_next(rate, cap)) {
        char prefix[16];
        snprintf(prefix, sizeof prefix, "lm%d", *n);
        config cp = *base;
        with_prefix(&cp, prefix, true);
        lat_side side;
        fprintf(stderr, "[bench] ramp: pass-through at %d/s for %d s\n", rate, seconds);
        if (latency_run(&cp, nc, rate, seconds, 91 + (uint64_t)*n, "ramp", &side) != 0) {
            rc = 1;
            break;
        }
        ramp_probe *p = &probes[(*n)++];
        *p = (ramp_probe){.rate = rate,
                          .seconds = seconds,
                          .answered = side.received,
                          .sent = side.sent,
                          .p99_us = hist_quantile(&side.h, 0.99)};
        lat_side_free(&side);
        /* a probe's streams go with it: the measured runs after the ramp find the server as they would without */
        const char *mine[] = {prefix};
        int found = 0;
        bench_streams(js, mine, 1, true, &found);
        bool held = p->sent == rate * seconds && p->answered == p->sent && p->p99_us <= budget_us;
        fprintf(stderr, "[bench] ramp: %d/s p99 %.1f ms, %d/%d answered: %s\n", rate, (double)p->p99_us / 1000.0,
                p->answered, p->sent, held ? "sustained" : "not sustained");
        if (!held)
            break;
        *sustained = rate;
        if (rate >= cap)
            break;
    }
    jsCtx_Destroy(js);
    return rc;
}

/* For the plots (tools/bench-plot) and for hunting stalls: per rate, the per-second series, the percentile curve
 * and the raw timeline of both sides. */
static int latency_write(const char *dir, const lat_result *lr)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/latency-%d-series.tsv", dir, lr->rate);
    FILE *f = fopen(path, "w");
    if (!f)
        return 1;
    fprintf(f, "# second\tdecide_p99_us\tbaseline_p99_us\tdecide_max_us\tbaseline_max_us\tdecide_n\tbaseline_n\n");
    for (int i = 0; i < lr->seconds; i++)
        fprintf(f, "%d\t%lld\t%lld\t%lld\t%lld\t%llu\t%llu\n", i, (long long)hist_quantile(&lr->d.per_sec[i], 0.99),
                (long long)hist_quantile(&lr->b.per_sec[i], 0.99), (long long)lr->d.per_sec[i].max,
                (long long)lr->b.per_sec[i].max, (unsigned long long)lr->d.per_sec[i].total,
                (unsigned long long)lr->b.per_sec[i].total);
    fclose(f);
    snprintf(path, sizeof path, "%s/latency-%d-percentiles.tsv", dir, lr->rate);
    if (!(f = fopen(path, "w")))
        return 1;
    fprintf(f, "# quantile\tone_in (1/(1-q))\tdecide_us\tbaseline_us\n");
    for (int k = 0; k < CURVE_POINTS; k++) {
        double q = curve_q(k);
        fprintf(f, "%.6f\t%.1f\t%lld\t%lld\n", q, 1.0 / (1.0 - q), (long long)hist_quantile(&lr->d.h, q),
                (long long)hist_quantile(&lr->b.h, q));
    }
    fprintf(f, "1.000000\t%.1f\t%lld\t%lld\n", 2.0 / (1.0 - curve_q(CURVE_POINTS - 1)), (long long)lr->d.h.max,
            (long long)lr->b.h.max);
    fclose(f);
    snprintf(path, sizeof path, "%s/latency-%d-timeline.tsv", dir, lr->rate);
    if (!(f = fopen(path, "w")))
        return 1;
    /* each side's first due time on the wall clock: lines the timeline up with other clocks (a server's log) */
    fprintf(f, "# t0_unix_us decide=%lld baseline=%lld (each side's first request due; due_ms counts from it)\n",
            (long long)lr->d.t0_us, (long long)lr->b.t0_us);
    fprintf(f, "# request\tdue_ms (from the first)\tdecide_us\tbaseline_us (-1: no answer)\t"
               "decide_queued_us (store to fetch)\tdecide_engine_us (fetch to stored)\n");
    int n = lr->rate * lr->seconds;
    for (int i = 0; i < n; i++)
        fprintf(f, "%d\t%.3f\t%lld\t%lld\t%d\t%d\n", i, (double)i * 1000.0 / lr->rate, (long long)lr->d.lat[i],
                (long long)lr->b.lat[i], lr->d.queued[i], lr->d.engine_us[i]);
    fclose(f);
    return 0;
}

static void latency_print(const lat_result *lr, int64_t budget_ms)
{
    const lat_side *s[2] = {&lr->d, &lr->b};
    const char *name[2] = {"decide", "baseline"};
    printf("  latency      %d/s open loop for %d s each, us from the intended send time\n", lr->rate, lr->seconds);
    for (int k = 0; k < 2; k++) {
        int at;
        int64_t w = worst_second(s[k], &at);
        printf("    %-9s p50 %7lld  p99 %7lld  p99.9 %7lld  max %7lld  (%d/%d answered; worst second %d: p99 %lld)\n",
               name[k], (long long)hist_quantile(&s[k]->h, 0.5), (long long)hist_quantile(&s[k]->h, 0.99),
               (long long)hist_quantile(&s[k]->h, 0.999), (long long)s[k]->h.max, s[k]->received, s[k]->sent, at,
               (long long)w);
    }
    printf("    over the %lld ms budget: %lld decisions by their stored latency, %lld requests end to end "
           "(pass-through: %lld)\n",
           (long long)budget_ms, lr->d.over_budget, lr->d.client_over_budget, lr->b.client_over_budget);
    int64_t bp99 = hist_quantile(&lr->b.h, 0.99), bp999 = hist_quantile(&lr->b.h, 0.999);
    printf("    ratio p99 %.2f (target <= 1.5)  p99.9 %.2f (target <= 2)\n",
           bp99 ? (double)hist_quantile(&lr->d.h, 0.99) / (double)bp99 : 0,
           bp999 ? (double)hist_quantile(&lr->d.h, 0.999) / (double)bp999 : 0);
    for (int k = 0; k < 2; k++) {
        printf("    %-9s p99 by second (ms):", name[k]);
        for (int i = 0; i < s[k]->nsec; i++)
            printf("%s%.1f", i && i % 20 == 0 ? "\n                                 " : " ",
                   (double)hist_quantile(&s[k]->per_sec[i], 0.99) / 1000.0);
        printf("\n");
    }
}

/* The keys of one rate (today's single-rate keys and the additions of issue 16). */
static void latency_json(const lat_result *lr)
{
    const hist *d = &lr->d.h, *b = &lr->b.h;
    int64_t bp99 = hist_quantile(b, 0.99), bp999 = hist_quantile(b, 0.999);
    int ad, ab;
    int64_t wd = worst_second(&lr->d, &ad), wb = worst_second(&lr->b, &ab);
    printf("\"rate\":%d,\"seconds\":%d,\"decide_p50_us\":%lld,\"decide_p99_us\":%lld,\"decide_p999_us\":%lld,"
           "\"decide_max_us\":%lld,\"baseline_p50_us\":%lld,\"baseline_p99_us\":%lld,\"baseline_p999_us\":%lld,"
           "\"baseline_max_us\":%lld,\"ratio_p99\":%.3f,\"ratio_p999\":%.3f,\"over_budget\":%lld,"
           "\"client_over_budget\":%lld,\"baseline_client_over_budget\":%lld,\"decide_worst_second_p99_us\":%lld,"
           "\"baseline_worst_second_p99_us\":%lld,\"answered\":%d,\"sent\":%d,\"baseline_answered\":%d,"
           "\"baseline_sent\":%d,\"redeliveries\":%lld,\"sequence_catch_ups\":%lld",
           lr->rate, lr->seconds, (long long)hist_quantile(d, 0.5), (long long)hist_quantile(d, 0.99),
           (long long)hist_quantile(d, 0.999), (long long)d->max, (long long)hist_quantile(b, 0.5), (long long)bp99,
           (long long)bp999, (long long)b->max, bp99 ? (double)hist_quantile(d, 0.99) / (double)bp99 : 0,
           bp999 ? (double)hist_quantile(d, 0.999) / (double)bp999 : 0, lr->d.over_budget,
           lr->d.client_over_budget, lr->b.client_over_budget, (long long)wd, (long long)wb, lr->d.received,
           lr->d.sent, lr->b.received, lr->b.sent, lr->d.redeliveries, lr->d.catch_ups);
}

/* "500,2000,5000" into rates; false (with a message) on anything else. */
static bool parse_rates(const char *list, int *rates, int cap, int *n)
{
    char buf[256];
    *n = 0;
    if (strlen(list) >= sizeof buf) {
        fprintf(stderr, "verdict bench: --rates list too long\n");
        return false;
    }
    str_copy(buf, sizeof buf, list);
    bool have_max = false;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (strcmp(t, "max") == 0 && !have_max && *n < cap) {
            have_max = true;
            rates[(*n)++] = RATE_MAX;
            continue;
        }
        char *end;
        long v = strtol(t, &end, 10);
        if (end == t || *end || v <= 0 || v > 100000 || *n >= cap) {
            fprintf(stderr,
                    "verdict bench: --rates: '%s' is not a rate (1..100000 requests/s, or max once; at most %d "
                    "rates)\n",
                    t, cap);
            return false;
        }
        rates[(*n)++] = (int)v;
    }
    if (*n == 0)
        fprintf(stderr, "verdict bench: --rates needs at least one rate\n");
    return *n > 0;
}

/* --- restart ------------------------------------------------------------------------------------------ */

/* The consumer as an engine leaves it after deciding everything up to seq: delivered and acked to there. */
static vstatus consumer_at(jsCtx *js, const config *c, uint64_t seq, verror *e)
{
    jsErrCode jerr = 0;
    natsStatus s = js_DeleteConsumer(js, c->txn_stream, c->consumer, NULL, &jerr);
    if (s != NATS_OK && s != NATS_NOT_FOUND)
        return broker_err(e, s, jerr, "cannot reset the bench consumer");
    return broker_consumer_create(c, js, seq + 1, e);
}

/* Seconds from engine_start to ready (engine_start returns ready), or -1. */
static double time_to_ready(const config *c, bool keep, engine **out)
{
    engine *en = NULL;
    verror e = {0};
    int64_t t0 = now_us();
    if (engine_start(c, &en, &e) != V_OK) {
        fprintf(stderr, "bench: %s\n", e.msg);
        return -1;
    }
    double s = (double)(now_us() - t0) / 1e6;
    if (keep)
        *out = en;
    else
        engine_stop(en);
    return s;
}

typedef struct restart_row {
    int count;
    double full_s, snap_s;
    long long snap_bytes, keys;
    int after;
} restart_row;

/* Time to ready after a restart with `count` transactions in the window: without a snapshot (the full rebuild),
 * and from a snapshot followed by a minute of traffic at 1,000/s (what an engine with the default 60 s interval
 * replays at worst). */
static int restart_one(const bench_opts *o, jsCtx *js, int idx, int count, restart_row *row)
{
    char prefix[16];
    snprintf(prefix, sizeof prefix, "rs%d", idx);
    config c = o->cfg;
    with_prefix(&c, prefix, false);
    c.max_keys = o->cfg.max_keys > 0 ? o->cfg.max_keys : 1000000;
    c.snapshot_interval_ms = 0;
    int cards = count / 10 < 2000 ? 2000 : count / 10;
    verror e = {0};
    *row = (restart_row){.count = count, .after = 60000};
    if (broker_setup(&c, js, &e) != V_OK || preload_cards(js, &c, count, 21 + (uint64_t)idx, cards, &e) != V_OK ||
        consumer_at(js, &c, (uint64_t)count, &e) != V_OK) {
        fprintf(stderr, "bench: %s\n", e.msg);
        return 1;
    }
    fprintf(stderr, "[bench] %d transactions in the window; restarting without a snapshot\n", count);
    if ((row->full_s = time_to_ready(&c, false, NULL)) < 0)
        return 1;
    /* an engine that checkpoints: its start rebuilds (no snapshot yet), then it saves one */
    c.snapshot_interval_ms = 1000;
    engine *en = NULL;
    if (time_to_ready(&c, true, &en) < 0)
        return 1;
    const engine_stats *st = engine_get_stats(en);
    for (int i = 0; i < 600 && atomic_load(&st->snapshots) == 0; i++)
        sleep_us(100000);
    long long saved = atomic_load(&st->snapshots);
    velocity_stats_t vs;
    if (engine_state_stats(en, &vs))
        row->keys = (long long)vs.keys;
    engine_stop(en);
    if (!saved) {
        fprintf(stderr, "bench: no snapshot was saved\n");
        return 1;
    }
    snapshot_info *list = NULL;
    int n = 0;
    if (snapshot_list(js, &c, &list, &n, &e) == V_OK && n > 0)
        row->snap_bytes = (long long)list[0].size;
    free(list);
    /* a minute of traffic after the snapshot, delivered before the restart */
    if (preload_cards(js, &c, row->after, 99 + (uint64_t)idx, cards, &e) != V_OK ||
        consumer_at(js, &c, (uint64_t)count + (uint64_t)row->after, &e) != V_OK) {
        fprintf(stderr, "bench: %s\n", e.msg);
        return 1;
    }
    fprintf(stderr, "[bench] restarting from the snapshot (+%d transactions after it)\n", row->after);
    c.snapshot_interval_ms = 60000;
    if ((row->snap_s = time_to_ready(&c, false, NULL)) < 0)
        return 1;
    return 0;
}

static int bench_restart(const bench_opts *o, natsConnection *nc, const char *counts)
{
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = 4096;
    jo.PublishAsync.StallWait = 30000; /* millions preloaded: a busy server may pause the PubAcks for seconds */
    jsCtx *js = NULL;
    if (natsConnection_JetStream(&js, nc, &jo) != NATS_OK)
        return 1;
    restart_row rows[8];
    int nrows = 0, rc = 0;
    char list[128];
    str_copy(list, sizeof list, counts);
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t && nrows < 8; t = strtok_r(NULL, ",", &save)) {
        char *end;
        long n = strtol(t, &end, 10);
        if (*end || n <= 0 || n > 100000000) {
            fprintf(stderr, "verdict bench restart: '%s' is not a transaction count\n", t);
            rc = 2;
            break;
        }
        if ((rc = restart_one(o, js, nrows, (int)n, &rows[nrows])) != 0)
            break;
        nrows++;
    }
    jsCtx_Destroy(js);
    printf("\n  verdict bench restart: time to ready after a restart (%d workers)\n", o->cfg.workers);
    printf("  ------------------------------------------------------------------------------------\n");
    printf("  %12s %10s %16s %12s %14s\n", "in window", "keys", "no snapshot (s)", "snapshot (s)", "snapshot MB");
    for (int i = 0; i < nrows; i++)
        printf("  %12d %10lld %16.2f %12.2f %14.1f\n", rows[i].count, rows[i].keys, rows[i].full_s, rows[i].snap_s,
               (double)rows[i].snap_bytes / 1e6);
    printf("  (snapshot: the newest, then %d transactions after it replayed)\n", nrows ? rows[0].after : 0);
    if (o->json) {
        printf("{\"bench\":\"restart\",\"runs\":[");
        for (int i = 0; i < nrows; i++)
            printf("%s{\"in_window\":%d,\"keys\":%lld,\"no_snapshot_s\":%.3f,\"snapshot_s\":%.3f,\"snapshot_bytes\":%lld,"
                   "\"after_snapshot\":%d}",
                   i ? "," : "", rows[i].count, rows[i].keys, rows[i].full_s, rows[i].snap_s, rows[i].snap_bytes,
                   rows[i].after);
        printf("]}\n");
    }
    return rc;
}

/* --- command ------------------------------------------------------------------------------------------ */

/* --out: the directory, with its parents, made before any run (a run of minutes must not end in "cannot write");
 * false, with the reason on stderr, when it cannot be. */
static bool make_out_dir(const char *dir)
{
    char p[4096];
    if (!str_copy(p, sizeof p, dir) || !p[0]) {
        fprintf(stderr, "verdict bench: --out: the directory name is empty or too long\n");
        return false;
    }
    for (char *c = p + 1;; c++) {
        bool end = *c == 0;
        if (*c == '/' || end) {
            *c = 0;
            struct stat st;
            const char *why = NULL;
            if (mkdir(p, 0755) != 0 && errno != EEXIST)
                why = strerror(errno);
            else if (stat(p, &st) != 0)
                why = strerror(errno);
            else if (!S_ISDIR(st.st_mode))
                why = strerror(ENOTDIR);
            if (why) {
                fprintf(stderr, "verdict bench: --out %s: cannot use %s: %s\n", dir, p, why);
                return false;
            }
            if (end)
                return true;
            *c = '/';
        }
    }
}

static void bench_help(void)
{
    printf("usage: verdict bench [throughput|latency|all|restart|shadow] [--seconds N] [--count N] [--rate R | --rates "
           "LIST]\n"
           "                     [--out DIR] [--json] [options]\n"
           "       verdict bench state|snapshot|eval|model [--help]   (no broker)\n"
           "       verdict bench durability [--help]   (fsync policy, R1 and R3, on its own servers)\n"
           "       verdict bench failover|scale [--help]   (hot standby; partitioned engines: rate, failover)\n\n"
           "Measures the engine against a bare JetStream baseline in the same run (docs/benchmarks.md):\n"
           "  throughput  decisions/s draining a preloaded stream, vs a pass-through (same pull, republish\n"
           "              with msg-id, ack; no decision logic), in --rounds ABBA rounds on fresh streams; each\n"
           "              figure is the rounds' median. Keys: decisions_per_s, passthrough_per_s, ratio,\n"
           "              rounds, ratio_rounds (each round's ratio),\n"
           "              CPU per decision: engine_cpu_us, server_cpu_us, engine_user_us, engine_sys_us,\n"
           "              engine_cswitches, and the same with passthrough_\n"
           "  latency     open-loop decide requests at each rate for --seconds (default 30) through the full engine\n"
           "              and the same round trip through the pass-through, measured from each request's intended\n"
           "              send time: p50, p99, p99.9, max, decisions over the budget, p99 by second. Keys:\n"
           "              decide_p50_us, decide_p99_us, decide_p999_us, decide_max_us, baseline_p50_us,\n"
           "              baseline_p99_us, baseline_p999_us, baseline_max_us, ratio_p99, over_budget (of the first\n"
           "              rate), and latency_runs: the same per rate\n"
           "  shadow      decisions/s of the full engine alone and with a shadow policy (--shadow-rules, default\n"
           "              the same rules: a candidate as costly as live), ABBA. Keys: live_per_s, live_shadow_per_s,\n"
           "              shadow_ratio (target >= 0.9), live_cpu_us and live_shadow_cpu_us (engine + private\n"
           "              server CPU per decision), cpu_ratio, shadow_step_cpu_us, shadow_decisions\n"
           "  restart     seconds from start to ready with N transactions in the window (--counts, default\n"
           "              100000,1000000): a full rebuild, and from a snapshot plus a minute (60,000) after it\n"
           "Starts a private nats-server unless --nats-url is given. --seconds bounds throughput (default 20) and\n"
           "is each latency run's length per side and rate (default 30).\n\n"
           "  --count N       transactions preloaded for throughput (default 20000), into each of 4 streams a round\n"
           "  --rounds N      throughput rounds (default 3, at most 50)\n"
           "  --rate R        requests per second for latency (default 500)\n"
           "  --rates LIST    several rates, one after the other, e.g. 500,2000,5000; max = the highest rate\n"
           "                  the pass-through sustains (every request answered, p99 within --budget), found\n"
           "                  first by a ramp of 5 s pass-through runs (--seconds if shorter) from 1000/s up\n"
           "                  by a quarter (keys sustained_rate, sustained_probes), then measured like the others\n"
           "  --max-rate R    the ramp's highest probe (default 100000)\n"
           "  --only SIDE     throughput: run only one side, full or passthrough (to profile it, e.g. under\n"
           "                  perf record); no ratio then\n"
           "  --out DIR       latency: write per rate latency-R-series.tsv (p99 and max by second),\n"
           "                  latency-R-percentiles.tsv and latency-R-timeline.tsv (every request) into DIR,\n"
           "                  made with its parents if missing (before any run)\n"
           "  --json          print one JSON object on the last line\n\n"
           "engine options (flag, then its environment variable):\n");
    config_print_help(stdout, "serve");
}

int cmd_bench(int argc, char **argv)
{
    bench_opts o = {
        .seconds = 0, .count = 20000, .rates = {500}, .nrates = 1, .only = -1, .rounds = 3, .max_rate = RAMP_CAP};
    const char *counts = "100000,1000000";
    for (int i = 1; i < argc && argv[i][0] != '-'; i++) { /* broker-free benches have their own options */
        if (!strcmp(argv[i], "state"))
            return bench_state(argc, argv);
        if (!strcmp(argv[i], "snapshot"))
            return bench_snapshot(argc, argv);
        if (!strcmp(argv[i], "eval"))
            return bench_eval(argc, argv);
        if (!strcmp(argv[i], "model"))
            return bench_model(argc, argv);
        if (!strcmp(argv[i], "failover"))
            return bench_failover(argc, argv);
        if (!strcmp(argv[i], "scale")) /* partitioned engines, its own server and options */
            return bench_scale(argc, argv);
        if (!strcmp(argv[i], "durability")) /* its own servers and options */
            return bench_durability(argc, argv);
    }
    config_defaults(&o.cfg);
    bool help;
    int rest[64], nrest = 0;
    verror e = {0};
    if (argc > 64 || config_parse(&o.cfg, argc, argv, &help, rest, &nrest, &e) != V_OK) {
        fprintf(stderr, "verdict bench: %s\n", e.msg[0] ? e.msg : "too many arguments");
        return 2;
    }
    const char *what = "all";
    bool url_given = getenv("VERDICT_NATS_URL") != NULL;
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], "--nats-url", 10) == 0)
            url_given = true;
    for (int k = 0; k < nrest; k++) {
        const char *a = argv[rest[k]];
        const char *v = k + 1 < nrest ? argv[rest[k + 1]] : NULL;
        if (strcmp(a, "--json") == 0)
            o.json = true;
        else if (strcmp(a, "--seconds") == 0 && v && atoi(v) > 0) {
            o.seconds = atoi(v);
            k++;
        } else if (strcmp(a, "--count") == 0 && v && atoi(v) > 0) {
            o.count = atoi(v);
            k++;
        } else if (strcmp(a, "--rate") == 0 && v && atoi(v) > 0) {
            o.rates[0] = atoi(v);
            o.nrates = 1;
            k++;
        } else if (strcmp(a, "--rates") == 0 && v) {
            if (!parse_rates(v, o.rates, BENCH_MAX_RATES, &o.nrates))
                return 2;
            k++;
        } else if (strcmp(a, "--rounds") == 0) {
            if (!v || atoi(v) < 1 || atoi(v) > BENCH_MAX_ROUNDS) {
                fprintf(stderr, "verdict bench: --rounds takes a number from 1 to %d\n", BENCH_MAX_ROUNDS);
                return 2;
            }
            o.rounds = atoi(v);
            k++;
        } else if (strcmp(a, "--only") == 0) {
            if (!v || (strcmp(v, "full") && strcmp(v, "passthrough"))) {
                fprintf(stderr, "verdict bench: --only takes full or passthrough\n");
                return 2;
            }
            o.only = strcmp(v, "full") == 0;
            k++;
        } else if (strcmp(a, "--out") == 0 && v) {
            o.out_dir = v;
            k++;
        } else if (strcmp(a, "--max-rate") == 0) {
            char *end = NULL;
            long mr = v ? strtol(v, &end, 10) : 0;
            if (!v || end == v || *end || mr < 1 || mr > RAMP_CAP) {
                fprintf(stderr, "verdict bench: --max-rate takes a rate from 1 to %d requests/s\n", RAMP_CAP);
                return 2;
            }
            o.max_rate = (int)mr;
            k++;
        } else if (strcmp(a, "--counts") == 0 && v) {
            counts = v;
            k++;
        } else if (a[0] != '-' && (!strcmp(a, "throughput") || !strcmp(a, "latency") || !strcmp(a, "all") ||
                                   !strcmp(a, "restart") || !strcmp(a, "shadow")))
            what = a;
        else {
            fprintf(stderr, "verdict bench: unknown option or bench '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (help) {
        bench_help();
        return 0;
    }
    if (o.out_dir && !make_out_dir(o.out_dir))
        return 2;
    log_set_quiet(1);
    localserver ls = {0};
    if (!url_given) {
        if (localserver_start(&ls, &e) != V_OK) {
            fprintf(stderr, "verdict bench: %s\n", e.msg);
            return 1;
        }
        str_copy(o.cfg.nats_url, sizeof o.cfg.nats_url, ls.url);
        fprintf(stderr, "[bench] private nats-server on %s\n", ls.url);
    }
    natsConnection *nc = NULL;
    if (broker_connect_simple(&o.cfg, &nc, &e) != V_OK) {
        fprintf(stderr, "verdict bench: %s\n", e.msg);
        if (!url_given)
            localserver_stop(&ls);
        return 1;
    }
    int rc = 0;
    if (!strcmp(what, "restart")) {
        rc = bench_restart(&o, nc, counts);
        natsConnection_Destroy(nc);
        nats_Close();
        if (!url_given)
            localserver_stop(&ls);
        return rc;
    }
    if (!strcmp(what, "shadow")) {
        double with = 0, without = 0;
        drain_extra xs[2] = {{.server = url_given ? 0 : ls.pid}, {.server = url_given ? 0 : ls.pid}};
        bench_opts so = o;
        so.seconds = o.seconds ? o.seconds : 20;
        rc = bench_shadow(&so, nc, &with, &without, xs);
        if (!rc) {
            /* CPU per decision, engine and server: steadier than rates on a shared machine (docs/shadow.md) */
            double cpu[2];
            for (int k = 0; k < 2; k++)
                cpu[k] = xs[k].decisions ? (xs[k].cpu_self_us + xs[k].cpu_server_us) / (double)xs[k].decisions : 0;
            printf("\n  verdict bench shadow (%d workers, batch %d)\n", o.cfg.workers, o.cfg.batch);
            printf("  ------------------------------------------------------------\n");
            printf("  live only      %10.0f decisions/s  %6.1f us CPU per decision (engine %.1f + server %.1f)\n",
                   without, cpu[0], xs[0].decisions ? xs[0].cpu_self_us / (double)xs[0].decisions : 0,
                   xs[0].decisions ? xs[0].cpu_server_us / (double)xs[0].decisions : 0);
            printf("  live + shadow  %10.0f decisions/s  %6.1f us CPU per decision (engine %.1f + server %.1f)\n",
                   with, cpu[1], xs[1].decisions ? xs[1].cpu_self_us / (double)xs[1].decisions : 0,
                   xs[1].decisions ? xs[1].cpu_server_us / (double)xs[1].decisions : 0);
            double step = xs[1].shadow_decided ? xs[1].shadow_cpu_us / (double)xs[1].shadow_decided : 0;
            printf("                 %lld shadow decisions, %.2f us worker CPU each in the shadow step (%.1f%% of\n"
                   "                 the live-only CPU per decision)\n",
                   xs[1].shadow_decided, step, cpu[0] > 0 ? 100.0 * step / cpu[0] : 0);
            printf("  ratio          %10.2f  (target >= 0.9); CPU per decision %.2f\n",
                   without > 0 ? with / without : 0, cpu[1] > 0 ? cpu[0] / cpu[1] : 0);
            if (o.json)
                printf("{\"bench\":\"shadow\",\"workers\":%d,\"batch\":%d,\"live_per_s\":%.0f,"
                       "\"live_shadow_per_s\":%.0f,\"shadow_ratio\":%.3f,\"live_cpu_us\":%.2f,"
                       "\"live_shadow_cpu_us\":%.2f,\"cpu_ratio\":%.3f,\"shadow_step_cpu_us\":%.3f,"
                       "\"shadow_decisions\":%lld}\n",
                       o.cfg.workers, o.cfg.batch, without, with, without > 0 ? with / without : 0, cpu[0], cpu[1],
                       cpu[1] > 0 ? cpu[0] / cpu[1] : 0, step, xs[1].shadow_decided);
        }
        natsConnection_Destroy(nc);
        nats_Close();
        if (!url_given)
            localserver_stop(&ls);
        return rc;
    }
    bool do_tp = !strcmp(what, "throughput") || !strcmp(what, "all");
    bool do_lat = !strcmp(what, "latency") || !strcmp(what, "all");
    double full = 0, pt = 0, ratio = 0, ratios[BENCH_MAX_ROUNDS] = {0};
    int tp_seconds = o.seconds ? o.seconds : 20, lat_seconds = o.seconds ? o.seconds : 30;
    /* CPU per decision of this process (the engine runs in it) and of the private server: [0] the full engine,
     * [1] the pass-through */
    drain_extra xt[2] = {{.server = url_given ? 0 : ls.pid}, {.server = url_given ? 0 : ls.pid}};
    double cpu_engine[2] = {0}, cpu_server[2] = {0}, cpu_user[2] = {0}, cpu_sys[2] = {0}, csw[2] = {0};
    if (do_tp) {
        bench_opts to = o;
        to.seconds = tp_seconds;
        rc |= bench_throughput(&to, nc, &full, &pt, &ratio, ratios, xt);
        if (rc)
            fprintf(stderr, "verdict bench: throughput not measured\n");
        for (int k = 0; k < 2; k++) {
            const drain_extra *x = &xt[1 - k];
            if (x->decisions > 0) {
                cpu_engine[k] = x->cpu_self_us / (double)x->decisions;
                cpu_server[k] = x->cpu_server_us / (double)x->decisions;
                cpu_user[k] = x->user_us / (double)x->decisions;
                cpu_sys[k] = x->sys_us / (double)x->decisions;
                csw[k] = (double)x->cswitches / (double)x->decisions;
            }
        }
    }
    lat_result lr[BENCH_MAX_RATES];
    int nlr = 0;
    memset(lr, 0, sizeof lr);
    ramp_probe ramp[RAMP_STEPS];
    int nramp = 0, sustained = -1; /* -1: no `max` asked */
    for (int k = 0; do_lat && k < o.nrates && !rc; k++)
        if (o.rates[k] == RATE_MAX) {
            int ramp_seconds = lat_seconds < RAMP_SECONDS ? lat_seconds : RAMP_SECONDS;
            rc |= find_sustained(&o.cfg, nc, ramp_seconds, o.max_rate, ramp, &nramp, &sustained);
            if (!rc && sustained <= 0) {
                fprintf(stderr,
                        "verdict bench: the pass-through sustained no rate from %d/s up (p99 within the "
                        "%lld ms budget, every request answered); nothing to measure at max\n",
                        RAMP_FIRST < o.max_rate ? RAMP_FIRST : o.max_rate, (long long)o.cfg.budget_ms);
                rc = 1;
            }
            o.rates[k] = sustained;
        }
    for (int k = 0; do_lat && k < o.nrates && !rc; k++) {
        /* a fresh pair of streams per rate; the pass-through first, then the engine, moments apart */
        char pf[16], pp[16];
        snprintf(pf, sizeof pf, k ? "lt%d" : "lt", k);
        snprintf(pp, sizeof pp, k ? "lp%d" : "lp", k);
        config cf = o.cfg, cp = o.cfg;
        with_prefix(&cf, pf, false);
        with_prefix(&cp, pp, true);
        lr[k].rate = o.rates[k];
        lr[k].seconds = lat_seconds;
        rc |= latency_run(&cp, nc, o.rates[k], lat_seconds, 11 + 2 * (uint64_t)k, "baseline", &lr[k].b);
        if (!rc)
            rc |= latency_run(&cf, nc, o.rates[k], lat_seconds, 12 + 2 * (uint64_t)k, "decide", &lr[k].d);
        if (rc)
            break;
        nlr++;
        if (o.out_dir && latency_write(o.out_dir, &lr[k]) != 0) {
            fprintf(stderr, "verdict bench: cannot write into %s\n", o.out_dir);
            rc = 1;
        }
    }
    if (rc && !nlr)
        goto done; /* nothing measured: no table of zeros */
    printf("\n  verdict bench (%d workers, batch %d)\n", o.cfg.workers, o.cfg.batch);
    printf("  ------------------------------------------------------------\n");
    if (do_tp) {
        printf("  throughput   full engine   %10.0f decisions/s  (median of %d round%s)\n", full, o.rounds,
               o.rounds > 1 ? "s" : "");
        printf("               pass-through  %10.0f msgs/s\n", pt);
        if (o.only < 0) {
            printf("               ratio         %10.2f  (target >= 0.9; median of the rounds' ratios", ratio);
            for (int k = 0; k < o.rounds && o.rounds > 1; k++)
                printf("%s%.2f", k ? " " : ": ", ratios[k]);
            printf(")\n");
        }
        if (!url_given)
            printf("  CPU per decision   full engine %.1f us (engine %.1f + nats-server %.1f), pass-through %.1f us "
                   "(%.1f + %.1f)\n",
                   cpu_engine[0] + cpu_server[0], cpu_engine[0], cpu_server[0], cpu_engine[1] + cpu_server[1],
                   cpu_engine[1], cpu_server[1]);
        printf("  engine process     full engine user %.1f + system %.1f us, %.2f context switches; pass-through "
               "%.1f + %.1f us, %.2f\n",
               cpu_user[0], cpu_sys[0], csw[0], cpu_user[1], cpu_sys[1], csw[1]);
    }
    if (nramp > 0) {
        printf("  sustained    the pass-through sustains %d requests/s (every request answered, p99 within the "
               "%lld ms budget, %d s a probe%s):\n              ",
               sustained, (long long)o.cfg.budget_ms, ramp[0].seconds,
               sustained >= o.max_rate ? "; the ramp's cap, --max-rate, was reached" : "");
        for (int k = 0; k < nramp; k++)
            printf("%d/s p99 %.1f ms%s%s", ramp[k].rate, (double)ramp[k].p99_us / 1000.0,
                   ramp[k].answered < ramp[k].sent ? " (not all answered)" : "", k + 1 < nramp ? ", " : "\n");
    }
    for (int k = 0; k < nlr; k++)
        latency_print(&lr[k], o.cfg.budget_ms);
    if (o.json) {
        printf("{\"bench\":\"%s\",\"workers\":%d,\"batch\":%d", what, o.cfg.workers, o.cfg.batch);
        if (do_tp)
            printf(",\"decisions_per_s\":%.0f,\"passthrough_per_s\":%.0f,\"ratio\":%.3f,\"engine_cpu_us\":%.2f,"
                   "\"server_cpu_us\":%.2f,\"passthrough_engine_cpu_us\":%.2f,\"passthrough_server_cpu_us\":%.2f",
                   full, pt, ratio, cpu_engine[0], cpu_server[0], cpu_engine[1], cpu_server[1]);
        if (do_tp) {
            printf(",\"rounds\":%d,\"ratio_rounds\":[", o.rounds);
            for (int k = 0; k < o.rounds; k++)
                printf("%s%.3f", k ? "," : "", ratios[k]);
            printf("]");
        }
        if (do_tp)
            printf(",\"engine_user_us\":%.2f,\"engine_sys_us\":%.2f,\"engine_cswitches\":%.3f,"
                   "\"passthrough_engine_user_us\":%.2f,\"passthrough_engine_sys_us\":%.2f,"
                   "\"passthrough_engine_cswitches\":%.3f",
                   cpu_user[0], cpu_sys[0], csw[0], cpu_user[1], cpu_sys[1], csw[1]);
        if (nlr > 0) {
            /* the first rate's keys at the top level, as with a single --rate; every rate in latency_runs */
            printf(",");
            latency_json(&lr[0]);
            printf(",\"budget_ms\":%lld,\"latency_runs\":[", (long long)o.cfg.budget_ms);
            for (int k = 0; k < nlr; k++) {
                printf("%s{", k ? "," : "");
                latency_json(&lr[k]);
                printf("}");
            }
            printf("]");
        }
        if (nramp > 0) {
            printf(",\"sustained_rate\":%d,\"sustained_probes\":[", sustained);
            for (int k = 0; k < nramp; k++)
                printf("%s{\"rate\":%d,\"seconds\":%d,\"p99_us\":%lld,\"answered\":%d,\"sent\":%d}", k ? "," : "",
                       ramp[k].rate, ramp[k].seconds, (long long)ramp[k].p99_us, ramp[k].answered, ramp[k].sent);
            printf("]");
        }
        printf("}\n");
    }
done:
    for (int k = 0; k < BENCH_MAX_RATES; k++) {
        lat_side_free(&lr[k].d);
        lat_side_free(&lr[k].b);
    }
    natsConnection_Destroy(nc);
    nats_Close();
    if (!url_given)
        localserver_stop(&ls);
    return rc;
}

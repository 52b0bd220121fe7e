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
#include <time.h>

typedef struct bench_opts {
    config cfg;
    int seconds;
    int count;
    int rate;
    bool json;
} bench_opts;

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

/* Runs one engine over a preloaded stream and returns decisions per second. */
static double drain_rate(const bench_opts *o, const config *c, jsCtx *js, int count, const char *label)
{
    engine *en = NULL;
    verror e = {0};
    int64_t t0 = now_us();
    if (engine_start(c, &en, &e) != V_OK) {
        fprintf(stderr, "bench: %s\n", e.msg);
        return 0;
    }
    const engine_stats *st = engine_get_stats(en);
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
    engine_stop(en);
    (void)js;
    return elapsed > 0 ? (double)done * 1e6 / (double)elapsed : 0;
}

/* ABBA order (pass-through, full, full, pass-through), each run on its own freshly preloaded stream, so
 * neither side always runs on the emptier server; each side's figure is the mean of its two runs. */
static int bench_throughput(const bench_opts *o, natsConnection *nc, double *full, double *pt)
{
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = 4096;
    jsCtx *js = NULL;
    if (natsConnection_JetStream(&js, nc, &jo) != NATS_OK)
        return 1;
    static const char *prefixes[] = {"bp1", "bt1", "bt2", "bp2"};
    static const bool is_pt[] = {true, false, false, true};
    config cs[4];
    verror e = {0};
    for (int i = 0; i < 4; i++) {
        cs[i] = o->cfg;
        with_prefix(&cs[i], prefixes[i], is_pt[i]);
        if (broker_setup(&cs[i], js, &e) != V_OK || preload(js, &cs[i], o->count, 7, &e) != V_OK) {
            fprintf(stderr, "bench: %s\n", e.msg);
            jsCtx_Destroy(js);
            return 1;
        }
    }
    fprintf(stderr, "[bench] preloaded %d transactions into each of 4 streams\n", o->count);
    bench_opts quarter = *o;
    quarter.seconds = o->seconds / 2 > 1 ? o->seconds / 2 : 1; /* drain_rate uses half of this: 1/4 each */
    *pt = *full = 0;
    for (int i = 0; i < 4; i++) {
        double r = drain_rate(&quarter, &cs[i], js, o->count, is_pt[i] ? "passthrough" : "full");
        *(is_pt[i] ? pt : full) += r / 2;
    }
    jsCtx_Destroy(js);
    return 0;
}

/* --- latency ------------------------------------------------------------------------------------------ */

typedef struct lat_run {
    int64_t *intended; /* per request, us */
    atomic_int received;
    hist h;
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
    if (i >= 0) {
        pthread_mutex_lock(&r->mu);
        hist_record(&r->h, now - r->intended[i]);
        pthread_mutex_unlock(&r->mu);
        atomic_fetch_add(&r->received, 1);
    }
    natsMsg_Destroy(m);
}

/* Open loop: request i is due at t0 + i/rate whatever happened to earlier ones, and its latency is measured
 * from that intended time, so a stall is charged to every request it delayed (coordinated omission). */
static int latency_run(const bench_opts *o, const config *c, natsConnection *nc, uint64_t seed, const char *label,
                       hist *out, int *sent_out, int *recv_out)
{
    engine *en = NULL;
    verror e = {0};
    if (engine_start(c, &en, &e) != V_OK) {
        fprintf(stderr, "bench: %s\n", e.msg);
        return 1;
    }
    int total = o->rate * o->seconds / 2;
    lat_run r;
    memset(&r, 0, sizeof r);
    hist_reset(&r.h);
    pthread_mutex_init(&r.mu, NULL);
    r.intended = calloc((size_t)total, sizeof *r.intended);
    char inbox[64], wildcard[80];
    snprintf(inbox, sizeof inbox, "_INBOX.bench.%s", label);
    snprintf(wildcard, sizeof wildcard, "%s.*", inbox);
    natsSubscription *sub = NULL;
    simgen_cfg gc = {.seed = seed, .start_ms = now_ms() - 3600 * 1000};
    simgen *g = simgen_create(&gc);
    if (!r.intended || !g || natsConnection_Subscribe(&sub, nc, wildcard, on_reply, &r) != NATS_OK ||
        natsSubscription_SetPendingLimits(sub, -1, -1) != NATS_OK || natsConnection_Flush(nc) != NATS_OK) {
        fprintf(stderr, "bench: cannot set up the latency client\n");
        engine_stop(en);
        return 1;
    }
    unsigned char buf[2048];
    /* warm-up: a few requests not measured */
    int64_t t0 = now_us() + 200000;
    int sent = 0;
    int64_t last = now_us();
    for (int i = 0; i < total; i++) {
        Transaction t;
        simgen_next(g, &t);
        size_t n = verdict__v1__transaction__pack(&t, buf);
        int64_t due = t0 + (int64_t)i * 1000000 / o->rate;
        sleep_us(due - now_us());
        r.intended[i] = due;
        char reply[96];
        snprintf(reply, sizeof reply, "%s.%d", inbox, i);
        if (natsConnection_PublishRequest(nc, c->decide_subject, reply, buf, (int)n) == NATS_OK)
            sent++;
        if (now_us() - last > 1000000) {
            fprintf(stderr, "[bench] %-12s sent %d/%d at %d/s\n", label, sent, total, o->rate);
            last = now_us();
        }
    }
    natsConnection_Flush(nc);
    for (int waited = 0; waited < 3000 && atomic_load(&r.received) < sent; waited += 10)
        sleep_us(10000);
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
    engine_stop(en);
    simgen_destroy(g);
    *out = r.h;
    *sent_out = sent;
    *recv_out = atomic_load(&r.received);
    free(r.intended);
    return 0;
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

static void bench_help(void)
{
    printf("usage: verdict bench [throughput|latency|all|restart] [--seconds N] [--count N] [--rate R] [--json] [options]\n"
           "       verdict bench state|snapshot|eval|model [--help]   (no broker)\n\n"
           "Measures the engine against a bare JetStream baseline in the same run (docs/benchmarks.md):\n"
           "  throughput  decisions/s draining a preloaded stream, vs a pass-through (same pull, republish\n"
           "              with msg-id, ack; no decision logic). Keys: decisions_per_s, passthrough_per_s, ratio\n"
           "  latency     open-loop decide requests at --rate per second, measured from each request's intended\n"
           "              send time, vs the same round trip through the pass-through. Keys: decide_p50_us,\n"
           "              decide_p99_us, decide_p999_us, baseline_p50_us, baseline_p99_us, ratio_p99\n"
           "  restart     seconds from start to ready with N transactions in the window (--counts, default\n"
           "              100000,1000000): a full rebuild, and from a snapshot plus a minute (60,000) after it\n"
           "Starts a private nats-server unless --nats-url is given. --seconds bounds each bench (default 20).\n\n"
           "  --count N       transactions preloaded for throughput (default 20000)\n"
           "  --rate R        requests per second for latency (default 500)\n"
           "  --json          print one JSON object on the last line\n\n"
           "engine options (flag, then its environment variable):\n");
    config_print_help(stdout, "serve");
}

int cmd_bench(int argc, char **argv)
{
    bench_opts o = {.seconds = 20, .count = 20000, .rate = 500};
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
            o.rate = atoi(v);
            k++;
        } else if (strcmp(a, "--counts") == 0 && v) {
            counts = v;
            k++;
        } else if (a[0] != '-' && (!strcmp(a, "throughput") || !strcmp(a, "latency") || !strcmp(a, "all") ||
                                   !strcmp(a, "restart")))
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
    bool do_tp = !strcmp(what, "throughput") || !strcmp(what, "all");
    bool do_lat = !strcmp(what, "latency") || !strcmp(what, "all");
    double full = 0, pt = 0;
    hist hd, hb;
    hist_reset(&hd);
    hist_reset(&hb);
    int sd = 0, rd = 0, sb = 0, rb = 0;
    if (do_tp)
        rc |= bench_throughput(&o, nc, &full, &pt);
    if (do_lat) {
        config cf = o.cfg, cp = o.cfg;
        with_prefix(&cf, "lt", false);
        with_prefix(&cp, "lp", true);
        rc |= latency_run(&o, &cp, nc, 11, "baseline", &hb, &sb, &rb);
        rc |= latency_run(&o, &cf, nc, 12, "decide", &hd, &sd, &rd);
    }
    printf("\n  verdict bench (%d workers, batch %d, %d s)\n", o.cfg.workers, o.cfg.batch, o.seconds);
    printf("  ------------------------------------------------------------\n");
    if (do_tp) {
        printf("  throughput   full engine   %10.0f decisions/s\n", full);
        printf("               pass-through  %10.0f msgs/s\n", pt);
        printf("               ratio         %10.2f  (target >= 0.9)\n", pt > 0 ? full / pt : 0);
    }
    if (do_lat) {
        printf("  latency      rate %d/s open loop, us from intended send time\n", o.rate);
        printf("               decide    p50 %7lld  p99 %7lld  p99.9 %7lld  (%d/%d answered)\n",
               (long long)hist_quantile(&hd, 0.5), (long long)hist_quantile(&hd, 0.99),
               (long long)hist_quantile(&hd, 0.999), rd, sd);
        printf("               baseline  p50 %7lld  p99 %7lld  p99.9 %7lld  (%d/%d answered)\n",
               (long long)hist_quantile(&hb, 0.5), (long long)hist_quantile(&hb, 0.99),
               (long long)hist_quantile(&hb, 0.999), rb, sb);
        printf("               ratio p99 %7.2f  (target <= 1.5)\n",
               hist_quantile(&hb, 0.99) ? (double)hist_quantile(&hd, 0.99) / (double)hist_quantile(&hb, 0.99) : 0);
    }
    if (o.json) {
        printf("{\"bench\":\"%s\",\"workers\":%d,\"batch\":%d", what, o.cfg.workers, o.cfg.batch);
        if (do_tp)
            printf(",\"decisions_per_s\":%.0f,\"passthrough_per_s\":%.0f,\"ratio\":%.3f", full, pt,
                   pt > 0 ? full / pt : 0);
        if (do_lat)
            printf(",\"rate\":%d,\"decide_p50_us\":%lld,\"decide_p99_us\":%lld,\"decide_p999_us\":%lld,"
                   "\"baseline_p50_us\":%lld,\"baseline_p99_us\":%lld,\"ratio_p99\":%.3f,\"answered\":%d,\"sent\":%d",
                   o.rate, (long long)hist_quantile(&hd, 0.5), (long long)hist_quantile(&hd, 0.99),
                   (long long)hist_quantile(&hd, 0.999), (long long)hist_quantile(&hb, 0.5),
                   (long long)hist_quantile(&hb, 0.99),
                   hist_quantile(&hb, 0.99) ? (double)hist_quantile(&hd, 0.99) / (double)hist_quantile(&hb, 0.99)
                                            : 0,
                   rd, sd);
        printf("}\n");
    }
    natsConnection_Destroy(nc);
    nats_Close();
    if (!url_given)
        localserver_stop(&ls);
    return rc;
}

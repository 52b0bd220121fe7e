/* bench_durability.c - `verdict bench durability`: what JetStream's fsync policy costs the engine, end to end.
 *
 * JetStream fsyncs its stores every sync_interval (2 minutes by default); `sync_interval: always` fsyncs every
 * write before the PubAck. Four setups run side by side in one process: one server and a three-node loopback
 * cluster (R3 streams), each with the default and with `always`. The servers all start first and stay up; the
 * passes then alternate between them (round 1 in order, round 2 reversed, ...), so machine noise spreads over all
 * four and their ratios are comparable. A pass: fresh streams, the engine started, N synthetic transactions
 * published to TXN with asynchronous PubAcks, decisions/s from the first publish to the Nth decision; then 200
 * synchronous publishes for the PubAck latency at one in flight, and every stream of that setup is deleted, so
 * each pass starts on an empty server. Each setup's sync policy is read
 * back from the server's /varz before any figure is kept. Method and figures: docs/benchmarks.md. */
#include "broker.h"
#include "config.h"
#include "hist.h"
#include "localserver.h"
#include "log.h"
#include "pipeline.h"
#include "simgen.h"

#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <time.h>

void bench_config_prefix(config *c, const char *prefix, bool passthrough); /* bench.c */

#define DUR_SETUPS 4
#define DUR_MAX_ROUNDS 10

/* One pass's publisher state; the PubAck handler runs on one nats.c thread. */
typedef struct dur_pass {
    int64_t *sent_us; /* by stream sequence - 1 (one publisher on a fresh stream: sequence i+1 is message i) */
    int count;
    hist *ack;
    long long errors;
} dur_pass;

typedef struct dur_setup {
    const char *name;
    int replicas;
    bool always;
    localserver single; /* replicas == 1 */
    localcluster cluster;
    const char *url;
    char fs[32];      /* the store's filesystem type (statfs) */
    char mount[160];  /* its device, mount point and options (/proc/self/mounts) */
    char version[32]; /* the server's, from /varz */
    double rate[DUR_MAX_ROUNDS], pub_rate[DUR_MAX_ROUNDS];
    hist ack;   /* PubAck latency over every round, M in flight */
    hist probe; /* PubAck latency with one in flight (a synchronous publish), every round */
    long long pub_errors, incomplete;
    dur_pass pass; /* here, not on a pass's stack: a PubAck of a failed pass may still arrive after it */
} dur_setup;

static void sleep_us(int64_t us)
{
    struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000L};
    nanosleep(&ts, NULL);
}

static void on_puback(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    dur_pass *p = closure;
    int64_t now = now_us();
    if (pa && pa->Sequence >= 1 && pa->Sequence <= (uint64_t)p->count)
        hist_record(p->ack, now - p->sent_us[pa->Sequence - 1]);
    else if (pae)
        p->errors++;
    natsMsg_Destroy(msg);
}

static const char *fs_name(long type)
{
    switch ((unsigned long)type) {
    case 0xEF53: return "ext4";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x01021994: return "tmpfs";
    case 0x794C7630: return "overlayfs";
    case 0x2FC12FC1: return "zfs";
    case 0x6969: return "nfs";
    case 0xF2F52010: return "f2fs";
    default: return NULL;
    }
}

/* The filesystem under dir: its type, and the /proc/self/mounts line of the longest mount point above it. */
static void disk_info(const char *dir, dur_setup *s)
{
    struct statfs sf;
    const char *t = statfs(dir, &sf) == 0 ? fs_name((long)sf.f_type) : NULL;
    if (t)
        snprintf(s->fs, sizeof s->fs, "%s", t);
    else
        snprintf(s->fs, sizeof s->fs, "0x%lx", statfs(dir, &sf) == 0 ? (unsigned long)sf.f_type : 0UL);
    FILE *f = fopen("/proc/self/mounts", "r");
    char line[512], dev[160], mnt[160], type[32], opts[256];
    size_t best = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "%159s %159s %31s %255s", dev, mnt, type, opts) == 4) {
            size_t n = strlen(mnt);
            bool above = strncmp(dir, mnt, n) == 0 && (dir[n] == '/' || dir[n] == 0 || n == 1);
            if (above && n >= best) {
                best = n;
                snprintf(s->mount, sizeof s->mount, "%.40s on %.40s (%.60s)", dev, mnt, opts);
                for (char *c = s->mount; *c; c++) /* it goes into JSON; /proc/self/mounts writes a space as \040 */
                    if (*c == '\\' || *c == '"')
                        *c = '_';
            }
        }
    if (f)
        fclose(f);
}

/* Reads the server's /varz: its version, and whether its sync policy is the one this setup stands for (a figure
 * under the wrong label is worse than none). */
static vstatus check_varz(const localserver *ls, dur_setup *s, verror *e)
{
    static char body[65536];
    if (!localserver_varz(ls, body, sizeof body))
        return verror_set(e, V_EIO, "%s: no /varz from the server", s->name);
    const char *v = strstr(body, "\"version\"");
    if (v && (v = strchr(v + 9, '"')))
        sscanf(v + 1, "%31[^\"]", s->version);
    const char *a = strstr(body, "\"sync_always\"");
    bool always = false;
    if (a) {
        a += strlen("\"sync_always\"");
        a += strspn(a, " \t:");
        always = strncmp(a, "true", 4) == 0;
    }
    if (always != s->always)
        return verror_set(e, V_ECONFLICT, "%s: the server reports sync_always %s", s->name, always ? "true" : "false");
    return V_OK;
}

static vstatus setup_start(dur_setup *s, verror *e)
{
    const char *conf = s->always ? "jetstream {\n  sync_interval: always\n}\n" : NULL;
    vstatus st;
    const localserver *first;
    if (s->replicas == 1) {
        st = localserver_start_conf(&s->single, conf, e);
        s->url = s->single.url;
        first = &s->single;
    } else {
        st = localcluster_start(&s->cluster, s->replicas, conf, e);
        s->url = s->cluster.urls;
        first = &s->cluster.nodes[0];
    }
    if (st != V_OK)
        return st;
    disk_info(first->dir, s);
    if (s->replicas == 1)
        return check_varz(&s->single, s, e);
    for (int i = 0; i < s->cluster.n && st == V_OK; i++)
        st = check_varz(&s->cluster.nodes[i], s, e);
    return st;
}

static void setup_stop(dur_setup *s)
{
    if (s->replicas == 1)
        localserver_stop(&s->single);
    else
        localcluster_stop(&s->cluster);
}

/* Every stream on the setup's server(s), so the next pass starts on an empty one. */
static void delete_streams(jsCtx *js)
{
    jsStreamNamesList *names = NULL;
    if (js_StreamNames(&names, js, NULL, NULL) != NATS_OK)
        return;
    for (int i = 0; i < names->Count; i++)
        js_DeleteStream(js, names->List[i], NULL, NULL);
    jsStreamNamesList_Destroy(names);
}

#define DUR_PROBES 200

/* PubAck latency without queueing: DUR_PROBES synchronous publishes of size bytes, one at a time, to a stream
 * of its own with the setup's replicas (file storage, as TXN). */
static vstatus probe_latency(jsCtx *js, dur_setup *s, const unsigned char *buf, int size, verror *e)
{
    const char *subjects[] = {"durprobe.>"};
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = "DUR_PROBE";
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Replicas = s->replicas;
    jsErrCode jerr = 0;
    natsStatus ns = js_AddStream(NULL, js, &sc, NULL, &jerr);
    if (ns != NATS_OK)
        return broker_err(e, ns, jerr, "cannot create the probe stream");
    /* a new replicated stream may answer its first publishes "no responders" until its leader is up */
    int64_t ready_by = now_ms() + 10000;
    while ((ns = js_Publish(NULL, js, "durprobe.x", buf, size, NULL, &jerr)) == NATS_NO_RESPONDERS &&
           now_ms() < ready_by)
        sleep_us(50000);
    for (int i = 0; ns == NATS_OK && i < DUR_PROBES; i++) {
        int64_t t = now_us();
        if ((ns = js_Publish(NULL, js, "durprobe.x", buf, size, NULL, &jerr)) == NATS_OK)
            hist_record(&s->probe, now_us() - t);
    }
    return ns == NATS_OK ? V_OK : broker_err(e, ns, jerr, "probe publish failed");
}

/* For explaining a cluster pass's figure: which node leads TXN and DECISIONS, and which one the publisher is
 * connected to (nats.c picks a random URL of the list). */
static void placement(jsCtx *js, natsConnection *nc, const config *c, const dur_setup *s, char *out, size_t cap)
{
    char leader[2][16] = {"?", "?"}, url[64] = "", client[16] = "?";
    const char *streams[2] = {c->txn_stream, c->decisions_stream};
    for (int k = 0; k < 2; k++) {
        jsStreamInfo *si = NULL;
        if (js_GetStreamInfo(&si, js, streams[k], NULL, NULL) == NATS_OK && si->Cluster && si->Cluster->Leader)
            snprintf(leader[k], sizeof leader[k], "%s", si->Cluster->Leader);
        jsStreamInfo_Destroy(si);
    }
    const char *port = natsConnection_GetConnectedUrl(nc, url, sizeof url) == NATS_OK ? strrchr(url, ':') : NULL;
    for (int i = 0; port && i < s->cluster.n; i++)
        if (!strcmp(port, strrchr(s->cluster.nodes[i].url, ':')))
            snprintf(client, sizeof client, "n%d", i);
    snprintf(out, cap, " (TXN leader %s, DECISIONS leader %s, publisher on %s)", leader[0], leader[1], client);
}

typedef struct dur_opts {
    config cfg;
    int count, rounds, inflight, seconds;
    bool json;
} dur_opts;

/* One pass on one setup: returns 0 and fills s->rate[round] (decisions/s) and s->pub_rate[round] (PubAcks/s). */
static int dur_pass_run(const dur_opts *o, dur_setup *s, int si, int round, int64_t *sent_us)
{
    config c = o->cfg;
    char prefix[16];
    snprintf(prefix, sizeof prefix, "du%d%d", si, round);
    bench_config_prefix(&c, prefix, false);
    c.replicas = s->replicas;
    str_copy(c.nats_url, sizeof c.nats_url, s->url);
    dur_pass *p = &s->pass;
    *p = (dur_pass){.sent_us = sent_us, .count = o->count, .ack = &s->ack};
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = o->inflight;
    jo.PublishAsync.StallWait = 30000;
    jo.PublishAsync.AckHandler = on_puback;
    jo.PublishAsync.AckHandlerClosure = p;
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    engine *en = NULL;
    simgen *g = NULL;
    verror e = {0};
    int rc = 1;
    if (broker_connect_simple(&c, &nc, &e) != V_OK)
        goto out;
    if (natsConnection_JetStream(&js, nc, &jo) != NATS_OK) {
        verror_set(&e, V_ENATS, "no JetStream context");
        goto out;
    }
    if (broker_setup(&c, js, &e) != V_OK || engine_start(&c, &en, &e) != V_OK)
        goto out;
    simgen_cfg gc = {.seed = 31 + (uint64_t)round, .start_ms = now_ms() - 3600 * 1000};
    if (!(g = simgen_create(&gc))) {
        verror_set(&e, V_ENOMEM, "out of memory");
        goto out;
    }
    char subj[NAME_MAX_LEN + 16];
    snprintf(subj, sizeof subj, "%.*s.bench", (int)(strlen(c.txn_subjects) - 2), c.txn_subjects);
    const engine_stats *st = engine_get_stats(en);
    unsigned char buf[2048];
    int64_t t0 = now_us(), last = t0, deadline = t0 + (int64_t)o->seconds * 1000000;
    for (int i = 0; i < o->count; i++) {
        Transaction t;
        simgen_next(g, &t);
        size_t n = verdict__v1__transaction__pack(&t, buf);
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = t.txn_id;
        sent_us[i] = now_us();
        natsStatus ns = js_PublishAsync(js, subj, buf, (int)n, &po);
        if (ns != NATS_OK) {
            broker_err(&e, ns, 0, "publish failed");
            goto out;
        }
        if (now_us() - last > 2000000) {
            fprintf(stderr, "[bench] %-10s round %d: published %d/%d\n", s->name, round + 1, i, o->count);
            last = now_us();
        }
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = o->seconds * 1000;
    natsStatus ns = js_PublishAsyncComplete(js, &po);
    int64_t t_pub = now_us();
    if (ns != NATS_OK) {
        broker_err(&e, ns, 0, "PubAcks not all received");
        goto out;
    }
    long long done = 0;
    /* a publish the server refused is never decided: do not wait for it */
    while ((done = st->decided[1] + st->decided[2] + st->decided[3]) < o->count && now_us() < deadline &&
           p->errors == 0) {
        sleep_us(1000);
        if (now_us() - last > 2000000) {
            fprintf(stderr, "[bench] %-10s round %d: decided %lld/%d\n", s->name, round + 1, done, o->count);
            last = now_us();
        }
    }
    int64_t t_end = now_us();
    if (done < o->count)
        s->incomplete++;
    Transaction t;
    simgen_next(g, &t);
    if (probe_latency(js, s, buf, (int)verdict__v1__transaction__pack(&t, buf), &e) != V_OK)
        goto out;
    s->rate[round] = (double)done * 1e6 / (double)(t_end - t0);
    s->pub_rate[round] = (double)o->count * 1e6 / (double)(t_pub - t0);
    s->pub_errors += p->errors;
    char where[160] = "";
    if (s->replicas > 1)
        placement(js, nc, &c, s, where, sizeof where);
    fprintf(stderr, "[bench] %-10s round %d: %.0f decisions/s, %.0f PubAcks/s%s\n", s->name, round + 1,
            s->rate[round], s->pub_rate[round], where);
    rc = 0;
out:
    if (rc)
        fprintf(stderr, "bench durability: %s: %s\n", s->name, e.msg);
    if (en)
        engine_stop(en);
    simgen_destroy(g);
    if (js) {
        delete_streams(js);
        jsCtx_Destroy(js);
    }
    natsConnection_Destroy(nc);
    return rc;
}

static double mean(const double *v, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += v[i];
    return n ? s / n : 0;
}

static void dur_help(void)
{
    printf("usage: verdict bench durability [--count N] [--rounds K] [--inflight M] [--seconds S] [--json]\n"
           "                                [options]\n\n"
           "What JetStream's fsync policy costs, end to end: four setups side by side in one run, each its own\n"
           "private nats-server(s) on loopback (the binary: $VERDICT_NATS_SERVER, else nats-server on PATH):\n"
           "  r1-default  one server, sync_interval at its default (fsync every 2 minutes)\n"
           "  r1-always   one server, sync_interval: always (fsync before every PubAck)\n"
           "  r3-default  a three-node cluster, R3 streams, the default\n"
           "  r3-always   a three-node cluster, R3 streams, always\n"
           "Per pass: fresh streams, the engine, N transactions published to TXN (async, M PubAcks in flight);\n"
           "decisions/s from the first publish to the Nth decision. The passes alternate between the setups\n"
           "(round 1 in order, round 2 reversed, ...); each setup's policy is checked in its /varz first.\n"
           "After each pass, %d synchronous publishes (one PubAck in flight) to a stream of their own give the\n"
           "PubAck latency without queueing (probe_*); puback_* is the publisher's, with M in flight.\n"
           "Keys: setups[] with name, replicas, sync, decisions_per_s (mean), rounds[], pubacks_per_s,\n"
           "puback_p50_us, puback_p99_us, probe_p50_us, probe_p99_us, filesystem, mount, server_version;\n"
           "ratio_r1_always_default, ratio_r3_always_default.\n\n"
           "  --count N     transactions per pass (default 20000)\n"
           "  --rounds K    passes per setup (default 2, at most %d)\n"
           "  --inflight M  the publisher's PubAcks in flight (default 256)\n"
           "  --seconds S   bound on one pass (default 120)\n"
           "  --json        print one JSON object on the last line\n\n"
           "engine options (flag, then its environment variable; --nats-url is ignored: the bench configures its\n"
           "own servers):\n",
           DUR_PROBES, DUR_MAX_ROUNDS);
    config_print_help(stdout, "serve");
}

int bench_durability(int argc, char **argv)
{
    dur_opts o = {.count = 20000, .rounds = 2, .inflight = 256, .seconds = 120};
    config_defaults(&o.cfg);
    bool help;
    int rest[64], nrest = 0;
    verror e = {0};
    if (argc > 64 || config_parse(&o.cfg, argc, argv, &help, rest, &nrest, &e) != V_OK) {
        fprintf(stderr, "verdict bench durability: %s\n", e.msg[0] ? e.msg : "too many arguments");
        return 2;
    }
    for (int k = 0; k < nrest; k++) {
        const char *a = argv[rest[k]];
        const char *v = k + 1 < nrest ? argv[rest[k + 1]] : NULL;
        int *dst = !strcmp(a, "--count")      ? &o.count
                   : !strcmp(a, "--rounds")   ? &o.rounds
                   : !strcmp(a, "--inflight") ? &o.inflight
                   : !strcmp(a, "--seconds")  ? &o.seconds
                                              : NULL;
        if (!strcmp(a, "durability"))
            continue;
        if (!strcmp(a, "--json"))
            o.json = true;
        else if (dst && v && atoi(v) > 0) {
            *dst = atoi(v);
            k++;
        } else {
            fprintf(stderr, "verdict bench durability: unknown option or missing value '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (help) {
        dur_help();
        return 0;
    }
    if (o.rounds > DUR_MAX_ROUNDS || o.count > 10000000) {
        fprintf(stderr, "verdict bench durability: at most %d rounds and 10000000 transactions\n", DUR_MAX_ROUNDS);
        return 2;
    }
    log_set_quiet(1);
    dur_setup *su = calloc(DUR_SETUPS, sizeof *su);
    int64_t *sent_us = malloc((size_t)o.count * sizeof *sent_us);
    if (!su || !sent_us) {
        fprintf(stderr, "verdict bench durability: out of memory\n");
        free(su);
        free(sent_us);
        return 1;
    }
    static const char *names[DUR_SETUPS] = {"r1-default", "r1-always", "r3-default", "r3-always"};
    int rc = 0, started = 0;
    for (int i = 0; i < DUR_SETUPS && !rc; i++, started++) {
        su[i].name = names[i];
        su[i].replicas = i < 2 ? 1 : 3;
        su[i].always = i % 2 == 1;
        hist_reset(&su[i].ack);
        hist_reset(&su[i].probe);
        if (setup_start(&su[i], &e) != V_OK) {
            fprintf(stderr, "verdict bench durability: %s\n", e.msg);
            rc = 1;
        } else
            fprintf(stderr, "[bench] %-10s nats-server %s on %s, store on %s\n", su[i].name, su[i].version,
                    su[i].url, su[i].fs);
    }
    for (int r = 0; r < o.rounds && !rc; r++)
        for (int k = 0; k < DUR_SETUPS && !rc; k++) {
            int i = r % 2 ? DUR_SETUPS - 1 - k : k;
            rc = dur_pass_run(&o, &su[i], i, r, sent_us);
        }
    for (int i = 0; i < started; i++)
        setup_stop(&su[i]);
    nats_Close();
    free(sent_us);
    if (rc) {
        free(su);
        return rc;
    }
    double m[DUR_SETUPS];
    for (int i = 0; i < DUR_SETUPS; i++)
        m[i] = mean(su[i].rate, o.rounds);
    printf("\n  verdict bench durability (%d transactions a pass, %d rounds, %d workers, batch %d, %d in flight)\n",
           o.count, o.rounds, o.cfg.workers, o.cfg.batch, o.inflight);
    printf("  nats-server %s; store on %s: %s\n", su[0].version, su[0].fs, su[0].mount);
    printf("  ----------------------------------------------------------------------------------------------\n");
    printf("  %-11s %3s %10s %-18s %8s %21s %21s\n", "setup", "R", "sync", "decisions/s rounds", "mean",
           "PubAck p50/p99 (1)", "(M in flight)");
    for (int i = 0; i < DUR_SETUPS; i++) {
        char per[64] = "";
        size_t off = 0;
        for (int r = 0; r < o.rounds && off < sizeof per; r++)
            off += (size_t)snprintf(per + off, sizeof per - off, "%s%.0f", r ? " " : "", su[i].rate[r]);
        char one[32], many[32];
        snprintf(one, sizeof one, "%lld/%lld us", (long long)hist_quantile(&su[i].probe, 0.5),
                 (long long)hist_quantile(&su[i].probe, 0.99));
        snprintf(many, sizeof many, "%lld/%lld us", (long long)hist_quantile(&su[i].ack, 0.5),
                 (long long)hist_quantile(&su[i].ack, 0.99));
        printf("  %-11s %3d %10s %-18s %8.0f %21s %21s%s\n", su[i].name, su[i].replicas,
               su[i].always ? "always" : "default", per, m[i], one, many,
               su[i].incomplete ? "  (a pass did not decide all)" : "");
    }
    double r1 = m[0] > 0 ? m[1] / m[0] : 0, r3 = m[2] > 0 ? m[3] / m[2] : 0;
    printf("  ratio always/default: R1 %.2f, R3 %.2f;  R3/R1: default %.2f, always %.2f\n", r1, r3,
           m[0] > 0 ? m[2] / m[0] : 0, m[1] > 0 ? m[3] / m[1] : 0);
    if (o.json) {
        printf("{\"bench\":\"durability\",\"count\":%d,\"rounds\":%d,\"workers\":%d,\"batch\":%d,\"inflight\":%d,"
               "\"setups\":[",
               o.count, o.rounds, o.cfg.workers, o.cfg.batch, o.inflight);
        for (int i = 0; i < DUR_SETUPS; i++) {
            printf("%s{\"name\":\"%s\",\"replicas\":%d,\"sync\":\"%s\",\"decisions_per_s\":%.0f,\"rounds\":[",
                   i ? "," : "", su[i].name, su[i].replicas, su[i].always ? "always" : "default", m[i]);
            for (int r = 0; r < o.rounds; r++)
                printf("%s%.0f", r ? "," : "", su[i].rate[r]);
            printf("],\"pubacks_per_s\":%.0f,\"puback_p50_us\":%lld,\"puback_p99_us\":%lld,\"puback_errors\":%lld,"
                   "\"probe_p50_us\":%lld,\"probe_p99_us\":%lld,"
                   "\"incomplete\":%lld,\"filesystem\":\"%s\",\"mount\":\"%s\",\"server_version\":\"%s\"}",
                   mean(su[i].pub_rate, o.rounds), (long long)hist_quantile(&su[i].ack, 0.5),
                   (long long)hist_quantile(&su[i].ack, 0.99), su[i].pub_errors,
                   (long long)hist_quantile(&su[i].probe, 0.5), (long long)hist_quantile(&su[i].probe, 0.99),
                   su[i].incomplete, su[i].fs,
                   su[i].mount, su[i].version);
        }
        printf("],\"ratio_r1_always_default\":%.3f,\"ratio_r3_always_default\":%.3f}\n", r1, r3);
    }
    long long incomplete = 0;
    for (int i = 0; i < DUR_SETUPS; i++)
        incomplete += su[i].incomplete;
    free(su);
    return incomplete ? 1 : 0;
}

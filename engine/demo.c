/* demo.c - `verdict demo`: the main job a newcomer runs.
 *
 * Starts a private nats-server (unless --nats-url is given), the engine in-process, and a simulated payment
 * service that sends realistic transactions from the synthetic generator: most as decide requests (request/
 * reply, latency measured per request), some published straight to the TXN stream, plus a few client retries
 * (duplicates) and poison messages, so every path of the engine shows up. It prints decisions as they arrive
 * (every review and decline, a sample of approvals), a progress line, and a summary table, then cleans up. */
#include "cli.h"
#include "codec.h"
#include "config.h"
#include "broker.h"
#include "localserver.h"
#include "log.h"
#include "pipeline.h"
#include "simgen.h"

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#define DEMO_MAX_CLIENTS 64

typedef struct demo {
    config cfg;
    natsConnection *nc;
    jsCtx *js;
    simgen *gen;
    pthread_mutex_t gen_mu;
    pthread_mutex_t out_mu;
    int total;
    atomic_int next;
    atomic_int sent_requests, sent_direct, sent_dups, sent_poison, refused;
    atomic_int decisions[4], dead_letters, dup_answers, req_errors, printed_approvals;
    int64_t *lat_us; /* one slot per transaction */
    atomic_int nlat;
    bool quiet;
    int clients;
    uint64_t dl_ids[4096]; /* dead-letter ids seen (under out_mu) */
    int ndl_ids;
} demo;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static const char *hdr(natsMsg *m, const char *key)
{
    const char *v = NULL;
    if (natsMsgHeader_Get(m, key, &v) != NATS_OK || !v)
        return "";
    return v;
}

static void on_decision(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc;
    (void)sub;
    demo *d = closure;
    const char *outcome = hdr(m, "Verdict-Outcome");
    int o = strcmp(outcome, "decline") == 0 ? 3 : strcmp(outcome, "review") == 0 ? 2 : 1;
    atomic_fetch_add(&d->decisions[o], 1);
    bool show = o != 1 || atomic_fetch_add(&d->printed_approvals, 1) % 200 == 0;
    if (show && !d->quiet) {
        pthread_mutex_lock(&d->out_mu);
        printf("  %-8s %-18s %6s us  %s%s\n", o == 3 ? "DECLINE" : o == 2 ? "REVIEW" : "approve",
               hdr(m, "Nats-Msg-Id"), hdr(m, "Verdict-Latency-Us"), hdr(m, "Verdict-Reasons"),
               hdr(m, "Verdict-Degraded")[0] ? "  (degraded)" : "");
        pthread_mutex_unlock(&d->out_mu);
    }
    natsMsg_Destroy(m);
}

static void on_dead_letter(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)nc;
    (void)sub;
    demo *d = closure;
    /* A poison message is dead-lettered by the worker and, after its term advisory, offered again by the DLQ
     * worker under the same Nats-Msg-Id: the stream stores it once, but a plain subscriber sees both
     * publishes, so count each dead letter id once. */
    uint64_t id = hash64_str(hdr(m, "Nats-Msg-Id"));
    bool seen = false;
    pthread_mutex_lock(&d->out_mu);
    for (int i = 0; i < d->ndl_ids && !seen; i++)
        seen = d->dl_ids[i] == id;
    if (!seen && d->ndl_ids < (int)ARRAY_LEN(d->dl_ids))
        d->dl_ids[d->ndl_ids++] = id;
    pthread_mutex_unlock(&d->out_mu);
    if (seen) {
        natsMsg_Destroy(m);
        return;
    }
    atomic_fetch_add(&d->dead_letters, 1);
    if (!d->quiet) {
        pthread_mutex_lock(&d->out_mu);
        printf("  %-8s seq %-14s %s: %s\n", "DLQ", hdr(m, "Verdict-Original-Seq"), hdr(m, "Verdict-Dlq-Reason"),
               hdr(m, "Verdict-Error"));
        pthread_mutex_unlock(&d->out_mu);
    }
    natsMsg_Destroy(m);
}

static void progress(demo *d, bool final)
{
    int sent = atomic_load(&d->next);
    if (sent > d->total)
        sent = d->total;
    int decided = atomic_load(&d->decisions[1]) + atomic_load(&d->decisions[2]) + atomic_load(&d->decisions[3]);
    pthread_mutex_lock(&d->out_mu);
    fprintf(stderr, "%s[demo] sent %d/%d  decided %d  dead letters %d%s", final ? "" : "", sent, d->total, decided,
            atomic_load(&d->dead_letters), final ? "\n" : "\n");
    pthread_mutex_unlock(&d->out_mu);
}

/* One simulated payment-service thread: takes the next transaction and sends it. */
static void *client_main(void *arg)
{
    demo *d = arg;
    unsigned char buf[4096];
    for (;;) {
        int i = atomic_fetch_add(&d->next, 1);
        if (i >= d->total)
            break;
        Transaction t;
        pthread_mutex_lock(&d->gen_mu);
        simgen_next(d->gen, &t);
        size_t n = verdict__v1__transaction__pack(&t, buf);
        char txn_id[80];
        str_copy(txn_id, sizeof txn_id, t.txn_id);
        pthread_mutex_unlock(&d->gen_mu);

        if (i % 3 == 2) {
            /* a payment service that writes to the stream directly and reads decisions later */
            char subj[NAME_MAX_LEN + 80];
            snprintf(subj, sizeof subj, "%.*s.direct.%s", (int)(strlen(d->cfg.txn_subjects) - 2),
                     d->cfg.txn_subjects, txn_id);
            jsPubOptions po;
            jsPubOptions_Init(&po);
            po.MsgId = txn_id;
            po.MaxWait = 5000;
            if (js_PublishAsync(d->js, subj, buf, (int)n, &po) == NATS_OK)
                atomic_fetch_add(&d->sent_direct, 1);
            continue;
        }
        natsMsg *reply = NULL;
        int64_t t0 = now_us();
        natsStatus s = natsConnection_Request(&reply, d->nc, d->cfg.decide_subject, buf, (int)n, 5000);
        int64_t lat = now_us() - t0;
        atomic_fetch_add(&d->sent_requests, 1);
        if (s == NATS_OK && !hdr(reply, "Nats-Service-Error")[0])
            d->lat_us[atomic_fetch_add(&d->nlat, 1)] = lat;
        else
            atomic_fetch_add(&d->req_errors, 1);
        natsMsg_Destroy(reply);

        if (i % 97 == 0) {
            /* a client retry after a lost reply: must get the same decision, not a new one */
            reply = NULL;
            s = natsConnection_Request(&reply, d->nc, d->cfg.decide_subject, buf, (int)n, 5000);
            atomic_fetch_add(&d->sent_dups, 1);
            if (s == NATS_OK && strcmp(hdr(reply, "Verdict-Duplicate"), "true") == 0)
                atomic_fetch_add(&d->dup_answers, 1);
            natsMsg_Destroy(reply);
        }
        if (i % 750 == 0) {
            /* poison: garbage straight into the stream, and a request with an invalid txn_id */
            char subj[NAME_MAX_LEN + 80], id[40];
            snprintf(subj, sizeof subj, "%.*s.direct.garbage", (int)(strlen(d->cfg.txn_subjects) - 2),
                     d->cfg.txn_subjects);
            snprintf(id, sizeof id, "poison-%d", i);
            jsPubOptions po;
            jsPubOptions_Init(&po);
            po.MsgId = id;
            po.MaxWait = 5000;
            if (js_PublishAsync(d->js, subj, "\xff\xff\xff not protobuf", 16, &po) == NATS_OK)
                atomic_fetch_add(&d->sent_poison, 1);
            Transaction bad = t;
            pthread_mutex_lock(&d->gen_mu);
            simgen_next(d->gen, &bad);
            bad.txn_id = "not a valid id!";
            n = verdict__v1__transaction__pack(&bad, buf);
            pthread_mutex_unlock(&d->gen_mu);
            reply = NULL;
            s = natsConnection_Request(&reply, d->nc, d->cfg.decide_subject, buf, (int)n, 5000);
            if (s == NATS_OK && hdr(reply, "Nats-Service-Error")[0])
                atomic_fetch_add(&d->refused, 1);
            natsMsg_Destroy(reply);
        }
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void demo_help(void)
{
    printf("usage: verdict demo [--count N] [--seed N] [--clients N] [--quiet] [options]\n\n"
           "Starts a private nats-server on a free loopback port with a temporary store (unless --nats-url is\n"
           "given), runs the engine, and simulates a payment service sending N transactions (default 3000):\n"
           "two thirds as decide requests, one third published straight to the TXN stream, plus client retries\n"
           "and a few poison messages. Prints decisions as they arrive and a summary, then cleans up.\n\n"
           "  --count N                  transactions to send (default 3000)\n"
           "  --seed N                   generator seed (default 42)\n"
           "  --clients N                concurrent payment-service threads (default 4, at most 64)\n"
           "  --quiet                    print only progress and the summary\n"
           "  --no-engine                do not run an engine here: send to engines already serving --nats-url\n\n"
           "Rules and model: --rules and --model (default: rules/default.rules and models/verdict-gbdt.json of\n"
           "the source tree when present).\n\n"
           "engine options (flag, then its environment variable):\n");
    config_print_help(stdout, "demo");
}

int cmd_demo(int argc, char **argv)
{
    demo d;
    memset(&d, 0, sizeof d);
    config_defaults(&d.cfg);
    d.total = 3000;
    d.clients = 4;
    uint64_t seed = 42;
    bool help;
    int rest[64], nrest = 0;
    verror e = {0};
    bool url_given = getenv("VERDICT_NATS_URL") != NULL, no_engine = false;
    if (argc > 64 || config_parse(&d.cfg, argc, argv, &help, rest, &nrest, &e) != V_OK) {
        fprintf(stderr, "verdict demo: %s\n", e.msg[0] ? e.msg : "too many arguments");
        return 2;
    }
    for (int k = 0; k < nrest; k++) {
        const char *a = argv[rest[k]];
        const char *v = (k + 1 < nrest && rest[k + 1] == rest[k] + 1) ? argv[rest[k] + 1] : NULL;
        if (strcmp(a, "--quiet") == 0)
            d.quiet = true;
        else if (strcmp(a, "--no-engine") == 0)
            no_engine = true;
        else if (strcmp(a, "--count") == 0 && v && atoi(v) > 0) {
            d.total = atoi(v);
            k++;
        } else if (strcmp(a, "--clients") == 0 && v && atoi(v) > 0 && atoi(v) <= DEMO_MAX_CLIENTS) {
            d.clients = atoi(v);
            k++;
        } else if (strcmp(a, "--seed") == 0 && v) {
            seed = strtoull(v, NULL, 10);
            k++;
        } else {
            fprintf(stderr, "verdict demo: unknown or incomplete option '%s' (see --help)\n", a);
            return 2;
        }
    }
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], "--nats-url", 10) == 0)
            url_given = true;
    if (help) {
        demo_help();
        return 0;
    }
    log_set_component("demo");
    log_set_quiet(1);

    localserver ls = {0};
    if (!url_given) {
        fprintf(stderr, "[demo] starting a private nats-server with JetStream...\n");
        if (localserver_start(&ls, &e) != V_OK) {
            fprintf(stderr, "verdict demo: %s\n", e.msg);
            return 1;
        }
        str_copy(d.cfg.nats_url, sizeof d.cfg.nats_url, ls.url);
        fprintf(stderr, "[demo] nats-server on %s, store %s\n", ls.url, ls.dir);
    }
    int rc = 1;
    engine *en = NULL;
    natsSubscription *dsub = NULL, *lsub = NULL;
    pthread_t th[DEMO_MAX_CLIENTS];
    int started = 0;
    pthread_mutex_init(&d.gen_mu, NULL);
    pthread_mutex_init(&d.out_mu, NULL);
    simgen_cfg gc = {.seed = seed, .start_ms = now_ms() - 3600 * 1000};
    d.gen = simgen_create(&gc);
    d.lat_us = calloc((size_t)d.total, sizeof *d.lat_us);
    if (!d.gen || !d.lat_us) {
        fprintf(stderr, "verdict demo: out of memory\n");
        goto out;
    }
    if (!d.cfg.rules_file[0] && access(VERDICT_SOURCE_DIR "/rules/default.rules", R_OK) == 0)
        str_copy(d.cfg.rules_file, sizeof d.cfg.rules_file, VERDICT_SOURCE_DIR "/rules/default.rules");
    if (!d.cfg.model_file[0] && access(VERDICT_SOURCE_DIR "/models/verdict-gbdt.json", R_OK) == 0)
        str_copy(d.cfg.model_file, sizeof d.cfg.model_file, VERDICT_SOURCE_DIR "/models/verdict-gbdt.json");
    if (no_engine && !url_given) {
        fprintf(stderr, "verdict demo: --no-engine needs --nats-url (the server the engines use)\n");
        goto out;
    }
    if (!no_engine)
        fprintf(stderr, "[demo] starting the engine (%d workers, rules %s, model %s)...\n", d.cfg.workers,
                d.cfg.rules_file[0] ? d.cfg.rules_file : "built-in", d.cfg.model_file[0] ? d.cfg.model_file : "none");
    if (!no_engine && engine_start(&d.cfg, &en, &e) != V_OK) {
        fprintf(stderr, "verdict demo: cannot start the engine: %s\n", e.msg);
        goto out;
    }
    if (broker_connect_simple(&d.cfg, &d.nc, &e) != V_OK) {
        fprintf(stderr, "verdict demo: %s\n", e.msg);
        goto out;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = 1024;
    char dsubj[NAME_MAX_LEN + 4], lsubj[NAME_MAX_LEN + 4];
    snprintf(dsubj, sizeof dsubj, "%s.>", d.cfg.decision_prefix);
    snprintf(lsubj, sizeof lsubj, "%s.>", d.cfg.dlq_prefix);
    if (natsConnection_JetStream(&d.js, d.nc, &jo) != NATS_OK ||
        natsConnection_Subscribe(&dsub, d.nc, dsubj, on_decision, &d) != NATS_OK ||
        natsConnection_Subscribe(&lsub, d.nc, lsubj, on_dead_letter, &d) != NATS_OK ||
        natsSubscription_SetPendingLimits(dsub, -1, -1) != NATS_OK ||
        natsConnection_Flush(d.nc) != NATS_OK) {
        fprintf(stderr, "verdict demo: cannot subscribe: %s\n", nats_GetLastError(NULL));
        goto out;
    }
    fprintf(stderr, "[demo] simulated payment service: sending %d transactions (reviews and declines are "
                    "printed, approvals sampled)\n\n",
            d.total);
    printf("  %-8s %-18s %9s  %s\n", "OUTCOME", "TXN", "LATENCY", "REASONS");
    int64_t t0 = now_ms();
    for (; started < d.clients; started++)
        if (pthread_create(&th[started], NULL, client_main, &d) != 0)
            break;
    int64_t last = 0;
    for (;;) {
        int decided = atomic_load(&d.decisions[1]) + atomic_load(&d.decisions[2]) + atomic_load(&d.decisions[3]);
        int expected = atomic_load(&d.sent_requests) + atomic_load(&d.sent_direct);
        bool sending = atomic_load(&d.next) < d.total;
        if (!sending && decided >= expected && atomic_load(&d.dead_letters) >= atomic_load(&d.sent_poison))
            break;
        if (now_ms() - t0 > 120000) {
            fprintf(stderr, "[demo] timed out waiting for decisions\n");
            break;
        }
        if (now_ms() - last >= 1000) {
            progress(&d, false);
            last = now_ms();
        }
        sleep_ms(20);
        if (!sending && started) {
            for (int i = 0; i < started; i++)
                pthread_join(th[i], NULL);
            started = 0;
            js_PublishAsyncComplete(d.js, NULL);
        }
    }
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    int64_t elapsed = now_ms() - t0;
    progress(&d, true);

    int nl = atomic_load(&d.nlat);
    qsort(d.lat_us, (size_t)nl, sizeof *d.lat_us, cmp_i64);
    int decided = d.decisions[1] + d.decisions[2] + d.decisions[3];
    const engine_stats *st = en ? engine_get_stats(en) : NULL;
    printf("\n  Verdict demo summary\n  --------------------------------------------\n");
    printf("  transactions sent        %6d  (%d requests, %d straight to the stream)\n",
           d.sent_requests + d.sent_direct, d.sent_requests, d.sent_direct);
    printf("  decisions                %6d  in %.1f s (%.0f/s)\n", decided, elapsed / 1000.0,
           elapsed ? decided * 1000.0 / (double)elapsed : 0);
    printf("    approve                %6d\n    review                 %6d\n    decline                %6d\n",
           d.decisions[1], d.decisions[2], d.decisions[3]);
    printf("  decide latency p50       %6.2f ms  (request/reply, client side)\n",
           nl ? d.lat_us[nl / 2] / 1000.0 : 0);
    printf("  decide latency p99       %6.2f ms\n", nl ? d.lat_us[(nl * 99) / 100] / 1000.0 : 0);
    printf("  client retries           %6d  answered from the stored decision: %d\n", d.sent_dups,
           d.dup_answers);
    printf("  dead letters             %6d  (poison sent: %d)\n", d.dead_letters, d.sent_poison);
    printf("  requests refused         %6d  (invalid, answered at once with an error)\n", d.refused);
    printf("  request errors           %6d\n", d.req_errors);
    if (st)
        printf("  engine: duplicates %lld, naks %lld, redeliveries %lld\n", (long long)st->duplicates,
               (long long)st->naks, (long long)st->redeliveries);
    rc = (decided == d.sent_requests + d.sent_direct && d.dead_letters == d.sent_poison && d.req_errors == 0 &&
          d.dup_answers == d.sent_dups)
             ? 0
             : 1;
    printf("  result                   %s\n\n", rc == 0 ? "ok: every transaction has exactly one decision or dead letter"
                                                        : "MISMATCH: see counts above");
out:
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    natsSubscription_Destroy(dsub);
    natsSubscription_Destroy(lsub);
    jsCtx_Destroy(d.js);
    natsConnection_Destroy(d.nc);
    engine_stop(en);
    simgen_destroy(d.gen);
    free(d.lat_us);
    nats_Close();
    if (!url_given) {
        localserver_stop(&ls);
        fprintf(stderr, "[demo] nats-server stopped, store removed\n");
    }
    return rc;
}

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
#include "partition.h"
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
/* How long a simulated payment service keeps retrying one transaction (a cluster failover takes seconds; the
 * engine itself retries its decision publishes for up to 30 s) */
#define DEMO_RETRY_MS 60000
#define DEMO_ATTEMPT_MS 5000 /* one request's or publish's own timeout */

/* What is known about one transaction (or one poison message) of this run, by its index. */
enum { ACC_NONE = 0, ACC_YES, ACC_GAVE_UP };
enum { END_DECIDED = 1, END_DEAD = 2 };

typedef struct demo {
    config cfg;
    natsConnection *nc;
    jsCtx *js;
    simgen *gen;
    pthread_mutex_t gen_mu;
    pthread_mutex_t out_mu;
    int total;
    char run[16]; /* run id: the prefix of every txn id this run sends */
    size_t runlen;
    atomic_int next;
    atomic_int sent_requests, sent_direct, sent_dups, sent_poison, refused;
    atomic_int decisions[4], dead_letters, poison_dead, dup_answers, req_errors, printed_approvals;
    atomic_int retries, gave_up;
    atomic_uchar *accepted;   /* per txn index: ACC_* (set by the client that sent it) */
    atomic_uchar *ended;      /* per txn index: END_* bits (set when its decision / dead letter is read) */
    atomic_uchar *poison_acc; /* per txn index: a poison message was sent with it (ACC_*) */
    atomic_uchar *poison_end; /* ... and its dead letter was read */
    int64_t *lat_us;          /* one slot per request */
    atomic_int nlat;
    bool quiet;
    int clients;
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

/* The index of a txn id of this run ("<run>-<index>", or "<run>-p<index>" for poison when poison is set), or
 * -1 when the id is another run's or another client's. */
static int run_index(const demo *d, const char *id, bool *poison)
{
    if (strncmp(id, d->run, d->runlen) != 0 || id[d->runlen] != '-')
        return -1;
    const char *p = id + d->runlen + 1;
    *poison = *p == 'p';
    if (*poison)
        p++;
    char *end = NULL;
    long v = strtol(p, &end, 10);
    if (end == p || *end || v < 0 || v >= d->total)
        return -1;
    return (int)v;
}

/* A decision read from the DECISIONS stream: counted when it is this run's and the first for its txn. */
static void on_decision(demo *d, natsMsg *m)
{
    const char *subj = natsMsg_GetSubject(m), *dot = strrchr(subj, '.');
    bool poison = false;
    int i = dot ? run_index(d, dot + 1, &poison) : -1;
    if (i < 0 || poison || (atomic_fetch_or(&d->ended[i], END_DECIDED) & END_DECIDED)) {
        natsMsg_Destroy(m);
        return;
    }
    const char *outcome = hdr(m, "Verdict-Outcome");
    int o = strcmp(outcome, "decline") == 0 ? 3 : strcmp(outcome, "review") == 0 ? 2 : 1;
    atomic_fetch_add(&d->decisions[o], 1);
    bool show = o != 1 || atomic_fetch_add(&d->printed_approvals, 1) % 200 == 0;
    if (show && !d->quiet) {
        pthread_mutex_lock(&d->out_mu);
        printf("  %-8s %-18s %6s us  %s%s\n", o == 3 ? "DECLINE" : o == 2 ? "REVIEW" : "approve", dot + 1,
               hdr(m, "Verdict-Latency-Us"), hdr(m, "Verdict-Reasons"),
               hdr(m, "Verdict-Degraded")[0] ? "  (degraded)" : "");
        pthread_mutex_unlock(&d->out_mu);
    }
    natsMsg_Destroy(m);
}

/* A dead letter read from the DLQ stream, this run's by Verdict-Txn-Id: the poison it sent, and any of its
 * transactions the engine gave up on. */
static void on_dead_letter(demo *d, natsMsg *m)
{
    bool poison = false;
    int i = run_index(d, hdr(m, "Verdict-Txn-Id"), &poison);
    atomic_uchar *flags = poison ? d->poison_end : d->ended;
    if (i < 0 || (atomic_fetch_or(&flags[i], END_DEAD) & END_DEAD)) {
        natsMsg_Destroy(m);
        return;
    }
    atomic_fetch_add(poison ? &d->poison_dead : &d->dead_letters, 1);
    if (!d->quiet) {
        pthread_mutex_lock(&d->out_mu);
        printf("  %-8s %-18s %s: %s\n", "DLQ", hdr(m, "Verdict-Txn-Id"), hdr(m, "Verdict-Dlq-Reason"),
               hdr(m, "Verdict-Error"));
        pthread_mutex_unlock(&d->out_mu);
    }
    natsMsg_Destroy(m);
}

static void progress(demo *d)
{
    int sent = atomic_load(&d->next);
    if (sent > d->total)
        sent = d->total;
    int decided = atomic_load(&d->decisions[1]) + atomic_load(&d->decisions[2]) + atomic_load(&d->decisions[3]);
    pthread_mutex_lock(&d->out_mu);
    fprintf(stderr, "[demo] sent %d/%d  decided %d  dead letters %d  retries %d\n", sent, d->total, decided,
            atomic_load(&d->dead_letters) + atomic_load(&d->poison_dead), atomic_load(&d->retries));
    pthread_mutex_unlock(&d->out_mu);
}

/* Backoff between attempts: 100 ms doubling to 2 s, with jitter so that clients do not retry in step. */
static int backoff_ms(int attempt)
{
    int b = 100 << (attempt < 5 ? attempt : 5);
    if (b > 2000)
        b = 2000;
    return b / 2 + (int)((hash64(&attempt, sizeof attempt) ^ (uint64_t)now_us()) % (uint64_t)(b / 2 + 1));
}

/* A decide request as a payment service sends it: the same bytes (the same txn id) again after a timeout,
 * "no responders", or an error reply the engine marks retryable (503 not accepted, 504 not stored in time, 409
 * still being decided), with backoff, for up to DEMO_RETRY_MS. Returns 1 with the decision in *out, 0 when
 * refused (a 4xx other than 409; the error reply in *out), -1 when it gave up. */
static int decide_request(demo *d, const void *buf, int n, natsMsg **out)
{
    *out = NULL;
    int64_t give_up = now_ms() + DEMO_RETRY_MS;
    for (int attempt = 0;; attempt++) {
        if (attempt > 0)
            atomic_fetch_add(&d->retries, 1);
        natsMsg *r = NULL;
        natsStatus s = natsConnection_Request(&r, d->nc, d->cfg.decide_subject, buf, n, DEMO_ATTEMPT_MS);
        if (s == NATS_OK) {
            const char *code = hdr(r, "Nats-Service-Error-Code");
            if (!code[0]) {
                *out = r;
                return 1;
            }
            int c = atoi(code);
            if (c != 503 && c != 504 && c != 409 && c < 500) {
                *out = r;
                return 0;
            }
        }
        natsMsg_Destroy(r);
        if (now_ms() >= give_up)
            return -1;
        sleep_ms(backoff_ms(attempt));
    }
}

/* A publish straight to the stream, retried the same way with the same Nats-Msg-Id (the TXN duplicate window
 * makes a retry of a publish that was stored after all harmless). */
static bool publish_retry(demo *d, const char *subj, const void *buf, int n, const char *msgid);

/* Where a direct publish goes: partitioned (--partitions N), the partition subject <base>.<P>.<key> with
 * P = partition_of(key), as a payment service computes it (a subject outside the partitions would be stored in
 * TXN but delivered by no partition's consumer); otherwise <base>.direct.<txn_id>. key is the card, or the id of
 * a poison message, which has none. */
static void direct_subject(const demo *d, const char *key, const char *txn_id, char *out, size_t cap)
{
    int base = (int)(strlen(d->cfg.txn_subjects) - 2);
    size_t kn = key ? strlen(key) : 0;
    if (d->cfg.partitions > 0 && partition_key_ok(key, kn))
        snprintf(out, cap, "%.*s.%u.%s", base, d->cfg.txn_subjects,
                 partition_of(key, kn, (uint32_t)d->cfg.partitions), key);
    else
        snprintf(out, cap, "%.*s.direct.%s", base, d->cfg.txn_subjects, txn_id);
}

static bool publish_retry(demo *d, const char *subj, const void *buf, int n, const char *msgid)
{
    int64_t give_up = now_ms() + DEMO_RETRY_MS;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msgid;
    po.MaxWait = DEMO_ATTEMPT_MS;
    for (int attempt = 0;; attempt++) {
        if (attempt > 0)
            atomic_fetch_add(&d->retries, 1);
        jsPubAck *pa = NULL;
        natsStatus s = js_Publish(&pa, d->js, subj, buf, n, &po, NULL);
        jsPubAck_Destroy(pa);
        if (s == NATS_OK)
            return true;
        if (now_ms() >= give_up)
            return false;
        sleep_ms(backoff_ms(attempt));
    }
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
        char txn_id[40];
        snprintf(txn_id, sizeof txn_id, "%s-%06d", d->run, i);
        pthread_mutex_lock(&d->gen_mu);
        simgen_next(d->gen, &t);
        t.txn_id = txn_id;
        size_t n = verdict__v1__transaction__pack(&t, buf);
        pthread_mutex_unlock(&d->gen_mu);

        if (i % 3 == 2) {
            /* a payment service that writes to the stream directly and reads decisions later */
            char subj[NAME_MAX_LEN + 300];
            direct_subject(d, t.card_id, txn_id, subj, sizeof subj);
            bool ok = publish_retry(d, subj, buf, (int)n, txn_id);
            atomic_store(&d->accepted[i], ok ? ACC_YES : ACC_GAVE_UP);
            atomic_fetch_add(ok ? &d->sent_direct : &d->gave_up, 1);
            continue;
        }
        natsMsg *reply = NULL;
        int64_t t0 = now_us();
        int rc = decide_request(d, buf, (int)n, &reply);
        int64_t lat = now_us() - t0;
        if (rc == 1) {
            d->lat_us[atomic_fetch_add(&d->nlat, 1)] = lat;
            atomic_store(&d->accepted[i], ACC_YES);
            atomic_fetch_add(&d->sent_requests, 1);
        } else if (rc == 0) {
            atomic_fetch_add(&d->req_errors, 1); /* a valid transaction refused: not expected */
            pthread_mutex_lock(&d->out_mu);
            fprintf(stderr, "[demo] %s refused: %s\n", txn_id, hdr(reply, "Nats-Service-Error"));
            pthread_mutex_unlock(&d->out_mu);
        } else {
            atomic_store(&d->accepted[i], ACC_GAVE_UP);
            atomic_fetch_add(&d->gave_up, 1);
        }
        natsMsg_Destroy(reply);

        if (rc == 1 && i % 97 == 0) {
            /* a client retry after a lost reply: must get the same decision, not a new one */
            atomic_fetch_add(&d->sent_dups, 1);
            if (decide_request(d, buf, (int)n, &reply) == 1 && strcmp(hdr(reply, "Verdict-Duplicate"), "true") == 0)
                atomic_fetch_add(&d->dup_answers, 1);
            natsMsg_Destroy(reply);
        }
        if (i % 750 == 0) {
            /* poison: garbage straight into the stream (its Nats-Msg-Id becomes the dead letter's
             * Verdict-Txn-Id, so the run finds its own), and a request with an invalid txn_id */
            char subj[NAME_MAX_LEN + 300], id[40];
            snprintf(id, sizeof id, "%s-p%06d", d->run, i);
            direct_subject(d, id, id, subj, sizeof subj);
            bool ok = publish_retry(d, subj, "\xff\xff\xff not protobuf", 16, id);
            atomic_store(&d->poison_acc[i], ok ? ACC_YES : ACC_GAVE_UP);
            if (ok)
                atomic_fetch_add(&d->sent_poison, 1);
            else
                atomic_fetch_add(&d->gave_up, 1);
            Transaction bad;
            pthread_mutex_lock(&d->gen_mu);
            simgen_next(d->gen, &bad);
            bad.txn_id = "not a valid id!";
            n = verdict__v1__transaction__pack(&bad, buf);
            pthread_mutex_unlock(&d->gen_mu);
            if (decide_request(d, buf, (int)n, &reply) == 0)
                atomic_fetch_add(&d->refused, 1);
            natsMsg_Destroy(reply);
        }
    }
    return NULL;
}

/* Every accepted transaction and poison message has ended (decision or dead letter)? Counts those that have
 * not, and those that ended both ways. */
static void reconcile(demo *d, int *missing, int *both, int *stored_after_error)
{
    *missing = *both = *stored_after_error = 0;
    for (int i = 0; i < d->total; i++) {
        int acc = atomic_load(&d->accepted[i]), end = atomic_load(&d->ended[i]);
        if (acc == ACC_YES && !end)
            (*missing)++;
        if (end == (END_DECIDED | END_DEAD))
            (*both)++;
        if (acc == ACC_GAVE_UP && end)
            (*stored_after_error)++;
        int pacc = atomic_load(&d->poison_acc[i]), pend = atomic_load(&d->poison_end[i]);
        if (pacc == ACC_YES && !pend)
            (*missing)++;
        if (pacc == ACC_GAVE_UP && pend)
            (*stored_after_error)++;
    }
}

/* Reads a stream from a sequence on, by direct gets (one message each, the next on the subject filter): every
 * stored message once, in order, stateless on the server, so a reconnect or a server restart loses nothing.
 * A subscription would miss what is published while the client reconnects, and would also see each retried
 * publish that the stream deduplicated. */
typedef struct follower {
    const char *stream;
    char filter[NAME_MAX_LEN + 4];
    uint64_t next;
    void (*on_msg)(demo *d, natsMsg *m);
} follower;

static natsStatus follow_start(demo *d, follower *f, const char *stream, const char *prefix,
                               void (*on_msg)(demo *, natsMsg *))
{
    f->stream = stream;
    snprintf(f->filter, sizeof f->filter, "%s.>", prefix);
    f->on_msg = on_msg;
    jsStreamInfo *si = NULL;
    natsStatus s = js_GetStreamInfo(&si, d->js, stream, NULL, NULL);
    if (s != NATS_OK)
        return s;
    f->next = si->State.LastSeq + 1; /* what this run sends is stored after this */
    jsStreamInfo_Destroy(si);
    return NATS_OK;
}

/* Takes in what is new (at most max messages); errors are left for the next poll. */
static void follow_poll(demo *d, follower *f, int max)
{
    for (int i = 0; i < max; i++) {
        jsDirectGetMsgOptions o;
        jsDirectGetMsgOptions_Init(&o);
        o.Sequence = f->next;
        o.NextBySubject = f->filter;
        natsMsg *m = NULL;
        if (js_DirectGetMsg(&m, d->js, f->stream, NULL, &o) != NATS_OK)
            return; /* caught up (not found), or unavailable for now */
        uint64_t seq = natsMsg_GetSequence(m);
        if (seq < f->next) {
            natsMsg_Destroy(m);
            return;
        }
        f->next = seq + 1;
        f->on_msg(d, m);
    }
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
           "Every run has its own run id, the prefix of each txn id it sends, and counts only its own decisions\n"
           "and dead letters (read from the DECISIONS and DLQ streams), so runs can repeat against one server and\n"
           "share it with other clients. Like a payment service, it retries a request or publish that timed out\n"
           "or was answered 503, 504 or 409, with the same txn id and backoff, for up to %d s.\n\n"
           "  --count N                  transactions to send (default 3000)\n"
           "  --seed N                   generator seed (default 42)\n"
           "  --clients N                concurrent payment-service threads (default 4, at most 64)\n"
           "  --timeout S                seconds to wait for the last decisions once sending ends (default 120)\n"
           "  --quiet                    print only progress and the summary\n"
           "  --no-engine                do not run an engine here: send to engines already serving --nats-url\n\n"
           "Rules and model: --rules and --model (default: rules/default.rules and models/verdict-gbdt.json of\n"
           "the source tree when present).\n\n"
           "engine options (flag, then its environment variable):\n",
           DEMO_RETRY_MS / 1000);
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
    int timeout_s = 120;
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
        else if (strcmp(a, "--count") == 0 && v && atoi(v) > 0 && atoi(v) <= 10000000) {
            d.total = atoi(v);
            k++;
        } else if (strcmp(a, "--clients") == 0 && v && atoi(v) > 0 && atoi(v) <= DEMO_MAX_CLIENTS) {
            d.clients = atoi(v);
            k++;
        } else if (strcmp(a, "--seed") == 0 && v) {
            seed = strtoull(v, NULL, 10);
            k++;
        } else if (strcmp(a, "--timeout") == 0 && v && atoi(v) > 0 && atoi(v) <= 86400) {
            timeout_s = atoi(v);
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
    /* before anything is started: without a URL there is no server the engines could be on */
    if (no_engine && !url_given) {
        fprintf(stderr, "verdict demo: --no-engine needs --nats-url (the server the engines use)\n");
        return 2;
    }
    log_set_component("demo");
    log_set_quiet(1);

    /* the run id: distinct per run (time and process), short enough for a subject token with the index */
    uint64_t rid[2] = {(uint64_t)now_us(), (uint64_t)getpid()};
    snprintf(d.run, sizeof d.run, "d%08llx", (unsigned long long)(hash64(rid, sizeof rid) & 0xffffffffULL));
    d.runlen = strlen(d.run);

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
    follower fdec = {0}, fdlq = {0};
    pthread_t th[DEMO_MAX_CLIENTS];
    int started = 0;
    pthread_mutex_init(&d.gen_mu, NULL);
    pthread_mutex_init(&d.out_mu, NULL);
    simgen_cfg gc = {.seed = seed, .start_ms = now_ms() - 3600 * 1000};
    d.gen = simgen_create(&gc);
    d.lat_us = calloc((size_t)d.total, sizeof *d.lat_us);
    d.accepted = calloc((size_t)d.total, sizeof *d.accepted);
    d.ended = calloc((size_t)d.total, sizeof *d.ended);
    d.poison_acc = calloc((size_t)d.total, sizeof *d.poison_acc);
    d.poison_end = calloc((size_t)d.total, sizeof *d.poison_end);
    if (!d.gen || !d.lat_us || !d.accepted || !d.ended || !d.poison_acc || !d.poison_end) {
        fprintf(stderr, "verdict demo: out of memory\n");
        goto out;
    }
    if (!d.cfg.rules_file[0] && access(VERDICT_SOURCE_DIR "/rules/default.rules", R_OK) == 0)
        str_copy(d.cfg.rules_file, sizeof d.cfg.rules_file, VERDICT_SOURCE_DIR "/rules/default.rules");
    if (!d.cfg.model_file[0] && access(VERDICT_SOURCE_DIR "/models/verdict-gbdt.json", R_OK) == 0)
        str_copy(d.cfg.model_file, sizeof d.cfg.model_file, VERDICT_SOURCE_DIR "/models/verdict-gbdt.json");
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
    natsStatus ss = natsConnection_JetStream(&d.js, d.nc, NULL);
    if (ss == NATS_OK)
        ss = follow_start(&d, &fdec, d.cfg.decisions_stream, d.cfg.decision_prefix, on_decision);
    if (ss == NATS_OK)
        ss = follow_start(&d, &fdlq, d.cfg.dlq_stream, d.cfg.dlq_prefix, on_dead_letter);
    if (ss != NATS_OK) {
        fprintf(stderr, "verdict demo: cannot read the decisions and dead letters (%s; with --no-engine, has an "
                        "engine created the streams?): %s\n",
                natsStatus_GetText(ss), nats_GetLastError(NULL));
        goto out;
    }
    fprintf(stderr, "[demo] simulated payment service, run %s: sending %d transactions (reviews and declines are "
                    "printed, approvals sampled)\n\n",
            d.run, d.total);
    printf("  %-8s %-18s %9s  %s\n", "OUTCOME", "TXN", "LATENCY", "REASONS");
    int64_t t0 = now_ms();
    for (; started < d.clients; started++)
        if (pthread_create(&th[started], NULL, client_main, &d) != 0)
            break;
    /* the clients finish sending (each send ends accepted or given up) */
    int64_t last = 0;
    while (atomic_load(&d.next) < d.total + started) {
        follow_poll(&d, &fdec, 2000);
        follow_poll(&d, &fdlq, 100);
        if (now_ms() - last >= 1000) {
            progress(&d);
            last = now_ms();
        }
        sleep_ms(20);
    }
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    started = 0;
    /* then every accepted transaction ends, read from the streams */
    int missing = 0, both = 0, late = 0;
    int64_t wait_until = now_ms() + (int64_t)timeout_s * 1000;
    for (;;) {
        follow_poll(&d, &fdec, 1 << 30);
        follow_poll(&d, &fdlq, 1 << 30);
        reconcile(&d, &missing, &both, &late);
        if (missing == 0)
            break;
        if (now_ms() > wait_until) {
            fprintf(stderr, "[demo] timed out waiting for %d decisions or dead letters\n", missing);
            break;
        }
        if (now_ms() - last >= 1000) {
            progress(&d);
            last = now_ms();
        }
        sleep_ms(50);
    }
    int64_t elapsed = now_ms() - t0;
    progress(&d);

    int nl = atomic_load(&d.nlat);
    qsort(d.lat_us, (size_t)nl, sizeof *d.lat_us, cmp_i64);
    int decided = d.decisions[1] + d.decisions[2] + d.decisions[3];
    const engine_stats *st = en ? engine_get_stats(en) : NULL;
    printf("\n  Verdict demo summary (run %s)\n  --------------------------------------------\n", d.run);
    printf("  transactions accepted    %6d  (%d requests, %d straight to the stream)\n",
           d.sent_requests + d.sent_direct, d.sent_requests, d.sent_direct);
    printf("  decisions                %6d  in %.1f s (%.0f/s)\n", decided, elapsed / 1000.0,
           elapsed ? decided * 1000.0 / (double)elapsed : 0);
    printf("    approve                %6d\n    review                 %6d\n    decline                %6d\n",
           d.decisions[1], d.decisions[2], d.decisions[3]);
    printf("  decide latency p50       %6.2f ms  (request/reply, client side, retries included)\n",
           nl ? d.lat_us[nl / 2] / 1000.0 : 0);
    printf("  decide latency p99       %6.2f ms\n", nl ? d.lat_us[(nl * 99) / 100] / 1000.0 : 0);
    printf("  client retries           %6d  answered from the stored decision: %d\n", d.sent_dups,
           d.dup_answers);
    printf("  retried sends            %6d  (timeouts, 503/504/409; same txn id, backoff)\n", d.retries);
    printf("  dead letters             %6d  (poison sent: %d)\n", d.poison_dead, d.sent_poison);
    if (d.dead_letters)
        printf("  transactions dead-lettered %4d  (the engine could not decide them: see verdict dlq ls)\n",
               d.dead_letters);
    printf("  requests refused         %6d  (invalid, answered at once with an error)\n", d.refused);
    printf("  request errors           %6d\n", d.req_errors);
    if (d.gave_up)
        printf("  given up after %d s      %6d  (never confirmed; %d of them were stored after all)\n",
               DEMO_RETRY_MS / 1000, d.gave_up, late);
    if (missing || both)
        printf("  unaccounted              %6d  (accepted, no decision or dead letter)\n  both                     "
               "%6d  (a decision and a dead letter)\n",
               missing, both);
    if (st)
        printf("  engine: duplicates %lld, naks %lld, redeliveries %lld\n", (long long)st->duplicates,
               (long long)st->naks, (long long)st->redeliveries);
    bool balanced = missing == 0 && both == 0 && d.poison_dead == d.sent_poison;
    rc = balanced && d.req_errors == 0 && d.gave_up == 0 && d.dup_answers == d.sent_dups ? 0 : 1;
    printf("  result                   %s\n\n",
           rc == 0    ? "ok: every transaction has exactly one decision or dead letter"
           : balanced ? "FAILED: every accepted transaction has exactly one decision or dead letter, but some "
                        "sends failed (see counts above)"
                      : "MISMATCH: see counts above");
out:
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    jsCtx_Destroy(d.js);
    natsConnection_Destroy(d.nc);
    engine_stop(en);
    simgen_destroy(d.gen);
    free(d.lat_us);
    free(d.accepted);
    free(d.ended);
    free(d.poison_acc);
    free(d.poison_end);
    nats_Close();
    if (!url_given) {
        localserver_stop(&ls);
        fprintf(stderr, "[demo] nats-server stopped, store removed\n");
    }
    return rc;
}

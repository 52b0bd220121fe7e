/* replay_cli.c - `verdict replay`: run candidate rules (and model) over transactions stored in TXN and show
 * how outcomes would change against the decisions actually stored, before the rules go live.
 *
 * Reads with ordered ephemeral consumers (streamread.h), so the engine's durable consumer is never touched and
 * nothing is acked or published. The stored outcome of each transaction comes from DECISIONS (indexed by
 * txn_id from the range's start time on); the candidate outcome from the same decide step the engine runs. */
#include "cli.h"
#include "cliconn.h"
#include "codec.h"
#include "decide.h"
#include "log.h"
#include "streamread.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLES_MAX 10

/* txn_id hash -> stored outcome (1..3), open addressing; 0 keys are empty. */
typedef struct outmap {
    uint64_t *keys;
    uint8_t *vals;
    size_t cap, n;
} outmap;

static bool outmap_init(outmap *m, size_t n)
{
    m->cap = 1024;
    while (m->cap < n * 2)
        m->cap *= 2;
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->vals = calloc(m->cap, 1);
    m->n = 0;
    return m->keys && m->vals;
}

static bool outmap_grow(outmap *m);

static void outmap_put(outmap *m, uint64_t k, uint8_t v)
{
    k |= 1;
    if ((m->n + 1) * 2 > m->cap && !outmap_grow(m))
        return;
    size_t i = (size_t)(k * 0x9E3779B97F4A7C15ULL) & (m->cap - 1);
    while (m->keys[i] && m->keys[i] != k)
        i = (i + 1) & (m->cap - 1);
    if (!m->keys[i])
        m->n++;
    m->keys[i] = k;
    m->vals[i] = v;
}

static bool outmap_grow(outmap *m)
{
    outmap bigger;
    if (!outmap_init(&bigger, m->cap))
        return false;
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i])
            outmap_put(&bigger, m->keys[i], m->vals[i]);
    free(m->keys);
    free(m->vals);
    *m = bigger;
    return true;
}

static uint8_t outmap_get(const outmap *m, uint64_t k)
{
    k |= 1;
    size_t i = (size_t)(k * 0x9E3779B97F4A7C15ULL) & (m->cap - 1);
    while (m->keys[i]) {
        if (m->keys[i] == k)
            return m->vals[i];
        i = (i + 1) & (m->cap - 1);
    }
    return 0;
}

static void replay_help(void)
{
    printf("usage: verdict replay --rules FILE [--model FILE] [--last N | --from SEQ [--to SEQ]] [--samples K] "
           "[--json]\n\n"
           "Runs the candidate rules (and model, if given) over transactions stored in the TXN stream and prints\n"
           "how outcomes would change against the decisions actually stored: a transition table\n"
           "(approve -> decline, ...) and up to K sample txn ids per transition (default 3). Read-only: it uses\n"
           "an ephemeral ordered consumer, never the engine's durable one, and publishes nothing.\n"
           "Default range: the last 10000 transactions. Progress goes to stderr.\n"
           "Velocity features are rebuilt from the replayed range itself (history before --from is not read),\n"
           "and lists/profiles are not consulted, so rules reading them see missing values (docs/rules.md).\n\n"
           "options (flag, then its environment variable):\n");
    config_print_help(stdout, "names");
}

static const char *oname(int o)
{
    static const char *n[] = {"none", "approve", "review", "decline"};
    return o >= 0 && o <= 3 ? n[o] : "?";
}

int cmd_replay(int argc, char **argv)
{
    int rest[64], nrest = 0;
    if (argc > 60) {
        fprintf(stderr, "verdict replay: too many arguments\n");
        return 2;
    }
    cliconn c = {0};
    int rc = cliconn_parse(&c, argc, argv, rest, &nrest, "replay", replay_help);
    if (rc)
        return rc < 0 ? 0 : rc;
    uint64_t from = 0, to = 0, last = 10000;
    int samples = 3;
    bool json = false;
    for (int k = 0; k < nrest; k++) {
        const char *a = argv[rest[k]];
        const char *v = k + 1 < nrest ? argv[rest[k + 1]] : NULL;
        char *end = NULL;
        if ((strcmp(a, "--from") == 0 || strcmp(a, "--to") == 0 || strcmp(a, "--last") == 0 ||
             strcmp(a, "--samples") == 0) && v) {
            unsigned long long x = strtoull(v, &end, 10);
            if (!*v || *end) {
                fprintf(stderr, "verdict replay: %s needs a number, got '%s'\n", a, v);
                cliconn_close(&c);
                return 2;
            }
            if (a[2] == 'f')
                from = x, last = 0;
            else if (a[2] == 't')
                to = x;
            else if (a[2] == 'l')
                last = x, from = 0;
            else
                samples = x > SAMPLES_MAX ? SAMPLES_MAX : (int)x;
            k++;
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else {
            fprintf(stderr, "verdict replay: unknown argument '%s' (see --help)\n", a);
            cliconn_close(&c);
            return 2;
        }
    }
    if (!c.cfg.rules_file[0]) {
        fprintf(stderr, "verdict replay: --rules FILE is required (the candidate rules)\n");
        cliconn_close(&c);
        return 2;
    }
    /* connected only once the arguments are known good: a usage error needs no server */
    if ((rc = cliconn_connect(&c, "replay")) != 0)
        return rc;
    policy *p = NULL;
    rules_diag diag = {0};
    if (policy_load(c.cfg.rules_file, c.cfg.model_file, &p, &diag) != V_OK) {
        fputs(diag.text ? diag.text : "", stderr);
        fprintf(stderr, "verdict replay: the candidate does not load; nothing replayed\n");
        rules_diag_free(&diag);
        cliconn_close(&c);
        return 1;
    }
    rules_diag_free(&diag);

    uint64_t tf, tl;
    if (!cliconn_stream_range(c.js, c.cfg.txn_stream, &tf, &tl) || tl == 0) {
        fprintf(stderr, "verdict replay: stream %s is missing or empty\n", c.cfg.txn_stream);
        policy_release(p);
        cliconn_close(&c);
        return 1;
    }
    if (last)
        from = tl >= last ? tl - last + 1 : 1;
    if (from < tf)
        from = tf;
    if (!to || to > tl)
        to = tl;

    verror e = {0};
    stream_reader *tr = NULL;
    if (stream_reader_open(c.js, c.cfg.txn_stream, NULL, from, 0, &tr, &e) != V_OK) {
        fprintf(stderr, "verdict replay: %s\n", e.msg);
        policy_release(p);
        cliconn_close(&c);
        return 1;
    }
    /* the first transaction's store time bounds where its decision can be in DECISIONS */
    natsMsg *first = NULL;
    uint64_t seq;
    int64_t store_ns = 0;
    vstatus s = stream_reader_next(tr, &first, &seq, &store_ns, 5000, &e);
    outmap om;
    if (!outmap_init(&om, 1 << 16)) {
        fprintf(stderr, "verdict replay: out of memory\n");
        natsMsg_Destroy(first);
        stream_reader_close(tr);
        free(om.keys);
        free(om.vals);
        policy_release(p);
        cliconn_close(&c);
        return 1;
    }
    stream_reader *dr = NULL;
    uint64_t ndec = 0;
    if (s == V_OK && stream_reader_open(c.js, c.cfg.decisions_stream, NULL, 0, store_ns - 60LL * 1000000000,
                                        &dr, &e) == V_OK) {
        natsMsg *m;
        int64_t t;
        while (stream_reader_next(dr, &m, &seq, &t, 2000, &e) == V_OK) {
            const char *o = cliconn_hdr(m, "Verdict-Outcome");
            uint8_t v = strcmp(o, "approve") == 0 ? 1 : strcmp(o, "review") == 0 ? 2 : strcmp(o, "decline") == 0 ? 3 : 0;
            const char *id = cliconn_hdr(m, "Nats-Msg-Id");
            if (v && id[0])
                outmap_put(&om, hash64_str(id), v);
            natsMsg_Destroy(m);
            if (++ndec % 50000 == 0)
                fprintf(stderr, "replay: indexed %llu stored decisions\n", (unsigned long long)ndec);
        }
        stream_reader_close(dr);
    }

    static fval vals[FEAT_MAX];
    arena a;
    arena_init(&a, 1 << 20);
    uint64_t table[4][4] = {{0}};
    char sample[4][4][SAMPLES_MAX][72];
    int nsample[4][4] = {{0}};
    uint64_t total = 0, undecodable = 0;
    int64_t t0 = mono_ns(), last_progress = t0;
    natsMsg *m = first;
    while (m) {
        if (seq > to) {
            natsMsg_Destroy(m);
            break;
        }
        arena_reset(&a);
        Transaction *t = NULL;
        poison_reason why;
        if (txn_decode(&a, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), (size_t)c.cfg.max_msg_size, &t,
                       &why, NULL) != V_OK) {
            undecodable++;
        } else {
            decide_out out;
            int64_t ev = store_ns / 1000000;
            decide_run(p, NULL, t, ev, false, vals, &out);
            int was = outmap_get(&om, hash64_str(t->txn_id)), now = (int)out.outcome & 3;
            table[was][now]++;
            if (was != now && nsample[was][now] < samples)
                str_copy(sample[was][now][nsample[was][now]++], 72, t->txn_id);
            total++;
        }
        natsMsg_Destroy(m);
        m = NULL;
        if (mono_ns() - last_progress > 2000000000LL) {
            last_progress = mono_ns();
            fprintf(stderr, "replay: %llu/%llu transactions\n", (unsigned long long)(seq - from + 1),
                    (unsigned long long)(to - from + 1));
        }
        if (stream_reader_next(tr, &m, &seq, &store_ns, 5000, &e) != V_OK)
            m = NULL;
    }
    stream_reader_close(tr);
    double secs = (double)(mono_ns() - t0) / 1e9;
    uint64_t changed = 0, with_dec = 0;
    for (int i = 0; i < 4; i++)
        for (int j = 1; j < 4; j++) {
            if (i && i != j)
                changed += table[i][j];
            if (i)
                with_dec += table[i][j];
        }
    if (json) {
        printf("{\"rules_version\":\"%s\",\"from\":%llu,\"to\":%llu,\"transactions\":%llu,\"with_decision\":%llu,"
               "\"undecodable\":%llu,\"changed\":%llu,\"transitions\":{",
               policy_rules_version(p), (unsigned long long)from, (unsigned long long)to,
               (unsigned long long)total, (unsigned long long)with_dec, (unsigned long long)undecodable,
               (unsigned long long)changed);
        bool firstk = true;
        for (int i = 0; i < 4; i++)
            for (int j = 1; j < 4; j++)
                if (table[i][j]) {
                    printf("%s\"%s->%s\":%llu", firstk ? "" : ",", oname(i), oname(j),
                           (unsigned long long)table[i][j]);
                    firstk = false;
                }
        printf("}}\n");
    } else {
        printf("replay of %s (rules %s, model %s) over %s seq %llu..%llu: %llu transactions in %.1f s, "
               "%llu with a stored decision, %llu undecodable\n\n",
               c.cfg.rules_file, policy_rules_version(p), policy_model_version(p), c.cfg.txn_stream,
               (unsigned long long)from, (unsigned long long)to, (unsigned long long)total, secs,
               (unsigned long long)with_dec, (unsigned long long)undecodable);
        printf("%-16s %12s %12s %12s\n", "stored \\ new", "approve", "review", "decline");
        for (int i = 1; i <= 4; i++) {
            int r = i % 4; /* none last */
            uint64_t rowsum = table[r][1] + table[r][2] + table[r][3];
            if (r == 0 && rowsum == 0)
                continue;
            printf("%-16s %12llu %12llu %12llu\n", r ? oname(r) : "(no decision)", (unsigned long long)table[r][1],
                   (unsigned long long)table[r][2], (unsigned long long)table[r][3]);
        }
        printf("\n%llu of %llu decided transactions would change (%.2f%%)\n", (unsigned long long)changed,
               (unsigned long long)with_dec, with_dec ? 100.0 * (double)changed / (double)with_dec : 0.0);
        for (int i = 0; i < 4; i++)
            for (int j = 1; j < 4; j++)
                if (nsample[i][j]) {
                    printf("  %s -> %s: %llu, e.g.", oname(i), oname(j), (unsigned long long)table[i][j]);
                    for (int k = 0; k < nsample[i][j]; k++)
                        printf(" %s", sample[i][j][k]);
                    printf("\n");
                }
    }
    arena_free(&a);
    free(om.keys);
    free(om.vals);
    policy_release(p);
    cliconn_close(&c);
    return 0;
}

/* replay_cli.c - `verdict replay`: run candidate rules (and model) over transactions stored in TXN and show
 * how outcomes, scores and rule firings would change against the decisions actually stored, before the rules
 * go live.
 *
 * Reads with ordered ephemeral consumers (streamread.h), so the engine's durable consumer is never touched and
 * nothing is acked or published. The stored decision of each transaction comes from DECISIONS (indexed by
 * txn_id from the range's start time on). The candidate decision is serving's computation (history.h): a
 * velocity state for the candidate's features is warmed over the window before the range, then each
 * transaction of the range is decided in stream order by decide_run with that state and the current
 * lists/profiles replicas. docs/replay.md. */
#include "cli.h"
#include "cliconn.h"
#include "codec.h"
#include "decide.h"
#include "history.h"
#include "log.h"
#include "replica.h"
#include "streamread.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLES_MAX 10
#define RULES_TRACKED 64 /* rules compared live vs replay: one bit each per transaction */

/* What DECISIONS says about a transaction. */
typedef struct stored {
    uint8_t outcome;  /* 1..3; 0: none stored */
    bool rules_alone; /* Verdict-Budget-Exceeded or Verdict-Degraded: the live decision may have skipped the model */
    float score;      /* -1: none */
    uint64_t fired;   /* bit i: the candidate's rule i was among the stored reasons */
} stored;

/* txn_id hash -> what was stored, open addressing; 0 keys are empty. */
typedef struct outmap {
    uint64_t *keys;
    stored *vals;
    size_t cap, n;
} outmap;

static bool outmap_init(outmap *m, size_t n)
{
    m->cap = 1024;
    while (m->cap < n * 2)
        m->cap *= 2;
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->vals = calloc(m->cap, sizeof *m->vals);
    m->n = 0;
    return m->keys && m->vals;
}

static void outmap_free(outmap *m)
{
    free(m->keys);
    free(m->vals);
}

static bool outmap_grow(outmap *m);

static bool outmap_put(outmap *m, uint64_t k, const stored *v)
{
    k |= 1;
    if ((m->n + 1) * 2 > m->cap && !outmap_grow(m))
        return false;
    size_t i = (size_t)(k * 0x9E3779B97F4A7C15ULL) & (m->cap - 1);
    while (m->keys[i] && m->keys[i] != k)
        i = (i + 1) & (m->cap - 1);
    if (!m->keys[i])
        m->n++;
    m->keys[i] = k;
    m->vals[i] = *v;
    return true;
}

static bool outmap_grow(outmap *m)
{
    outmap bigger;
    if (!outmap_init(&bigger, m->cap)) {
        outmap_free(&bigger);
        return false;
    }
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i])
            outmap_put(&bigger, m->keys[i], &m->vals[i]);
    outmap_free(m);
    *m = bigger;
    return true;
}

static const stored *outmap_get(const outmap *m, uint64_t k)
{
    k |= 1;
    size_t i = (size_t)(k * 0x9E3779B97F4A7C15ULL) & (m->cap - 1);
    while (m->keys[i]) {
        if (m->keys[i] == k)
            return &m->vals[i];
        i = (i + 1) & (m->cap - 1);
    }
    return NULL;
}

static void replay_help(void)
{
    printf("usage: verdict replay --rules FILE [--model FILE] [--last N | --from SEQ [--to SEQ]] [--samples K] "
           "[--json]\n\n"
           "Runs the candidate rules (and model, if given) over transactions stored in the TXN stream and prints\n"
           "how they would change against the decisions actually stored: an outcome transition table\n"
           "(approve -> decline, ...) with up to K sample txn ids per transition (default 3, at most 10), how\n"
           "many model scores differ, and per rule how often it fired live and in the replay.\n"
           "Features are computed as serving computes them: the velocity state is first built from the\n"
           "transactions stored in the candidate's longest window before the range, then the range is decided\n"
           "in stream order with store time as event time. Lists and profiles are the current values of the\n"
           "verdict_lists / verdict_profiles buckets, not the values at decision time (docs/replay.md).\n"
           "Read-only: ephemeral ordered consumers, never the engine's durable one; publishes nothing.\n"
           "Progress goes to stderr. Exit status: 0 done, 1 failure (server, stream, candidate), 2 usage.\n\n"
           "  --last N          the last N sequences of TXN (N >= 1; default 10000)\n"
           "  --from SEQ        the first TXN sequence to replay (>= 1)\n"
           "  --to SEQ          the last TXN sequence to replay (>= --from; default the stream's last)\n"
           "  --samples K       sample txn ids per transition (0..10)\n"
           "  --json            one JSON object on stdout instead of the table\n"
           "  --max-keys N, --max-msg-size N   as for `verdict serve` (use the engine's values)\n\n"
           "options (flag, then its environment variable):\n");
    config_print_help(stdout, "names");
}

static const char *oname(int o)
{
    static const char *n[] = {"none", "approve", "review", "decline"};
    return o >= 0 && o <= 3 ? n[o] : "?";
}

/* A whole decimal number between min and max; anything else (a sign, a blank, a suffix, overflow) is refused
 * with a message naming the flag. */
static bool parse_u64(const char *flag, const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long x = v[0] >= '0' && v[0] <= '9' ? strtoull(v, &end, 10) : 0;
    if (!end || *end || errno == ERANGE) {
        fprintf(stderr, "verdict replay: %s needs a whole number, got '%s'\n", flag, v);
        return false;
    }
    if (x < min || x > max) {
        fprintf(stderr, "verdict replay: %s must be between %llu and %llu, got %s\n", flag, (unsigned long long)min,
                (unsigned long long)max, v);
        return false;
    }
    *out = x;
    return true;
}

/* Index of a rule id in the candidate (its first RULES_TRACKED rules), or -1. */
static int rule_index(const ruleset *rs, int n, const char *id, size_t len)
{
    for (int i = 0; i < n; i++) {
        const char *r = rules_id(rs, i);
        if (strlen(r) == len && memcmp(r, id, len) == 0)
            return i;
    }
    return -1;
}

/* Reads DECISIONS from from_ns on into om: outcome, score, rules alone, and which candidate rules fired. */
static vstatus index_decisions(jsCtx *js, const config *c, int64_t from_ns, const ruleset *rs, int nrules, outmap *om,
                               uint64_t *ndec, verror *e)
{
    stream_reader *dr = NULL;
    vstatus rc = stream_reader_open(js, c->decisions_stream, NULL, 0, from_ns, &dr, e);
    if (rc != V_OK)
        return rc;
    int64_t last_progress = mono_ns();
    for (;;) {
        natsMsg *m;
        uint64_t seq;
        int64_t t;
        verror re = {0};
        rc = stream_reader_next(dr, &m, &seq, &t, 5000, &re);
        if (rc == V_ENOTFOUND) {
            rc = V_OK;
            break;
        }
        if (rc != V_OK) {
            /* a partial index would show decided transactions as undecided: fail rather than mislead */
            verror_set(e, rc, "reading %s stopped after seq %llu: %s", c->decisions_stream, (unsigned long long)seq,
                       re.msg);
            break;
        }
        const char *o = cliconn_hdr(m, "Verdict-Outcome");
        stored v = {.outcome = (uint8_t)(strcmp(o, "approve") == 0   ? 1
                                         : strcmp(o, "review") == 0  ? 2
                                         : strcmp(o, "decline") == 0 ? 3
                                                                     : 0),
                    .score = -1};
        const char *id = cliconn_hdr(m, "Nats-Msg-Id");
        const char *sc = cliconn_hdr(m, "Verdict-Score");
        char *end = NULL;
        double d = strtod(sc, &end);
        if (sc[0] && end && !*end)
            v.score = (float)d;
        v.rules_alone = cliconn_hdr(m, "Verdict-Budget-Exceeded")[0] || cliconn_hdr(m, "Verdict-Degraded")[0];
        for (const char *r = cliconn_hdr(m, "Verdict-Reasons"); rs && *r;) {
            size_t len = strcspn(r, ",");
            int k = rule_index(rs, nrules, r, len);
            if (k >= 0)
                v.fired |= 1ULL << k;
            r += len + (r[len] == ',');
        }
        if (v.outcome && id[0] && !outmap_put(om, hash64_str(id), &v)) {
            natsMsg_Destroy(m);
            rc = verror_set(e, V_ENOMEM, "out of memory indexing decisions");
            break;
        }
        natsMsg_Destroy(m);
        if (++*ndec % 1000 == 0 && mono_ns() - last_progress > 2000000000LL) {
            last_progress = mono_ns();
            fprintf(stderr, "replay: indexed %llu stored decisions\n", (unsigned long long)*ndec);
        }
    }
    stream_reader_close(dr);
    return rc;
}

/* The replay's state and tallies, filled by replay_one for each transaction of the range. */
typedef struct replay_run {
    const policy *p;
    decide_env env;
    const outmap *om;
    int nrules;
    int samples;
    fval vals[FEAT_MAX];
    uint64_t table[4][4];
    char sample[4][4][SAMPLES_MAX][72];
    int nsample[4][4];
    uint64_t total, changed_rules_alone;
    uint64_t scored, score_diff;
    double score_maxdiff;
    uint64_t fired_live[RULES_TRACKED], fired_replay[RULES_TRACKED], fired_both[RULES_TRACKED];
} replay_run;

static bool replay_one(void *ctx, const Transaction *t, uint64_t seq, int64_t event_ms)
{
    (void)seq;
    replay_run *r = ctx;
    decide_out out;
    decide_run(r->p, &r->env, t, event_ms, false, r->vals, &out);
    const stored *was = outmap_get(r->om, hash64_str(t->txn_id));
    int w = was ? was->outcome : 0, now = (int)out.outcome & 3;
    r->table[w][now]++;
    if (w != now && r->nsample[w][now] < r->samples)
        str_copy(r->sample[w][now][r->nsample[w][now]++], 72, t->txn_id);
    r->total++;
    if (!was)
        return true;
    if (w != now && was->rules_alone)
        r->changed_rules_alone++;
    if (was->score >= 0 && out.score >= 0) {
        /* the stored header has 6 decimals */
        double d = fabs((double)was->score - out.score);
        r->scored++;
        if (d > 1e-6)
            r->score_diff++;
        if (d > r->score_maxdiff)
            r->score_maxdiff = d;
    }
    uint64_t now_fired = 0;
    const ruleset *rs = policy_rules(r->p);
    for (int i = 0; rs && i < out.n_reasons; i++) {
        int k = rule_index(rs, r->nrules, out.reason_id[i], strlen(out.reason_id[i]));
        if (k >= 0)
            now_fired |= 1ULL << k;
    }
    for (int k = 0; k < r->nrules; k++) {
        bool l = was->fired >> k & 1, n = now_fired >> k & 1;
        r->fired_live[k] += l;
        r->fired_replay[k] += n;
        r->fired_both[k] += l && n;
    }
    return true;
}

static void print_report(const replay_run *r, const config *c, const history_stats *hs, uint64_t from, uint64_t to,
                         int64_t window_ms, bool json)
{
    const policy *p = r->p;
    const ruleset *rs = policy_rules(p);
    uint64_t changed = 0, with_dec = 0;
    for (int i = 0; i < 4; i++)
        for (int j = 1; j < 4; j++) {
            if (i && i != j)
                changed += r->table[i][j];
            if (i)
                with_dec += r->table[i][j];
        }
    if (json) {
        printf("{\"rules_version\":\"%s\",\"model_version\":\"%s\",\"from\":%llu,\"to\":%llu,\"transactions\":%llu,"
               "\"with_decision\":%llu,\"undecodable\":%llu,\"changed\":%llu,\"changed_rules_alone_live\":%llu,"
               "\"scored\":%llu,\"scores_differ\":%llu,\"score_max_diff\":%.6f,"
               "\"warmup\":{\"window_ms\":%lld,\"read\":%llu,\"counted\":%llu},\"transitions\":{",
               policy_rules_version(p), policy_model_version(p), (unsigned long long)from, (unsigned long long)to,
               (unsigned long long)r->total, (unsigned long long)with_dec, (unsigned long long)hs->skipped,
               (unsigned long long)changed, (unsigned long long)r->changed_rules_alone, (unsigned long long)r->scored,
               (unsigned long long)r->score_diff, r->score_maxdiff, (long long)window_ms,
               (unsigned long long)hs->warm_read, (unsigned long long)hs->warm_counted);
        bool first = true;
        for (int i = 0; i < 4; i++)
            for (int j = 1; j < 4; j++)
                if (r->table[i][j]) {
                    printf("%s\"%s->%s\":%llu", first ? "" : ",", oname(i), oname(j),
                           (unsigned long long)r->table[i][j]);
                    first = false;
                }
        printf("},\"rules\":{");
        first = true;
        for (int k = 0; k < r->nrules; k++)
            if (r->fired_live[k] || r->fired_replay[k]) {
                printf("%s\"%s\":{\"live\":%llu,\"replay\":%llu,\"both\":%llu}", first ? "" : ",", rules_id(rs, k),
                       (unsigned long long)r->fired_live[k], (unsigned long long)r->fired_replay[k],
                       (unsigned long long)r->fired_both[k]);
                first = false;
            }
        printf("}}\n");
        return;
    }
    printf("replay of %s (rules %s, model %s) over %s seq %llu..%llu: %llu transactions in %.1f s, "
           "%llu with a stored decision, %llu undecodable\n",
           c->rules_file, policy_rules_version(p), policy_model_version(p), c->txn_stream, (unsigned long long)from,
           (unsigned long long)to, (unsigned long long)r->total, hs->seconds, (unsigned long long)with_dec,
           (unsigned long long)hs->skipped);
    if (window_ms > 0)
        printf("velocity state: %llu transactions stored before the range counted first (longest window %lld s "
               "and its rounding)\n",
               (unsigned long long)hs->warm_counted, (long long)(window_ms / 1000));
    printf("\n%-16s %12s %12s %12s\n", "stored \\ new", "approve", "review", "decline");
    for (int i = 1; i <= 4; i++) {
        int row = i % 4; /* none last */
        uint64_t rowsum = r->table[row][1] + r->table[row][2] + r->table[row][3];
        if (row == 0 && rowsum == 0)
            continue;
        printf("%-16s %12llu %12llu %12llu\n", row ? oname(row) : "(no decision)", (unsigned long long)r->table[row][1],
               (unsigned long long)r->table[row][2], (unsigned long long)r->table[row][3]);
    }
    printf("\n%llu of %llu decided transactions would change (%.2f%%)\n", (unsigned long long)changed,
           (unsigned long long)with_dec, with_dec ? 100.0 * (double)changed / (double)with_dec : 0.0);
    if (r->changed_rules_alone)
        printf("  of which %llu were decided live on rules alone (budget exceeded or degraded)\n",
               (unsigned long long)r->changed_rules_alone);
    for (int i = 0; i < 4; i++)
        for (int j = 1; j < 4; j++)
            if (r->nsample[i][j]) {
                printf("  %s -> %s: %llu, e.g.", oname(i), oname(j), (unsigned long long)r->table[i][j]);
                for (int k = 0; k < r->nsample[i][j]; k++)
                    printf(" %s", r->sample[i][j][k]);
                printf("\n");
            }
    if (r->scored)
        printf("model scores: %llu of %llu differ by more than 1e-6 (largest difference %.7f; stored with 6 "
               "decimals)\n",
               (unsigned long long)r->score_diff, (unsigned long long)r->scored, r->score_maxdiff);
    bool any = false;
    for (int k = 0; k < r->nrules; k++)
        if (r->fired_live[k] || r->fired_replay[k]) {
            if (!any)
                printf("\n%-32s %10s %10s %10s\n", "rule (decided transactions)", "live", "replay", "both");
            any = true;
            printf("%-32s %10llu %10llu %10llu\n", rules_id(rs, k), (unsigned long long)r->fired_live[k],
                   (unsigned long long)r->fired_replay[k], (unsigned long long)r->fired_both[k]);
        }
    if (rs && rules_count(rs) > RULES_TRACKED)
        printf("(rules after the first %d are not compared)\n", RULES_TRACKED);
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
    uint64_t from = 0, to = 0, last = 0, samples = 3;
    bool json = false;
    for (int k = 0; k < nrest; k++) {
        const char *a = argv[rest[k]];
        const char *eq = strchr(a, '=');
        char flag[32];
        str_copy(flag, sizeof flag, a);
        if (eq && (size_t)(eq - a) < sizeof flag)
            flag[eq - a] = 0;
        bool takes = strcmp(flag, "--from") == 0 || strcmp(flag, "--to") == 0 || strcmp(flag, "--last") == 0 ||
                     strcmp(flag, "--samples") == 0;
        if (takes) {
            const char *v = eq ? eq + 1 : NULL;
            if (!v) {
                /* the value must be the very next argument, not one the option table took */
                if (k + 1 >= nrest || rest[k + 1] != rest[k] + 1) {
                    fprintf(stderr, "verdict replay: %s needs a value\n", flag);
                    return 2;
                }
                v = argv[rest[++k]];
            }
            bool ok = flag[2] == 's'   ? parse_u64(flag, v, 0, SAMPLES_MAX, &samples)
                      : flag[2] == 'l' ? parse_u64(flag, v, 1, UINT64_MAX, &last)
                      : flag[2] == 'f' ? parse_u64(flag, v, 1, UINT64_MAX, &from)
                                       : parse_u64(flag, v, 1, UINT64_MAX, &to);
            if (!ok)
                return 2;
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else {
            fprintf(stderr, "verdict replay: unknown argument '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (last && (from || to)) {
        fprintf(stderr, "verdict replay: --last cannot be combined with --from or --to\n");
        return 2;
    }
    if (from && to && to < from) {
        fprintf(stderr, "verdict replay: --to (%llu) is before --from (%llu)\n", (unsigned long long)to,
                (unsigned long long)from);
        return 2;
    }
    if (to && !from) {
        fprintf(stderr, "verdict replay: --to needs --from\n");
        return 2;
    }
    if (!from && !last)
        last = 10000;
    if (!c.cfg.rules_file[0]) {
        fprintf(stderr, "verdict replay: --rules FILE is required (the candidate rules)\n");
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

    int status = 1;
    velocity *vel = NULL;
    replica *lists = NULL, *profiles = NULL;
    replay_run *run = calloc(1, sizeof *run);
    outmap om = {0};
    verror e = {0};
    uint64_t tf, tl;
    if (!run || !outmap_init(&om, 1 << 16)) {
        fprintf(stderr, "verdict replay: out of memory\n");
        goto done;
    }
    if (!cliconn_stream_range(c.js, c.cfg.txn_stream, &tf, &tl) || tl == 0) {
        fprintf(stderr, "verdict replay: stream %s is missing or empty\n", c.cfg.txn_stream);
        goto done;
    }
    if (last)
        from = tl >= last ? tl - last + 1 : 1;
    if (from < tf)
        from = tf;
    if (!to || to > tl)
        to = tl;
    if (from > to) {
        fprintf(stderr, "verdict replay: %s holds seq %llu..%llu: nothing from %llu\n", c.cfg.txn_stream,
                (unsigned long long)tf, (unsigned long long)tl, (unsigned long long)from);
        goto done;
    }
    history_range range = {.from_seq = from, .to_seq = to};
    uint64_t first_seq;
    int64_t first_ns;
    if (history_find_first(c.js, &c.cfg, &range, &first_seq, &first_ns, &e) != V_OK) {
        fprintf(stderr, "verdict replay: %s\n", e.msg);
        goto done;
    }
    const ruleset *rs = policy_rules(p);
    run->nrules = rs ? (rules_count(rs) < RULES_TRACKED ? rules_count(rs) : RULES_TRACKED) : 0;
    /* a decision is stored after its transaction: from a minute before the first one (clock skew) on */
    uint64_t ndec = 0, df, dl;
    if (!cliconn_stream_range(c.js, c.cfg.decisions_stream, &df, &dl))
        fprintf(stderr, "replay: stream %s does not exist: no stored decisions to compare with\n",
                c.cfg.decisions_stream);
    else if (index_decisions(c.js, &c.cfg, first_ns - 60LL * 1000000000, rs, run->nrules, &om, &ndec, &e) != V_OK) {
        fprintf(stderr, "verdict replay: %s\n", e.msg);
        goto done;
    }
    const velocity_plan *pl = policy_velocity_plan(p);
    int64_t window = history_longest_window(policy_featreg(p));
    if (pl->n > 0) {
        velocity_cfg vc = {.max_keys = (size_t)c.cfg.max_keys};
        if (velocity_new(pl, &vc, &vel, &e) != V_OK) {
            fprintf(stderr, "verdict replay: %s\n", e.msg);
            goto done;
        }
    }
    if (history_open_replicas(c.nc, c.js, &c.cfg, policy_featreg(p), &lists, &profiles, &e) != V_OK) {
        fprintf(stderr, "verdict replay: %s\n", e.msg);
        goto done;
    }
    run->p = p;
    run->env = (decide_env){.vel = vel, .lists = lists, .profiles = profiles};
    run->om = &om;
    run->samples = (int)samples;
    history_stats hs;
    if (history_run(c.js, &c.cfg, vel ? pl : NULL, vel, &range, "replay", replay_one, run, &hs, &e) != V_OK) {
        fprintf(stderr, "verdict replay: %s; nothing reported\n", e.msg);
        goto done;
    }
    if (hs.warm_truncated)
        fprintf(stderr,
                "replay: warning: %s no longer holds the whole window before the range (its first message is "
                "younger than the warm-up start): velocity features of the first transactions may count too "
                "low\n",
                c.cfg.txn_stream);
    print_report(run, &c.cfg, &hs, from, to, vel ? window : 0, json);
    status = 0;
done:
    replica_stop(lists);
    replica_stop(profiles);
    velocity_free(vel);
    outmap_free(&om);
    free(run);
    policy_release(p);
    cliconn_close(&c);
    return status;
}

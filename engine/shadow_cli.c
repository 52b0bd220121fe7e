/* shadow_cli.c - `verdict shadow report`: what the shadow (candidate) policy would have changed on live traffic.
 *
 * Reads the shadow decisions stored in a time range (SHADOW: messages of JSON lines, shadow.h; one decision per
 * txn_id, the first stored counts), then the live decisions of those transactions from DECISIONS (from a little
 * before the range, since a live decision is stored before its shadow; the live outcome the record carries is the
 * fallback), and prints the transition table live outcome -> shadow outcome with a few example txn_ids per changed
 * cell. Read-only: ephemeral ordered consumers, nothing acked or published (docs/shadow.md). */
#include "cli.h"
#include "cliconn.h"
#include "ident.h"
#include "log.h"
#include "streamread.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXAMPLES_MAX 20
/* live decisions are stored before their shadow; a retried batch may store one up to DECISION_RETRY_MS later,
 * and a redelivery's shadow decision may come long after: look this far before the range for them */
#define LIVE_SLACK_MS (15 * 60 * 1000LL)
#define VERSIONS_MAX 8

static const char *outcome_names[] = {"none", "approve", "review", "decline"};

static int outcome_index(const char *o)
{
    for (int i = 1; i <= 3; i++)
        if (strcmp(o, outcome_names[i]) == 0)
            return i;
    return 0;
}

/* a shadow decision: its txn_id (owned), its outcome, and the live outcome (0 until found in DECISIONS) */
typedef struct entry {
    char *id;
    uint8_t shadow, live, live_hdr;
} entry;

typedef struct table {
    entry *e;
    size_t cap, n;
} table;

static entry *table_find(table *t, const char *id, bool insert)
{
    if (insert && (t->n + 1) * 2 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 1024;
        entry *ne = calloc(cap, sizeof *ne);
        if (!ne)
            return NULL;
        for (size_t i = 0; i < t->cap; i++)
            if (t->e[i].id) {
                size_t k = hash64_str(t->e[i].id) & (cap - 1);
                while (ne[k].id)
                    k = (k + 1) & (cap - 1);
                ne[k] = t->e[i];
            }
        free(t->e);
        t->e = ne;
        t->cap = cap;
    }
    if (!t->cap)
        return NULL;
    size_t k = hash64_str(id) & (t->cap - 1);
    while (t->e[k].id) {
        if (strcmp(t->e[k].id, id) == 0)
            return &t->e[k];
        k = (k + 1) & (t->cap - 1);
    }
    if (!insert)
        return NULL;
    t->e[k].id = strdup(id);
    if (!t->e[k].id)
        return NULL;
    t->n++;
    return &t->e[k];
}

static void table_free(table *t)
{
    for (size_t i = 0; i < t->cap; i++)
        free(t->e[i].id);
    free(t->e);
}

/* subject "<prefix>.<outcome>.<txn_id>": the outcome index and the txn_id (within the subject) */
static bool parse_subject(const char *subj, const char *prefix, int *outcome, const char **id)
{
    size_t pl = strlen(prefix);
    if (strncmp(subj, prefix, pl) != 0 || subj[pl] != '.')
        return false;
    const char *o = subj + pl + 1, *dot = strchr(o, '.');
    if (!dot)
        return false;
    char ob[16];
    size_t ol = (size_t)(dot - o);
    if (ol >= sizeof ob)
        return false;
    memcpy(ob, o, ol);
    ob[ol] = 0;
    *outcome = outcome_index(ob);
    *id = dot + 1;
    return *outcome > 0 && ident_txn_id_valid(*id);
}

/* RFC 3339 UTC (2026-11-30T14:05:00Z, optional .fff) or milliseconds since the epoch */
static bool parse_time_ns(const char *s, int64_t *ns)
{
    char *end = NULL;
    long long ms = strtoll(s, &end, 10);
    if (s[0] && end && !*end && ms > 0) {
        *ns = ms * 1000000LL;
        return true;
    }
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *r = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!r)
        return false;
    long frac_ms = 0;
    if (*r == '.') {
        int digits = 0;
        for (r++; *r >= '0' && *r <= '9'; r++, digits++)
            if (digits < 3)
                frac_ms = frac_ms * 10 + (*r - '0');
        for (; digits < 3; digits++)
            frac_ms *= 10;
    }
    if (strcmp(r, "Z") != 0)
        return false;
    *ns = ((int64_t)timegm(&tm) * 1000 + frac_ms) * 1000000LL;
    return true;
}

static void shadow_help(void)
{
    printf("usage: verdict shadow report [--since DURATION | --from TIME [--to TIME]] [--examples N] [--json]\n"
           "                             [options]\n\n"
           "The transition table of the shadow (candidate) policy against the live one: for the shadow decisions\n"
           "stored in the range, how many transactions went from each live outcome to each shadow outcome, and a\n"
           "few txn_ids of every changed cell. Start a shadow with `verdict serve --shadow-rules FILE [--shadow-model\n"
           "FILE]`; promote it with `verdict rules push FILE` (docs/shadow.md).\n\n"
           "  --since DURATION  the last DURATION (e.g. 15m, 24h); default: everything in the shadow stream\n"
           "  --from TIME       range start: RFC 3339 UTC (2026-11-30T14:00:00Z) or ms since the epoch\n"
           "  --to TIME         range end (default: now)\n"
           "  --examples N      example txn_ids per changed cell (default 3, at most %d)\n"
           "  --json            one JSON object\n\n"
           "connection and name options (flag, then its environment variable):\n",
           EXAMPLES_MAX);
    config_print_help(stdout, "names");
}

typedef struct report {
    uint64_t counts[4][4]; /* [live][shadow]; live 0 = no live decision found */
    const char *ex[4][4][EXAMPLES_MAX];
    int nex[4][4];
    uint64_t total, duplicates, changed, bad, live_not_found, live_mismatch;
    char versions[VERSIONS_MAX][80];
    int nversions;
} report;

/* One record (a JSON line) into t. */
static vstatus add_record(table *t, report *r, const char *line, size_t len)
{
    json_error_t je;
    json_t *j = json_loadb(line, len, 0, &je);
    const char *id = j ? json_string_value(json_object_get(j, "txn_id")) : NULL;
    int sh = j ? outcome_index(json_string_value(json_object_get(j, "shadow")) ?: "") : 0;
    int live = j ? outcome_index(json_string_value(json_object_get(j, "live")) ?: "") : 0;
    vstatus rc = V_OK;
    if (!id || !sh || !ident_txn_id_valid(id)) {
        r->bad++;
    } else if (table_find(t, id, false)) {
        r->duplicates++; /* decided in shadow twice (its first shadow decision was lost with its ack): the first */
    } else {
        entry *en = table_find(t, id, true);
        if (!en) {
            rc = V_ENOMEM;
        } else {
            en->shadow = (uint8_t)sh;
            en->live_hdr = (uint8_t)live;
        }
    }
    json_decref(j);
    return rc;
}

/* What the two walks (SHADOW, then DECISIONS) fill in. */
typedef struct scan {
    table *t;
    report *r;
    int64_t first_ns; /* store time of the first shadow message read */
    const char *decision_prefix;
} scan;

/* What a walk does with each message (the walk destroys it): V_OK goes on, an error (e set) stops the walk. */
typedef vstatus (*walk_fn)(natsMsg *m, int64_t ts, scan *sc, verror *e);

/* Hands fn every message of stream stored from from_ns (0: from its start) up to to_ns, headers only if headers. */
static vstatus walk(cliconn *c, const char *stream, bool headers, int64_t from_ns, int64_t to_ns, walk_fn fn, scan *sc,
                    verror *e)
{
    stream_reader *sr = NULL;
    vstatus rc = headers ? stream_reader_open_headers(c->js, stream, from_ns ? 0 : 1, from_ns, &sr, e)
                         : stream_reader_open(c->js, stream, NULL, from_ns ? 0 : 1, from_ns, &sr, e);
    if (rc != V_OK)
        return rc;
    for (;;) {
        natsMsg *m;
        uint64_t seq = 0;
        int64_t ts;
        verror re = {0};
        rc = stream_reader_next(sr, &m, &seq, &ts, 5000, &re);
        if (rc == V_ENOTFOUND) {
            rc = V_OK;
            break;
        }
        if (rc != V_OK) {
            verror_set(e, rc, "reading %s stopped after seq %llu: %s", stream, (unsigned long long)seq, re.msg);
            break;
        }
        if (ts > to_ns) {
            natsMsg_Destroy(m);
            break;
        }
        rc = fn(m, ts, sc, e);
        natsMsg_Destroy(m);
        if (rc != V_OK)
            break;
    }
    stream_reader_close(sr);
    return rc;
}

/* A SHADOW message: its candidate version into the report, its records (JSON lines) into the table. */
static vstatus on_shadow(natsMsg *m, int64_t ts, scan *sc, verror *e)
{
    report *r = sc->r;
    if (!sc->first_ns)
        sc->first_ns = ts;
    char v[80];
    snprintf(v, sizeof v, "rules %s, model %s", cliconn_hdr(m, "Verdict-Rules-Version"),
             cliconn_hdr(m, "Verdict-Model-Version"));
    bool seen = false;
    for (int i = 0; i < r->nversions; i++)
        seen |= strcmp(r->versions[i], v) == 0;
    if (!seen && r->nversions < VERSIONS_MAX)
        str_copy(r->versions[r->nversions++], sizeof r->versions[0], v);
    const char *d = natsMsg_GetData(m);
    int len = natsMsg_GetDataLength(m);
    for (int i = 0; i < len;) {
        const char *nl = memchr(d + i, '\n', (size_t)(len - i));
        int end = nl ? (int)(nl - d) : len;
        if (end > i && add_record(sc->t, r, d + i, (size_t)(end - i)) != V_OK)
            return verror_set(e, V_ENOMEM, "out of memory");
        i = end + 1;
    }
    return V_OK;
}

/* A DECISIONS message (headers only): the live outcome of its transaction, if the table has it. */
static vstatus on_live(natsMsg *m, int64_t ts, scan *sc, verror *e)
{
    (void)ts;
    (void)e;
    int o;
    const char *id;
    if (parse_subject(natsMsg_GetSubject(m), sc->decision_prefix, &o, &id)) {
        entry *en = table_find(sc->t, id, false);
        if (en && !en->live)
            en->live = (uint8_t)o; /* one decision per transaction: the first stored */
    }
    return V_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int cmd_shadow(int argc, char **argv)
{
    int rest[64], nrest = 0;
    if (argc > 64) {
        fprintf(stderr, "verdict shadow: too many arguments\n");
        return 2;
    }
    cliconn c = {0};
    int rc = cliconn_parse(&c, argc, argv, rest, &nrest, "shadow", shadow_help);
    if (rc)
        return rc < 0 ? 0 : rc;
    bool json = false, report_cmd = false;
    int64_t since_ms = 0, from_ns = 0, to_ns = 0;
    int examples = 3;
    for (int k = 0; k < nrest; k++) {
        const char *a = argv[rest[k]];
        const char *v = k + 1 < nrest ? argv[rest[k + 1]] : NULL;
        if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "--since") == 0) {
            if (!v || !duration_parse_ms(v, strlen(v), &since_ms) || since_ms <= 0) {
                fprintf(stderr, "verdict shadow: --since needs a duration (e.g. 15m, 24h)\n");
                return 2;
            }
            k++;
        } else if (strcmp(a, "--from") == 0 || strcmp(a, "--to") == 0) {
            int64_t ns;
            if (!v || !parse_time_ns(v, &ns)) {
                fprintf(stderr, "verdict shadow: %s needs a time: RFC 3339 UTC (2026-11-30T14:00:00Z) or ms since "
                                "the epoch\n", a);
                return 2;
            }
            *(a[2] == 'f' ? &from_ns : &to_ns) = ns;
            k++;
        } else if (strcmp(a, "--examples") == 0) {
            char *end = NULL;
            long n = v ? strtol(v, &end, 10) : -1;
            if (!v || *end || n < 0 || n > EXAMPLES_MAX) {
                fprintf(stderr, "verdict shadow: --examples needs a count from 0 to %d\n", EXAMPLES_MAX);
                return 2;
            }
            examples = (int)n;
            k++;
        } else if (strcmp(a, "report") == 0 && !report_cmd) {
            report_cmd = true;
        } else {
            fprintf(stderr, "verdict shadow: unknown argument '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!report_cmd) {
        fprintf(stderr, "verdict shadow: which command? (report; see --help)\n");
        return 2;
    }
    if (since_ms && (from_ns || to_ns)) {
        fprintf(stderr, "verdict shadow: --since cannot be combined with --from or --to\n");
        return 2;
    }
    int64_t now_ns = now_ms() * 1000000LL;
    if (since_ms)
        from_ns = now_ns - since_ms * 1000000LL;
    if (!to_ns)
        to_ns = now_ns;
    if (from_ns && to_ns < from_ns) {
        fprintf(stderr, "verdict shadow: --to is before --from\n");
        return 2;
    }
    if ((rc = cliconn_connect(&c, "shadow")) != 0)
        return rc;
    log_set_quiet(1);
    uint64_t sfirst, slast;
    if (!cliconn_stream_range(c.js, c.cfg.shadow_stream, &sfirst, &slast)) {
        fprintf(stderr, "verdict shadow: no stream %s: no engine has run a shadow policy under this prefix (start "
                        "one with `verdict serve --shadow-rules FILE`, docs/shadow.md)\n", c.cfg.shadow_stream);
        cliconn_close(&c);
        return 1;
    }
    table t = {0};
    report *r = calloc(1, sizeof *r);
    verror e = {0};
    scan sc = {&t, r, 0, c.cfg.decision_prefix};
    /* the shadow decisions stored in [from_ns, to_ns], then the live decisions of those transactions */
    vstatus vs = r ? walk(&c, c.cfg.shadow_stream, false, from_ns, to_ns, on_shadow, &sc, &e)
                   : verror_set(&e, V_ENOMEM, "out of memory");
    if (vs == V_OK && t.n > 0) {
        int64_t live_from = (from_ns ? from_ns : sc.first_ns) - LIVE_SLACK_MS * 1000000LL;
        vs = walk(&c, c.cfg.decisions_stream, true, live_from > 0 ? live_from : 0, INT64_MAX, on_live, &sc, &e);
    }
    if (vs != V_OK) {
        fprintf(stderr, "verdict shadow: %s\n", e.msg);
        table_free(&t);
        free(r);
        cliconn_close(&c);
        return 1;
    }
    /* examples sorted by txn_id, so a report is the same however the table hashed them */
    const char **ids = calloc(t.n ? t.n : 1, sizeof *ids);
    size_t ni = 0;
    for (size_t i = 0; ids && i < t.cap; i++)
        if (t.e[i].id)
            ids[ni++] = t.e[i].id;
    if (ids && ni)
        qsort(ids, ni, sizeof *ids, cmp_str);
    for (size_t i = 0; ids && i < ni; i++) {
        entry *en = table_find(&t, ids[i], false);
        /* DECISIONS is the truth; the record's own live outcome when the decision is out of the range read */
        int l = en->live ? en->live : en->live_hdr, s = en->shadow;
        if (!en->live)
            r->live_not_found++;
        else if (en->live_hdr && en->live != en->live_hdr)
            r->live_mismatch++;
        r->counts[l][s]++;
        r->total++;
        if (l != s) {
            r->changed++;
            if (r->nex[l][s] < examples)
                r->ex[l][s][r->nex[l][s]++] = en->id;
        }
    }
    char from_s[40], to_s[40];
    cliconn_time_ns(from_ns, from_s, sizeof from_s);
    cliconn_time_ns(to_ns, to_s, sizeof to_s);
    if (json) {
        json_t *o = json_object();
        json_t *vers = json_array(), *tr = json_array();
        for (int i = 0; i < r->nversions; i++)
            json_array_append_new(vers, json_string(r->versions[i]));
        for (int l = 0; l <= 3; l++)
            for (int s = 1; s <= 3; s++) {
                if (l == 0 && !r->counts[l][s])
                    continue;
                json_t *cell = json_object(), *ex = json_array();
                for (int k = 0; k < r->nex[l][s]; k++)
                    json_array_append_new(ex, json_string(r->ex[l][s][k]));
                json_object_set_new(cell, "live", json_string(outcome_names[l]));
                json_object_set_new(cell, "shadow", json_string(outcome_names[s]));
                json_object_set_new(cell, "count", json_integer((json_int_t)r->counts[l][s]));
                json_object_set_new(cell, "changed", json_boolean(l != s));
                json_object_set_new(cell, "examples", ex);
                json_array_append_new(tr, cell);
            }
        json_object_set_new(o, "stream", json_string(c.cfg.shadow_stream));
        json_object_set_new(o, "from", from_ns ? json_string(from_s) : json_null());
        json_object_set_new(o, "to", json_string(to_s));
        json_object_set_new(o, "candidates", vers);
        json_object_set_new(o, "shadow_decisions", json_integer((json_int_t)r->total));
        json_object_set_new(o, "changed", json_integer((json_int_t)r->changed));
        json_object_set_new(o, "live_missing",
                            json_integer((json_int_t)(r->counts[0][1] + r->counts[0][2] + r->counts[0][3])));
        json_object_set_new(o, "repeated", json_integer((json_int_t)r->duplicates));
        json_object_set_new(o, "live_not_found", json_integer((json_int_t)r->live_not_found));
        json_object_set_new(o, "live_mismatch", json_integer((json_int_t)r->live_mismatch));
        json_object_set_new(o, "unreadable", json_integer((json_int_t)r->bad));
        json_object_set_new(o, "transitions", tr);
        char *s = json_dumps(o, JSON_COMPACT);
        if (s)
            printf("%s\n", s);
        free(s);
        json_decref(o);
    } else {
        printf("shadow report: %s, %s .. %s\n", c.cfg.shadow_stream, from_ns ? from_s : "(start)", to_s);
        for (int i = 0; i < r->nversions; i++)
            printf("candidate:     %s\n", r->versions[i]);
        printf("decisions:     %llu shadow, %llu changed (%.2f%%)", (unsigned long long)r->total,
               (unsigned long long)r->changed, r->total ? 100.0 * (double)r->changed / (double)r->total : 0.0);
        uint64_t missing = r->counts[0][1] + r->counts[0][2] + r->counts[0][3];
        if (missing)
            printf(", %llu without a live outcome", (unsigned long long)missing);
        if (r->live_not_found)
            printf(", %llu live decisions not in %s (the record's live outcome used)",
                   (unsigned long long)r->live_not_found, c.cfg.decisions_stream);
        if (r->live_mismatch)
            printf(", %llu whose stored live outcome differs from the record's", (unsigned long long)r->live_mismatch);
        if (r->bad)
            printf(", %llu unreadable records", (unsigned long long)r->bad);
        printf("\n\n%-16s %10s %10s %10s\n", "live \\ shadow", "approve", "review", "decline");
        for (int l = missing ? 0 : 1; l <= 3; l++)
            printf("%-16s %10llu %10llu %10llu\n", outcome_names[l], (unsigned long long)r->counts[l][1],
                   (unsigned long long)r->counts[l][2], (unsigned long long)r->counts[l][3]);
        if (r->changed && examples)
            printf("\nexamples:\n");
        for (int l = 0; l <= 3; l++)
            for (int s = 1; s <= 3; s++) {
                if (l == s || !r->nex[l][s])
                    continue;
                printf("  %-7s -> %-7s %llu:", outcome_names[l], outcome_names[s],
                       (unsigned long long)r->counts[l][s]);
                for (int k = 0; k < r->nex[l][s]; k++)
                    printf(" %s", r->ex[l][s][k]);
                printf("\n");
            }
    }
    free(ids);
    table_free(&t);
    free(r);
    cliconn_close(&c);
    return 0;
}

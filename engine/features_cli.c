/* features_cli.c - `verdict features`: the training table, computed by the engine's serving code.
 *
 * One source of truth for features: every column is computed by the same registry, transaction/derived stage,
 * lists/profiles fill and velocity state (velocity_features_and_add: the features from the state before the
 * transaction, then the transaction counted) that decide in production. The transactions come from one of:
 *   - a range of the TXN stream: exactly serving's computation (history.h: the velocity state warmed over the
 *     longest window before the range, stream order, store time as event time, poison skipped);
 *   - a file of length-delimited protobuf Transactions: file order, created_at_ms as event time;
 *   - the synthetic payments world (simgen.h): generation order, its simulated clock as event time.
 * Labels come with the simulator, or are joined by txn_id from a CSV file or a stream (docs/replay.md).
 * tools/train_model.py reads the table: feature columns by canonical name, then label and is_fraud. */
#include "cli.h"
#include "cliconn.h"
#include "featreg.h"
#include "gbdt.h"
#include "history.h"
#include "ident.h"
#include "replica.h"
#include "simgen.h"
#include "streamread.h"
#include "velocity.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The shipped model's inputs (docs/model.md). */
static const char *const default_features =
    "amount,amount_minor,mcc,hour_of_day,day_of_week,cross_border,ip_country_mismatch,channel_code,"
    "count(card_id,10m),count(card_id,1h),count(card_id,24h),sum(amount_minor,card_id,1h),"
    "sum(amount_minor,card_id,24h),distinct(card_id,device_id,24h),distinct(card_id,ip_country,24h),"
    "distinct(card_id,merchant_country,24h),count(device_id,1h),distinct(ip,card_id,1h),count(account_id,24h)";

#define LABEL_MAX 64
#define LABELS_DISTINCT 1024
#define PROGRESS_NS 2000000000LL

static void features_help(void)
{
    printf("usage: verdict features [SOURCE] [--features LIST | --model FILE] [--labels FILE | --labels-stream NAME]\n"
           "                        [--unlabelled keep|legit|skip] [--txn-ids] [--out FILE] [connection options]\n\n"
           "Writes the training table tools/train_model.py reads: a CSV with one column per feature (header: the\n"
           "canonical names, quoted), then `label` and `is_fraud` (0/1). Empty cells are missing values. Every\n"
           "column is computed by the serving code: the velocity state before each transaction, lists and\n"
           "profiles from the current verdict_lists / verdict_profiles buckets (docs/replay.md).\n\n"
           "SOURCE, one of:\n"
           "  (none)                 the synthetic payments world, event time its simulated clock:\n"
           "    --count N            transactions to generate (default 200000)\n"
           "    --seed N             (default 1)\n"
           "    --fraud-rate R       share of transactions in fraud patterns, 0 < R < 1 (default 0.02)\n"
           "    --txns-out FILE      also write the generated transactions there (length-delimited protobuf)\n"
           "  --from SEQ [--to SEQ]  a range of the TXN stream, features exactly as serving computed them\n"
           "  --since DUR|TIME       the TXN stream from DUR ago (24h, 90m) or from an RFC 3339 UTC time\n"
           "                         (2026-11-30T08:00:00Z) to its end\n"
           "  --input FILE           transactions in FILE: each a varint length then a verdict.v1.Transaction\n"
           "                         (protobuf's writeDelimitedTo); event time created_at_ms, in file order\n\n"
           "  --features LIST        comma-separated canonical feature names (default: the shipped model's)\n"
           "  --model FILE           the columns of this XGBoost model, in its order\n"
           "  --labels FILE          CSV lines txn_id,label (a first line txn_id,label is a header); the last line\n"
           "                         for a txn_id wins. label: legit or 0 (not fraud), anything else of\n"
           "                         [A-Za-z0-9_-] (1, fraud, card_testing ...) is fraud\n"
           "  --labels-stream NAME   the same from a stream: subject's last token the txn_id, payload the label\n"
           "  --unlabelled MODE      rows without a label: keep (empty label and is_fraud; default), legit, skip\n"
           "  --txn-ids              a first column txn_id\n"
           "  --out FILE             write there instead of stdout\n"
           "  --max-keys N, --max-msg-size N   as for `verdict serve` (give the engine's values)\n"
           "Progress goes to stderr. Exit status: 0 done, 1 failure (input, server), 2 usage.\n\n"
           "connection options for --from/--since, --labels-stream and list/profile features (flag, env):\n");
    config_print_help(stdout, "names");
}

const char *features_default_list(void) { return default_features; }

/* Splits a comma list at top level (commas inside parentheses belong to the name). */
int features_split(const char *s, char names[][FEAT_NAME_MAX], int max)
{
    int n = 0, depth = 0;
    size_t len = 0;
    for (const char *p = s;; p++) {
        if (*p == 0 || (*p == ',' && depth == 0)) {
            if (len && n < max) {
                names[n][len] = 0;
                n++;
            }
            len = 0;
            if (*p == 0)
                break;
            continue;
        }
        depth += *p == '(' ? 1 : *p == ')' ? -1 : 0;
        if (*p != ' ' && n < max && len < FEAT_NAME_MAX - 1)
            names[n][len++] = *p;
    }
    return n;
}

/* ---- strict numbers ---------------------------------------------------------------------------------------- */

static bool parse_u64(const char *flag, const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long x = v[0] >= '0' && v[0] <= '9' ? strtoull(v, &end, 10) : 0;
    if (!end || *end || errno == ERANGE) {
        fprintf(stderr, "verdict features: %s needs a whole number, got '%s'\n", flag, v);
        return false;
    }
    if (x < min || x > max) {
        fprintf(stderr, "verdict features: %s must be between %llu and %llu, got %s\n", flag, (unsigned long long)min,
                (unsigned long long)max, v);
        return false;
    }
    *out = x;
    return true;
}

/* --since: a duration back from now, or an RFC 3339 UTC time. */
static bool parse_since(const char *v, int64_t *out_ns)
{
    int64_t ms;
    if (duration_parse_ms(v, strlen(v), &ms) && ms > 0) {
        *out_ns = (now_ms() - ms) * 1000000LL;
        return true;
    }
    struct tm tm = {0};
    const char *end = strptime(v, "%Y-%m-%dT%H:%M:%S", &tm);
    if (end && (strcmp(end, "Z") == 0 || strcmp(end, "+00:00") == 0)) {
        *out_ns = (int64_t)timegm(&tm) * 1000000000LL;
        return true;
    }
    fprintf(stderr,
            "verdict features: --since needs a duration (24h, 90m) or an RFC 3339 UTC time "
            "(2026-11-30T08:00:00Z), got '%s'\n",
            v);
    return false;
}

/* ---- labels: txn_id hash -> interned label ------------------------------------------------------------------ */

typedef struct labels {
    uint64_t *keys; /* 0 = empty */
    uint16_t *vals;
    size_t cap, n;
    char words[LABELS_DISTINCT][LABEL_MAX + 1];
    int nwords;
} labels;

static bool labels_init(labels *l)
{
    l->cap = 1 << 16;
    l->keys = calloc(l->cap, sizeof *l->keys);
    l->vals = calloc(l->cap, sizeof *l->vals);
    return l->keys && l->vals;
}

static void labels_free(labels *l)
{
    if (!l)
        return;
    free(l->keys);
    free(l->vals);
    free(l);
}

static bool labels_put_idx(labels *l, uint64_t k, uint16_t v);

static bool labels_grow(labels *l)
{
    labels old = {.keys = l->keys, .vals = l->vals, .cap = l->cap};
    l->cap *= 2;
    l->n = 0;
    l->keys = calloc(l->cap, sizeof *l->keys);
    l->vals = calloc(l->cap, sizeof *l->vals);
    if (!l->keys || !l->vals)
        return false;
    for (size_t i = 0; i < old.cap; i++)
        if (old.keys[i])
            labels_put_idx(l, old.keys[i], old.vals[i]);
    free(old.keys);
    free(old.vals);
    return true;
}

static bool labels_put_idx(labels *l, uint64_t k, uint16_t v)
{
    k |= 1;
    if ((l->n + 1) * 2 > l->cap && !labels_grow(l))
        return false;
    size_t i = (size_t)(k * 0x9E3779B97F4A7C15ULL) & (l->cap - 1);
    while (l->keys[i] && l->keys[i] != k)
        i = (i + 1) & (l->cap - 1);
    if (!l->keys[i])
        l->n++;
    l->keys[i] = k;
    l->vals[i] = v;
    return true;
}

static const char *labels_get(const labels *l, const char *txn_id)
{
    uint64_t k = hash64_str(txn_id) | 1;
    size_t i = (size_t)(k * 0x9E3779B97F4A7C15ULL) & (l->cap - 1);
    while (l->keys[i]) {
        if (l->keys[i] == k)
            return l->words[l->vals[i]];
        i = (i + 1) & (l->cap - 1);
    }
    return NULL;
}

static bool label_valid(const char *s, size_t len)
{
    return ident_token_valid(s, len, LABEL_MAX);
}

/* Records label (len bytes, already valid) for txn_id; false with a message when out of room. */
static bool labels_put(labels *l, const char *txn_id, const char *label, size_t len, char *err, size_t errcap)
{
    int w = 0;
    while (w < l->nwords && !(strlen(l->words[w]) == len && memcmp(l->words[w], label, len) == 0))
        w++;
    if (w == l->nwords) {
        if (l->nwords == LABELS_DISTINCT) {
            snprintf(err, errcap, "more than %d distinct labels", LABELS_DISTINCT);
            return false;
        }
        memcpy(l->words[w], label, len);
        l->words[w][len] = 0;
        l->nwords++;
    }
    if (!labels_put_idx(l, hash64_str(txn_id), (uint16_t)w)) {
        snprintf(err, errcap, "out of memory");
        return false;
    }
    return true;
}

static bool label_is_fraud(const char *label) { return strcmp(label, "legit") != 0 && strcmp(label, "0") != 0; }

/* Reads txn_id,label lines. Any malformed line is an error naming file:line: a silently dropped label would
 * train the model on a wrong class balance. */
static bool labels_read_file(labels *l, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "verdict features: cannot open the labels file %s: %s\n", path, strerror(errno));
        return false;
    }
    char line[512];
    long no = 0, n = 0;
    bool ok = true;
    while (fgets(line, sizeof line, f)) {
        no++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            fprintf(stderr, "verdict features: %s:%ld: line too long\n", path, no);
            ok = false;
            break;
        }
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (len == 0 || (no == 1 && strcmp(line, "txn_id,label") == 0))
            continue;
        char *comma = strchr(line, ',');
        if (comma)
            *comma = 0;
        const char *lab = comma ? comma + 1 : "";
        if (!comma || !txn_id_valid(line) || !label_valid(lab, strlen(lab))) {
            fprintf(stderr,
                    "verdict features: %s:%ld: expected txn_id,label (txn_id 1-64 of [A-Za-z0-9_-], "
                    "label 1-%d of [A-Za-z0-9_-])\n",
                    path, no, LABEL_MAX);
            ok = false;
            break;
        }
        char err[96];
        if (!labels_put(l, line, lab, strlen(lab), err, sizeof err)) {
            fprintf(stderr, "verdict features: %s:%ld: %s\n", path, no, err);
            ok = false;
            break;
        }
        n++;
    }
    if (ok && ferror(f)) {
        fprintf(stderr, "verdict features: reading %s failed\n", path);
        ok = false;
    }
    fclose(f);
    if (ok)
        fprintf(stderr, "features: %ld labels read from %s\n", n, path);
    return ok;
}

/* Reads a labels stream to its end. A message that is not a label is counted and reported, not fatal: a
 * stream cannot be corrected like a file, and the count says how many were left out. */
static bool labels_read_stream(labels *l, jsCtx *js, const char *stream)
{
    stream_reader *r = NULL;
    verror e = {0};
    if (stream_reader_open(js, stream, NULL, 0, 0, &r, &e) != V_OK) {
        fprintf(stderr, "verdict features: labels stream %s: %s\n", stream, e.msg);
        return false;
    }
    uint64_t n = 0, bad = 0, first_bad = 0;
    bool ok = true;
    for (;;) {
        natsMsg *m = NULL;
        uint64_t seq;
        int64_t ts;
        vstatus rc = stream_reader_next(r, &m, &seq, &ts, 5000, &e);
        if (rc == V_ENOTFOUND)
            break;
        if (rc != V_OK) {
            fprintf(stderr, "verdict features: reading the labels stream %s stopped: %s\n", stream, e.msg);
            ok = false;
            break;
        }
        const char *subj = natsMsg_GetSubject(m);
        const char *id = strrchr(subj, '.');
        id = id ? id + 1 : subj;
        const char *data = natsMsg_GetData(m);
        size_t len = (size_t)natsMsg_GetDataLength(m);
        while (len && (data[len - 1] == '\n' || data[len - 1] == '\r' || data[len - 1] == ' '))
            len--;
        /* a JSON label ({"label": ..., docs/desk.md, what the desk publishes) or the bare label word */
        json_t *j = len && data[0] == '{' ? json_loadb(data, len, 0, NULL) : NULL;
        char word[LABEL_MAX + 1] = "";
        if (len && data[0] == '{') {
            const char *lv = json_string_value(json_object_get(j, "label"));
            const char *jid = json_string_value(json_object_get(j, "txn_id"));
            /* a txn_id inside must agree with the subject's: a mismatch is not a label */
            if (lv && strlen(lv) <= LABEL_MAX && (!jid || strcmp(jid, id) == 0))
                str_copy(word, sizeof word, lv);
            data = word;
            len = strlen(word);
        }
        json_decref(j);
        char err[96];
        if (!txn_id_valid(id) || !label_valid(data, len)) {
            if (!bad++)
                first_bad = seq;
        } else if (!labels_put(l, id, data, len, err, sizeof err)) {
            fprintf(stderr, "verdict features: labels stream %s seq %llu: %s\n", stream, (unsigned long long)seq, err);
            natsMsg_Destroy(m);
            ok = false;
            break;
        } else {
            n++;
        }
        natsMsg_Destroy(m);
    }
    stream_reader_close(r);
    if (bad)
        fprintf(stderr,
                "features: %llu messages of %s are not labels (subject's last token a txn_id, payload a "
                "label), ignored; the first at seq %llu\n",
                (unsigned long long)bad, stream, (unsigned long long)first_bad);
    if (ok)
        fprintf(stderr, "features: %llu labels read from stream %s\n", (unsigned long long)n, stream);
    return ok;
}

/* ---- the table ---------------------------------------------------------------------------------------------- */

typedef enum unlabelled_mode { UNL_KEEP, UNL_LEGIT, UNL_SKIP } unlabelled_mode;

typedef struct table {
    FILE *out;
    featreg *reg;
    velocity_plan *vp;
    velocity *vel;
    const replica *lists, *profiles;
    int ids[FEAT_MAX];
    int nf;
    bool txn_ids;
    const labels *lab; /* NULL: labels come with the transactions (simulator) or not at all */
    unlabelled_mode unl;
    fval vals[FEAT_MAX];
    uint64_t rows, fraud, unlabelled, skipped;
    int64_t last_progress;
    const char *what; /* progress label: "transactions of the file", ... */
} table;

/* The serving step for one transaction (decide_run's feature stages, in its order), then its row. */
static void table_row(table *tb, const Transaction *t, int64_t event_ms, const char *sim_label)
{
    features_from_txn(tb->reg, t, event_ms, tb->vals);
    if (tb->lists || tb->profiles)
        replica_fill(tb->lists, tb->profiles, tb->reg, tb->vals);
    if (tb->vel)
        velocity_features_and_add(tb->vel, tb->vp, tb->vals, event_ms);
    const char *label = sim_label;
    if (!sim_label && tb->lab)
        label = labels_get(tb->lab, t->txn_id);
    if (!label) {
        tb->unlabelled++;
        if (tb->unl == UNL_SKIP) {
            tb->skipped++;
            return;
        }
        if (tb->unl == UNL_LEGIT)
            label = "legit";
    }
    FILE *out = tb->out;
    if (tb->txn_ids)
        fprintf(out, "%s,", t->txn_id); /* txn_id_valid: no comma or quote to escape */
    for (int i = 0; i < tb->nf; i++) {
        const fval *v = &tb->vals[tb->ids[i]];
        if (i)
            fputc(',', out);
        if (!v->present)
            continue;
        if (v->type == FT_BOOL)
            fputc(v->b ? '1' : '0', out);
        else
            fprintf(out, "%.17g", v->num);
    }
    if (label) {
        bool f = label_is_fraud(label);
        tb->fraud += f;
        fprintf(out, ",%s,%d\n", label, f ? 1 : 0);
    } else {
        fputs(",,\n", out);
    }
    tb->rows++;
    if (mono_ns() - tb->last_progress > PROGRESS_NS) {
        tb->last_progress = mono_ns();
        fprintf(stderr, "features: %llu rows (%s)\n", (unsigned long long)tb->rows, tb->what);
    }
}

static bool stream_row(void *ctx, const Transaction *t, uint64_t seq, int64_t event_ms)
{
    (void)seq;
    table_row(ctx, t, event_ms, NULL);
    return true;
}

/* A varint of at most 10 bytes; false at a clean end (nothing read), *bad on a truncated or overlong one. */
static bool read_varint(FILE *f, uint64_t *out, bool *bad)
{
    uint64_t v = 0;
    *bad = false;
    for (int i = 0; i < 10; i++) {
        int c = fgetc(f);
        if (c == EOF) {
            *bad = i > 0;
            return false;
        }
        v |= (uint64_t)(c & 0x7f) << (7 * i);
        if (!(c & 0x80)) {
            *out = v;
            return true;
        }
    }
    *bad = true;
    return false;
}

/* Transactions of a length-delimited file, in file order. A record that does not decode is skipped and
 * counted, as serving skips poison; a truncated file is an error (the rest of it cannot be found). */
static bool run_file(table *tb, const char *path, const config *c)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "verdict features: cannot open %s: %s\n", path, strerror(errno));
        return false;
    }
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "verdict features: %s is not a regular file\n", path);
        fclose(f);
        return false;
    }
    size_t cap = (size_t)c->max_msg_size;
    unsigned char *buf = malloc(cap);
    arena a;
    if (!buf || arena_init(&a, txn_arena_size(cap)) != V_OK) {
        free(buf);
        fclose(f);
        fprintf(stderr, "verdict features: out of memory\n");
        return false;
    }
    bool ok = true;
    uint64_t records = 0, undecodable = 0;
    for (;;) {
        uint64_t len;
        bool bad;
        long at = ftell(f);
        if (!read_varint(f, &len, &bad)) {
            if (bad) {
                fprintf(stderr, "verdict features: %s: a truncated length at byte %ld (record %llu)\n", path, at,
                        (unsigned long long)records + 1);
                ok = false;
            }
            break;
        }
        records++;
        if (len > cap) { /* serving dead-letters it as oversize: skip its bytes, which must be there */
            undecodable++;
            long here = ftell(f);
            if (len > (uint64_t)(size - here) || fseek(f, (long)len, SEEK_CUR) != 0) {
                fprintf(stderr, "verdict features: %s: record %llu at byte %ld is truncated\n", path,
                        (unsigned long long)records, at);
                ok = false;
                break;
            }
            continue;
        }
        if (fread(buf, 1, (size_t)len, f) != (size_t)len) {
            fprintf(stderr, "verdict features: %s: record %llu at byte %ld is truncated\n", path,
                    (unsigned long long)records, at);
            ok = false;
            break;
        }
        arena_reset(&a);
        Transaction *t = NULL;
        poison_reason why;
        if (txn_decode(&a, buf, (size_t)len, cap, &t, &why, NULL) != V_OK) {
            undecodable++;
            continue;
        }
        table_row(tb, t, t->created_at_ms, NULL);
    }
    fprintf(stderr, "features: %s: %llu records, %llu undecodable (skipped, as serving dead-letters them)\n", path,
            (unsigned long long)records, (unsigned long long)undecodable);
    arena_free(&a);
    free(buf);
    fclose(f);
    return ok;
}

static bool write_delimited(FILE *f, const Transaction *t)
{
    unsigned char buf[4096];
    size_t n = verdict__v1__transaction__get_packed_size(t);
    if (n > sizeof buf)
        return false;
    verdict__v1__transaction__pack(t, buf);
    unsigned char v[10];
    int k = 0;
    size_t x = n;
    do {
        v[k++] = (unsigned char)((x & 0x7f) | (x > 0x7f ? 0x80 : 0));
        x >>= 7;
    } while (x);
    return fwrite(v, 1, (size_t)k, f) == (size_t)k && fwrite(buf, 1, n, f) == n;
}

static bool run_sim(table *tb, uint64_t count, uint64_t seed, double fraud_rate, const char *txns_out)
{
    simgen_cfg gc = {.seed = seed, .fraud_rate = fraud_rate};
    simgen *g = simgen_create(&gc);
    if (!g) {
        fprintf(stderr, "verdict features: cannot create the generator\n");
        return false;
    }
    FILE *tf = NULL;
    if (txns_out && !(tf = fopen(txns_out, "wb"))) {
        fprintf(stderr, "verdict features: cannot open %s: %s\n", txns_out, strerror(errno));
        simgen_destroy(g);
        return false;
    }
    bool ok = true;
    for (uint64_t k = 0; k < count; k++) {
        Transaction t;
        const char *label = simgen_next(g, &t);
        if (tf && !write_delimited(tf, &t)) {
            fprintf(stderr, "verdict features: writing %s failed\n", txns_out);
            ok = false;
            break;
        }
        table_row(tb, &t, t.created_at_ms, label);
    }
    if (tf && fclose(tf) != 0 && ok) {
        fprintf(stderr, "verdict features: writing %s failed\n", txns_out);
        ok = false;
    }
    simgen_destroy(g);
    return ok;
}

/* ---- the command -------------------------------------------------------------------------------------------- */

typedef struct fopts {
    uint64_t count, seed, from, to;
    int64_t since_ns;
    double fraud_rate;
    const char *list, *outp, *input, *labels_file, *labels_stream, *txns_out;
    unlabelled_mode unl;
    bool txn_ids, sim_flags;
} fopts;

/* Parses what the option table left; 0, or 2 with a message. */
static int parse_args(fopts *o, int argc, char **argv, const int *rest, int nrest)
{
    (void)argc;
    for (int k = 0; k < nrest; k++) {
        const char *a = argv[rest[k]];
        const char *eq = a[0] == '-' ? strchr(a, '=') : NULL;
        char flag[32];
        if (!str_copy(flag, sizeof flag, a) && !eq) {
            fprintf(stderr, "verdict features: unknown argument '%s' (see --help)\n", a);
            return 2;
        }
        if (eq && (size_t)(eq - a) < sizeof flag)
            flag[eq - a] = 0;
        if (strcmp(flag, "--txn-ids") == 0 && !eq) {
            o->txn_ids = true;
            continue;
        }
        static const char *valued[] = {"--count",         "--seed",       "--fraud-rate", "--features", "--out",
                                       "--from",          "--to",         "--since",      "--input",    "--labels",
                                       "--labels-stream", "--unlabelled", "--txns-out"};
        bool known = false;
        for (size_t i = 0; i < ARRAY_LEN(valued); i++)
            known |= strcmp(flag, valued[i]) == 0;
        if (!known) {
            fprintf(stderr, "verdict features: unknown argument '%s' (see --help)\n", a);
            return 2;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (!v) {
            if (k + 1 >= nrest || rest[k + 1] != rest[k] + 1) {
                fprintf(stderr, "verdict features: %s needs a value\n", flag);
                return 2;
            }
            v = argv[rest[++k]];
        }
        if (strcmp(flag, "--count") == 0) {
            if (!parse_u64(flag, v, 1, 1000000000, &o->count))
                return 2;
            o->sim_flags = true;
        } else if (strcmp(flag, "--seed") == 0) {
            if (!parse_u64(flag, v, 1, UINT64_MAX, &o->seed))
                return 2;
            o->sim_flags = true;
        } else if (strcmp(flag, "--fraud-rate") == 0) {
            char *end = NULL;
            errno = 0;
            double r = strtod(v, &end);
            if (!v[0] || *end || errno || !(r > 0 && r < 1)) {
                fprintf(stderr,
                        "verdict features: --fraud-rate needs a number between 0 and 1 (exclusive), got "
                        "'%s'\n",
                        v);
                return 2;
            }
            o->fraud_rate = r;
            o->sim_flags = true;
        } else if (strcmp(flag, "--from") == 0) {
            if (!parse_u64(flag, v, 1, UINT64_MAX, &o->from))
                return 2;
        } else if (strcmp(flag, "--to") == 0) {
            if (!parse_u64(flag, v, 1, UINT64_MAX, &o->to))
                return 2;
        } else if (strcmp(flag, "--since") == 0) {
            if (!parse_since(v, &o->since_ns))
                return 2;
        } else if (strcmp(flag, "--unlabelled") == 0) {
            if (strcmp(v, "keep") == 0)
                o->unl = UNL_KEEP;
            else if (strcmp(v, "legit") == 0)
                o->unl = UNL_LEGIT;
            else if (strcmp(v, "skip") == 0)
                o->unl = UNL_SKIP;
            else {
                fprintf(stderr, "verdict features: --unlabelled must be keep, legit or skip, got '%s'\n", v);
                return 2;
            }
        } else if (!v[0]) {
            fprintf(stderr, "verdict features: %s needs a value\n", flag);
            return 2;
        } else if (strcmp(flag, "--features") == 0) {
            o->list = v;
        } else if (strcmp(flag, "--out") == 0) {
            o->outp = v;
        } else if (strcmp(flag, "--input") == 0) {
            o->input = v;
        } else if (strcmp(flag, "--labels") == 0) {
            o->labels_file = v;
        } else if (strcmp(flag, "--labels-stream") == 0) {
            o->labels_stream = v;
        } else {
            o->txns_out = v;
            o->sim_flags = true;
        }
    }
    bool stream = o->from || o->to || o->since_ns;
    if (o->to && !o->from) {
        fprintf(stderr, "verdict features: --to needs --from\n");
        return 2;
    }
    if (o->from && o->to && o->to < o->from) {
        fprintf(stderr, "verdict features: --to (%llu) is before --from (%llu)\n", (unsigned long long)o->to,
                (unsigned long long)o->from);
        return 2;
    }
    if (o->from && o->since_ns) {
        fprintf(stderr, "verdict features: --since cannot be combined with --from/--to\n");
        return 2;
    }
    if (stream && o->input) {
        fprintf(stderr, "verdict features: --input cannot be combined with --from/--to/--since (one source)\n");
        return 2;
    }
    if ((stream || o->input) && o->sim_flags) {
        fprintf(stderr,
                "verdict features: --count, --seed, --fraud-rate and --txns-out are for the simulator, not "
                "for --%s\n",
                o->input ? "input" : "from/--since");
        return 2;
    }
    if (!stream && !o->input && (o->labels_file || o->labels_stream)) {
        fprintf(stderr, "verdict features: the simulator labels its own transactions; --labels and --labels-stream "
                        "are for --from/--since and --input\n");
        return 2;
    }
    if (o->labels_file && o->labels_stream) {
        fprintf(stderr, "verdict features: --labels and --labels-stream cannot be combined\n");
        return 2;
    }
    return 0;
}

/* Resolves the columns into tb->reg: from the model's inputs, or from the list. 0, or 2 with a message. */
static int resolve_columns(table *tb, const char *model_path, const char *list)
{
    if (model_path && model_path[0]) {
        gbdt *m = NULL;
        verror e = {0};
        if (gbdt_load_file(model_path, tb->reg, &m, &e) != V_OK) {
            fprintf(stderr, "verdict features: %s\n", e.msg);
            return 2;
        }
        tb->nf = gbdt_num_features(m);
        for (int i = 0; i < tb->nf; i++)
            tb->ids[i] = gbdt_feature_id(m, i);
        gbdt_free(m);
        return 0;
    }
    static char names[FEAT_MAX][FEAT_NAME_MAX];
    tb->nf = features_split(list, names, FEAT_MAX);
    if (tb->nf == 0) {
        fprintf(stderr, "verdict features: --features names no feature\n");
        return 2;
    }
    for (int i = 0; i < tb->nf; i++) {
        verror e = {0};
        tb->ids[i] = featreg_resolve(tb->reg, names[i], strlen(names[i]), &e);
        if (tb->ids[i] < 0) {
            fprintf(stderr, "verdict features: %s\n", e.msg);
            return 2;
        }
        if (tb->reg->defs[tb->ids[i]].type == FT_STR) {
            fprintf(stderr, "verdict features: '%s' is a string; a model reads numbers and booleans\n", names[i]);
            return 2;
        }
    }
    return 0;
}

static bool reads_kind(const featreg *reg, feat_kind k)
{
    for (int i = 0; i < reg->n; i++)
        if (reg->defs[i].kind == k)
            return true;
    return false;
}

int cmd_features(int argc, char **argv)
{
    int *rest = calloc((size_t)argc + 1, sizeof *rest), nrest = 0;
    if (!rest) {
        fprintf(stderr, "verdict features: out of memory\n");
        return 1;
    }
    cliconn c = {0};
    int rc = cliconn_parse(&c, argc, argv, rest, &nrest, "features", features_help);
    fopts o = {.count = 200000, .seed = 1, .list = default_features, .unl = UNL_KEEP};
    if (rc == 0)
        rc = parse_args(&o, argc, argv, rest, nrest);
    free(rest);
    if (rc)
        return rc < 0 ? 0 : rc;
    /* only a --model on the command line names the columns: VERDICT_MODEL, set for the engine, must not
     * silently change the table's */
    bool model_flag = false;
    for (int i = 1; i < argc; i++)
        model_flag |= strcmp(argv[i], "--model") == 0 || strncmp(argv[i], "--model=", 8) == 0;
    if (!model_flag)
        c.cfg.model_file[0] = 0;
    bool list_given = o.list != default_features;
    if (list_given && c.cfg.model_file[0]) {
        fprintf(stderr, "verdict features: --features and --model both name the columns; give one\n");
        return 2;
    }
    bool stream = o.from || o.since_ns;

    static featreg reg;
    static velocity_plan vp;
    table *tb = calloc(1, sizeof *tb);
    labels *lab = NULL;
    replica *lists = NULL, *profiles = NULL;
    bool connected = false;
    int status = 1;
    if (!tb) {
        fprintf(stderr, "verdict features: out of memory\n");
        return 1;
    }
    featreg_init(&reg);
    tb->reg = &reg;
    tb->vp = &vp;
    tb->unl = o.unl;
    tb->txn_ids = o.txn_ids;
    tb->what = stream ? "stream" : o.input ? "file" : "simulator";
    if ((rc = resolve_columns(tb, c.cfg.model_file, o.list)) != 0) {
        status = rc;
        goto done;
    }
    velocity_plan_init(&vp, &reg);
    verror e = {0};
    if (vp.n > 0) {
        velocity_cfg vc = {.max_keys = (size_t)c.cfg.max_keys};
        if (velocity_new(&vp, &vc, &tb->vel, &e) != V_OK) {
            fprintf(stderr, "verdict features: %s\n", e.msg);
            goto done;
        }
    }
    bool needs_kv = reads_kind(&reg, FK_LIST) || reads_kind(&reg, FK_PROFILE);
    if (stream || o.labels_stream || (o.input && needs_kv)) {
        if ((rc = cliconn_connect(&c, "features")) != 0) {
            status = rc;
            goto done;
        }
        connected = true;
        if (history_open_replicas(c.nc, c.js, &c.cfg, &reg, &lists, &profiles, &e) != V_OK) {
            fprintf(stderr, "verdict features: %s\n", e.msg);
            goto done;
        }
        tb->lists = lists;
        tb->profiles = profiles;
    } else if (needs_kv) {
        fprintf(stderr, "features: list and profile features are missing for the simulator (no buckets read)\n");
    }
    if (o.labels_file || o.labels_stream) {
        lab = calloc(1, sizeof *lab);
        if (!lab || !labels_init(lab)) {
            fprintf(stderr, "verdict features: out of memory\n");
            goto done;
        }
        if (o.labels_file ? !labels_read_file(lab, o.labels_file) : !labels_read_stream(lab, c.js, o.labels_stream))
            goto done;
        tb->lab = lab;
    }
    tb->out = o.outp ? fopen(o.outp, "w") : stdout;
    if (!tb->out) {
        fprintf(stderr, "verdict features: cannot open %s: %s\n", o.outp, strerror(errno));
        goto done;
    }
    if (tb->txn_ids)
        fputs("txn_id,", tb->out);
    for (int i = 0; i < tb->nf; i++)
        fprintf(tb->out, "%s\"%s\"", i ? "," : "", reg.defs[tb->ids[i]].name);
    fprintf(tb->out, ",label,is_fraud\n");
    int64_t t0 = mono_ns();
    tb->last_progress = t0;
    bool ok;
    if (stream) {
        history_range range = {.from_seq = o.from, .from_time_ns = o.since_ns, .to_seq = o.to};
        history_stats hs;
        ok = history_run(c.js, &c.cfg, tb->vel ? &vp : NULL, tb->vel, &range, "features", stream_row, tb, &hs, &e) ==
             V_OK;
        if (!ok) {
            fprintf(stderr, "verdict features: %s; the table is incomplete\n", e.msg);
        } else {
            if (hs.warm_truncated)
                fprintf(stderr,
                        "features: warning: %s no longer holds the whole window before the range: velocity "
                        "features of the first rows may count too low\n",
                        c.cfg.txn_stream);
            if (!hs.read)
                fprintf(stderr, "features: no transaction in %s in the range\n", c.cfg.txn_stream);
            else
                fprintf(stderr,
                        "features: %s seq %llu..%llu, %llu undecodable (skipped); velocity state warmed with %llu "
                        "transactions stored before the range\n",
                        c.cfg.txn_stream, (unsigned long long)hs.first_seq, (unsigned long long)hs.last_seq,
                        (unsigned long long)hs.skipped, (unsigned long long)hs.warm_counted);
        }
    } else if (o.input) {
        ok = run_file(tb, o.input, &c.cfg);
    } else {
        ok = run_sim(tb, o.count, o.seed, o.fraud_rate, o.txns_out);
    }
    if (fflush(tb->out) != 0 || ferror(tb->out)) {
        fprintf(stderr, "verdict features: writing the table failed\n");
        ok = false;
    }
    fprintf(stderr, "features: %llu rows, %llu fraud (%.2f%%), %llu without a label%s, %d features, %.1f s\n",
            (unsigned long long)tb->rows, (unsigned long long)tb->fraud,
            tb->rows ? 100.0 * (double)tb->fraud / (double)tb->rows : 0.0, (unsigned long long)tb->unlabelled,
            tb->unl == UNL_SKIP    ? " (skipped)"
            : tb->unl == UNL_LEGIT ? " (written as legit)"
                                   : "",
            tb->nf, (double)(mono_ns() - t0) / 1e9);
    status = ok ? 0 : 1;
done:
    if (tb->out && tb->out != stdout && fclose(tb->out) != 0 && status == 0) {
        fprintf(stderr, "verdict features: writing %s failed\n", o.outp);
        status = 1;
    }
    replica_stop(lists);
    replica_stop(profiles);
    velocity_free(tb->vel);
    labels_free(lab);
    free(tb);
    if (connected)
        cliconn_close(&c);
    return status;
}

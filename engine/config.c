/* config.c - the option table, parsing (flag > environment > default) and --help (see config.h). */
#include "config.h"

#include "log.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum opt_kind { O_STR, O_SECRET, O_INT, O_DUR, O_DURLIST } opt_kind;

/* Groups select which options a subcommand shows and accepts. */
#define G_CONN 1   /* connecting to NATS: every command that talks to the broker */
#define G_NAMES 2  /* stream/subject names */
#define G_SERVE 4  /* the engine itself */

typedef struct opt {
    const char *flag;
    const char *env;
    opt_kind kind;
    size_t off;
    size_t size;
    const char *def; /* default as text (NULL: empty / derived) */
    int groups;
    int64_t min, max; /* O_INT: the value; O_DUR, O_DURLIST: milliseconds (each entry); both inclusive */
    const char *help;
} opt;

#define F(field) offsetof(config, field), sizeof(((config *)0)->field)

/* Every number an operator gives is bounded: durations become nanoseconds (x 1e6) on their way to the
 * server, and a value out of range would overflow there or make no sense (a zero budget declines everything
 * to the fallback). */
#define MS_S 1000LL
#define MS_D (24LL * 3600 * 1000)

static const opt opts[] = {
    {"--nats-url", "VERDICT_NATS_URL", O_STR, F(nats_url), "nats://127.0.0.1:4222", G_CONN, 0, 0,
     "NATS server URL(s), comma-separated"},
    {"--user", "VERDICT_NATS_USER", O_STR, F(user), NULL, G_CONN, 0, 0, "NATS user name"},
    {"--password", "VERDICT_NATS_PASSWORD", O_SECRET, F(password), NULL, G_CONN, 0, 0,
     "NATS password (prefer the environment variable)"},
    {"--token", "VERDICT_NATS_TOKEN", O_SECRET, F(token), NULL, G_CONN, 0, 0, "NATS auth token"},
    {"--nkey-seed", "VERDICT_NATS_NKEY_SEED", O_STR, F(nkey_seed_file), NULL, G_CONN, 0, 0, "file holding an nkey seed"},
    {"--creds", "VERDICT_NATS_CREDS", O_STR, F(creds_file), NULL, G_CONN, 0, 0, "NATS credentials file (JWT + seed)"},
    {"--tls-ca", "VERDICT_TLS_CA", O_STR, F(tls_ca), NULL, G_CONN, 0, 0, "CA certificate file (enables TLS)"},
    {"--tls-cert", "VERDICT_TLS_CERT", O_STR, F(tls_cert), NULL, G_CONN, 0, 0, "client certificate file"},
    {"--tls-key", "VERDICT_TLS_KEY", O_STR, F(tls_key), NULL, G_CONN, 0, 0, "client private key file"},
    {"--inbox-prefix", "VERDICT_INBOX_PREFIX", O_STR, F(inbox_prefix), NULL, G_CONN, 0, 0,
     "reply inbox prefix instead of _INBOX (for least-privilege users)"},
    {"--reply-prefix", "VERDICT_REPLY_PREFIX", O_STR, F(reply_prefix), "_INBOX", G_SERVE, 0, 0,
     "requesters' inbox prefixes (comma-separated) that decisions may be sent to; other reply subjects are refused"},
    {"--prefix", "VERDICT_PREFIX", O_STR, F(prefix), NULL, G_NAMES, 0, 0,
     "namespace for every stream, subject and consumer (e.g. 'acme' -> ACME_TXN, acme.txn.>)"},
    {"--workers", "VERDICT_WORKERS", O_INT, F(workers), NULL, G_SERVE, 1, 256, "worker threads (default: number of cores)"},
    {"--batch", "VERDICT_BATCH", O_INT, F(batch), "64", G_SERVE, 1, 4096, "messages per pull request"},
    {"--budget", "VERDICT_BUDGET", O_DUR, F(budget_ms), "50ms", G_SERVE, 1, MS_S * 60,
     "latency budget per transaction, measured on this engine's monotonic clock from the moment it takes the "
     "message (docs/architecture.md)"},
    {"--fallback", "VERDICT_FALLBACK", O_STR, F(fallback), "none", G_SERVE, 0, 0,
     "when the budget is spent: none (decide on rules alone) | approve | review | decline"},
    {"--max-keys", "VERDICT_MAX_KEYS", O_INT, F(max_keys), "1000000", G_SERVE, 1, 100000000,
     "velocity state: entities (cards, devices, ...) tracked per key field; least recently seen evicted"},
    {"--snapshot-interval", "VERDICT_SNAPSHOT_INTERVAL", O_DUR, F(snapshot_interval_ms), "60s", G_SERVE, 0, MS_D,
     "how often the velocity state is checkpointed into the verdict_state bucket (and at a stop), so a restart "
     "replays only what came after; 0 = never (docs/state.md, Checkpoints)"},
    {"--snapshot-keep", "VERDICT_SNAPSHOT_KEEP", O_INT, F(snapshot_keep), "3", G_SERVE, 1, 100,
     "velocity snapshots kept; older ones are deleted after each save"},
    {"--feature-ring", "VERDICT_FEATURE_RING", O_INT, F(feature_ring), "262144", G_SERVE, 0, 1 << 26,
     "velocity features remembered for redeliveries, in transactions (rounded up to a power of two; 0 = none): "
     "cover your rate x the longest redelivery delay (docs/state.md)"},
    {"--rules", "VERDICT_RULES", O_STR, F(rules_file), NULL, G_SERVE, 0, 0,
     "rules file (default: built-in amount policy until one is given)"},
    {"--model", "VERDICT_MODEL", O_STR, F(model_file), NULL, G_SERVE, 0, 0, "XGBoost JSON model file"},
    {"--shadow-rules", "VERDICT_SHADOW_RULES", O_STR, F(shadow_rules_file), NULL, G_SERVE, 0, 0,
     "candidate rules file decided beside the live policy on live traffic, into the SHADOW stream only, never "
     "to a requester (docs/shadow.md); one that does not compile is refused (logged) and live decisions go on "
     "without it; SIGHUP reloads it"},
    {"--shadow-model", "VERDICT_SHADOW_MODEL", O_STR, F(shadow_model_file), NULL, G_SERVE, 0, 0,
     "candidate XGBoost JSON model for the shadow policy (default: the live --model)"},
    {"--max-msg-size", "VERDICT_MAX_MSG_SIZE", O_INT, F(max_msg_size), "65536", G_SERVE, 64, 8 * 1024 * 1024,
     "larger transactions are dead-lettered as oversize"},
    {"--engine-id", "VERDICT_ENGINE_ID", O_STR, F(engine_id), NULL, G_SERVE, 0, 0,
     "this instance's id (default: hostname-pid)"},
    {"--metrics-addr", "VERDICT_METRICS_ADDR", O_STR, F(metrics_addr), "off", G_SERVE, 0, 0,
     "HOST:PORT for /metrics, /healthz, /readyz (HOST an IPv4 address or a name, e.g. localhost), or off"},
    {"--publish-timeout", "VERDICT_PUBLISH_TIMEOUT", O_DUR, F(publish_timeout_ms), "2s", G_SERVE, 1, MS_S * 300,
     "wait this long for a decision's PubAck before naking for a retry"},
    {"--sweep-interval", "VERDICT_SWEEP_INTERVAL", O_DUR, F(sweep_interval_ms), "5m", G_SERVE, 0, MS_D,
     "dead-letter what the server's advisories missed, this often (bounded work per pass); 0 = off"},
    {"--lease-ttl", "VERDICT_LEASE_TTL", O_DUR, F(lease_ttl_ms), "0", G_SERVE, 0, MS_S * 600,
     "hot standby: the engine decides only while it holds the durable consumer's lease in the verdict_leases "
     "bucket, renewed every third of this; others stand by with their state kept current and take over when it "
     "expires (or at once when released at a stop). 0 = no lease: every engine on the consumer pulls "
     "(docs/operations.md, High availability)"},
    {"--ack-wait", "VERDICT_ACK_WAIT", O_DUR, F(ack_wait_ms), "30s", G_NAMES, MS_S, MS_D, "consumer AckWait"},
    {"--max-deliver", "VERDICT_MAX_DELIVER", O_INT, F(max_deliver), "5", G_NAMES, 1, 100,
     "consumer MaxDeliver (then the message is dead-lettered)"},
    {"--backoff", "VERDICT_BACKOFF", O_DURLIST, F(backoff_ms), "1s,5s,30s,60s", G_NAMES, 1, MS_D,
     "consumer BackOff delays (fewer entries than --max-deliver)"},
    {"--dup-window", "VERDICT_DUP_WINDOW", O_DUR, F(dup_window_ms), "10m", G_NAMES, MS_S, MS_D * 30,
     "duplicate window of TXN and DECISIONS"},
    {"--txn-max-age", "VERDICT_TXN_MAX_AGE", O_DUR, F(txn_max_age_ms), "7d", G_NAMES, 0, MS_D * 3650, "TXN retention"},
    {"--replicas", "VERDICT_REPLICAS", O_INT, F(replicas), "1", G_NAMES, 1, 5, "stream replicas (3 on a cluster)"},
    {"--partitions", "VERDICT_PARTITIONS", O_INT, F(partitions), "0", G_NAMES, 0, 1024,
     "split TXN into this many partitions by card (subjects txn.p.<P>.<card_id>, P = FNV-1a(card_id) mod N), one "
     "durable consumer each (verdict-p<P>), each decided by one engine at a time through a lease; engines share "
     "the partitions among themselves (16 is a good start; docs/operations.md, Partitions). 0 = one consumer"},
};

/* A duration in the largest unit that states it exactly (1500ms, 90s, 60s -> 1m...). */
static void dur_format(int64_t ms, char *out, size_t cap)
{
    static const struct { int64_t ms; const char *unit; } units[] = {
        {MS_D, "d"}, {3600 * MS_S, "h"}, {60 * MS_S, "m"}, {MS_S, "s"}};
    for (size_t i = 0; i < ARRAY_LEN(units); i++)
        if (ms >= units[i].ms && ms % units[i].ms == 0) {
            snprintf(out, cap, "%lld%s", (long long)(ms / units[i].ms), units[i].unit);
            return;
        }
    snprintf(out, cap, "%lldms", (long long)ms);
}

static vstatus dur_range_error(verror *e, const char *src, const char *v, int vlen, const opt *o)
{
    char lo[32], hi[32];
    dur_format(o->min, lo, sizeof lo);
    dur_format(o->max, hi, sizeof hi);
    return verror_set(e, V_EINVAL, "%s: '%.*s' is out of range: it must be between %s and %s", src, vlen, v, lo,
                      hi);
}

static vstatus set_value(config *c, const opt *o, const char *v, const char *src, verror *e)
{
    char *field = (char *)c + o->off;
    switch (o->kind) {
    case O_STR:
    case O_SECRET:
        if (!str_copy(field, o->size, v))
            return verror_set(e, V_EINVAL, "%s: value too long (at most %zu bytes)", src, o->size - 1);
        return V_OK;
    case O_INT: {
        char *end;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (*v == 0 || *end != 0 || errno == ERANGE)
            return verror_set(e, V_EINVAL, "%s: '%s' is not an integer", src, v);
        if (x < o->min || x > o->max)
            return verror_set(e, V_EINVAL, "%s: %s is out of range: it must be between %lld and %lld", src, v,
                              (long long)o->min, (long long)o->max);
        if (o->size == sizeof(int))
            *(int *)field = (int)x;
        else
            *(int64_t *)field = x;
        return V_OK;
    }
    case O_DUR: {
        int64_t ms;
        if (strcmp(v, "0") == 0)
            ms = 0; /* zero in any unit (then the range decides: "--sweep-interval 0" is off) */
        else if (!duration_parse_ms(v, strlen(v), &ms))
            return verror_set(e, V_EINVAL, "%s: '%s' is not a duration (e.g. 250ms, 30s, 10m, 24h, 7d)", src, v);
        if (ms < o->min || ms > o->max)
            return dur_range_error(e, src, v, (int)strlen(v), o);
        *(int64_t *)field = ms;
        return V_OK;
    }
    case O_DURLIST: {
        int n = 0;
        const char *p = v;
        while (*p) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            int64_t ms;
            if (n >= (int)ARRAY_LEN(c->backoff_ms) || !duration_parse_ms(p, len, &ms))
                return verror_set(e, V_EINVAL, "%s: '%s' is not a list of at most %d durations", src, v,
                                  (int)ARRAY_LEN(c->backoff_ms));
            if (ms < o->min || ms > o->max)
                return dur_range_error(e, src, p, (int)len, o);
            c->backoff_ms[n++] = ms;
            p = comma ? comma + 1 : p + len;
        }
        c->backoff_len = n;
        return V_OK;
    }
    }
    return V_EINVAL;
}

void config_name(const config *c, name_kind kind, const char *base, char *out, size_t cap)
{
    char pre[64] = "";
    for (size_t i = 0; c->prefix[i] && i < sizeof pre - 1; i++) {
        char ch = c->prefix[i];
        if (kind == NAME_STREAM)
            ch = (ch >= 'a' && ch <= 'z') ? (char)(ch - 32) : (ch == '.' ? '_' : ch);
        pre[i] = ch;
    }
    snprintf(out, cap, "%s%s%s", pre, !pre[0] ? "" : kind == NAME_SUBJECT ? "." : "_", base);
}

static void derive_names(config *c)
{
#define NAME(kind, field, base) config_name(c, kind, base, c->field, sizeof c->field)
    NAME(NAME_STREAM, txn_stream, "TXN");
    NAME(NAME_SUBJECT, txn_subjects, "txn.>");
    NAME(NAME_SUBJECT, ingress_subject, "txn.req");
    NAME(NAME_STREAM, decisions_stream, "DECISIONS");
    NAME(NAME_SUBJECT, decision_prefix, "decision");
    NAME(NAME_STREAM, dlq_stream, "DLQ");
    NAME(NAME_STREAM, shadow_stream, "SHADOW");
    NAME(NAME_SUBJECT, shadow_prefix, "shadow");
    NAME(NAME_SUBJECT, dlq_prefix, "dlq");
    NAME(NAME_STREAM, adv_stream, "VERDICT_ADVISORIES");
    NAME(NAME_SUBJECT, decide_subject, "verdict.v1.decide");
    NAME(NAME_BUCKET, rules_bucket, "verdict_rules");
    NAME(NAME_BUCKET, lists_bucket, "verdict_lists");
    NAME(NAME_BUCKET, profiles_bucket, "verdict_profiles");
    NAME(NAME_BUCKET, consumer, "verdict");
#undef NAME
    str_copy(c->queue_group, sizeof c->queue_group, "q");
}

void config_defaults(config *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < ARRAY_LEN(opts); i++)
        if (opts[i].def)
            set_value(c, &opts[i], opts[i].def, "default", NULL);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    c->workers = n > 0 ? (n > 256 ? 256 : (int)n) : 2; /* within --workers' bounds on any machine */
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    snprintf(c->engine_id, sizeof c->engine_id, "%.40s-%d", host, (int)getpid());
    derive_names(c);
}

static const opt *find_opt(const char *flag, size_t len)
{
    for (size_t i = 0; i < ARRAY_LEN(opts); i++)
        if (strlen(opts[i].flag) == len && memcmp(opts[i].flag, flag, len) == 0)
            return &opts[i];
    return NULL;
}

vstatus config_parse(config *c, int argc, char **argv, bool *help, int *rest, int *nrest, verror *e)
{
    *help = false;
    if (nrest)
        *nrest = 0;
    /* environment first, so flags override it */
    for (size_t i = 0; i < ARRAY_LEN(opts); i++) {
        const char *v = getenv(opts[i].env);
        if (v && *v) {
            vstatus s = set_value(c, &opts[i], v, opts[i].env, e);
            if (s)
                return s;
        }
    }
    const char *fault = getenv("VERDICT_TEST_FAULT");
    if (fault)
        str_copy(c->fault, sizeof c->fault, fault);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *help = true;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t flen = eq ? (size_t)(eq - a) : strlen(a);
        const opt *o = a[0] == '-' ? find_opt(a, flen) : NULL;
        if (!o) {
            if (rest) {
                rest[(*nrest)++] = i;
                continue;
            }
            return verror_set(e, V_EINVAL, "unknown option '%s' (see --help)", a);
        }
        const char *v = eq ? eq + 1 : NULL;
        if (!v) {
            if (i + 1 >= argc)
                return verror_set(e, V_EINVAL, "%s needs a value", o->flag);
            v = argv[++i];
        }
        vstatus s = set_value(c, o, v, o->flag, e);
        if (s)
            return s;
    }
    derive_names(c);
    if (c->workers < 1 || c->workers > 256) /* the default comes from the core count, not the table */
        return verror_set(e, V_EINVAL, "--workers must be between 1 and 256");
    if (c->backoff_len >= c->max_deliver)
        return verror_set(e, V_EINVAL, "--backoff needs fewer entries (%d) than --max-deliver (%d)",
                          c->backoff_len, c->max_deliver);
    if (strcmp(c->fallback, "none") && strcmp(c->fallback, "approve") && strcmp(c->fallback, "review") &&
        strcmp(c->fallback, "decline"))
        return verror_set(e, V_EINVAL, "--fallback must be none, approve, review or decline");
    if (c->txn_max_age_ms && c->dup_window_ms > c->txn_max_age_ms)
        return verror_set(e, V_EINVAL, "--dup-window (%lld ms) cannot be longer than --txn-max-age (%lld ms)",
                          (long long)c->dup_window_ms, (long long)c->txn_max_age_ms);
    if (c->metrics_addr[0] && strcmp(c->metrics_addr, "off") != 0) {
        /* the form only; the host is resolved when the listener starts (observe.c) */
        const char *colon = strrchr(c->metrics_addr, ':');
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;
        if (!colon || !colon[1] || *end || port < 1 || port > 65535)
            return verror_set(e, V_EINVAL, "--metrics-addr '%s' is not HOST:PORT (e.g. localhost:9464, "
                              "0.0.0.0:9464, :9464 for 127.0.0.1) or off", c->metrics_addr);
    }
    if (c->lease_ttl_ms && c->lease_ttl_ms < 600)
        return verror_set(e, V_EINVAL, "--lease-ttl must be 0 (no lease) or at least 600ms");
    if (c->partitions > 0) {
        /* partitioned: TXN holds the partition subjects only, so a publish anywhere else is refused by the server
         * (no stream) rather than stored where no partition consumer would ever deliver it */
        size_t n = strlen(c->txn_subjects);
        if (n < 3 || strcmp(c->txn_subjects + n - 2, ".>") != 0)
            return verror_set(e, V_EINVAL, "--partitions needs TXN subjects of the form <base>.> (have '%s')",
                              c->txn_subjects);
        if (n < 5 || strcmp(c->txn_subjects + n - 4, ".p.>") != 0) {
            char sub[NAME_MAX_LEN];
            snprintf(sub, sizeof sub, "%.*s.p.>", (int)(n - 2), c->txn_subjects);
            str_copy(c->txn_subjects, sizeof c->txn_subjects, sub);
        }
        if (c->lease_ttl_ms == 0)
            c->lease_ttl_ms = 3000; /* partitions are owned through leases; 3 s is the tested default */
    }
    for (const char *p = c->prefix; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
            return verror_set(e, V_EINVAL, "--prefix must be lower-case [a-z0-9_-]");
    return V_OK;
}

void config_print_help(FILE *out, const char *which)
{
    int groups = G_CONN;
    if (strcmp(which, "serve") == 0 || strcmp(which, "demo") == 0)
        groups |= G_NAMES | G_SERVE;
    else if (strcmp(which, "names") == 0)
        groups |= G_NAMES;
    for (size_t i = 0; i < ARRAY_LEN(opts); i++) {
        const opt *o = &opts[i];
        if (!(o->groups & groups))
            continue;
        char left[64];
        snprintf(left, sizeof left, "%s %s", o->flag,
                 o->kind == O_INT ? "N" : o->kind == O_DUR ? "DUR" : o->kind == O_DURLIST ? "DUR,..." : "VAL");
        fprintf(out, "  %-26s %s\n  %-26s   env %s", left, o->help, "", o->env);
        if (o->def && o->kind != O_SECRET)
            fprintf(out, ", default %s", o->def);
        fputc('\n', out);
    }
}

void config_log(const config *c)
{
    log_info("configuration",
             "\"nats_url\":\"%s\",\"auth\":\"%s\",\"tls\":%s,\"prefix\":\"%s\",\"workers\":%d,\"batch\":%d,"
             "\"budget_ms\":%lld,\"fallback\":\"%s\",\"rules\":\"%s\",\"model\":\"%s\",\"engine_id\":\"%s\","
             "\"shadow_rules\":\"%s\",\"shadow_model\":\"%s\"",
             log_esc(c->nats_url),
             c->creds_file[0] ? "creds" : c->nkey_seed_file[0] ? "nkey" : c->token[0] ? "token" :
                                c->user[0] ? "user/password" : "none",
             c->tls_ca[0] || c->tls_cert[0] ? "true" : "false", log_esc(c->prefix), c->workers, c->batch,
             (long long)c->budget_ms, c->fallback, log_esc(c->rules_file), log_esc(c->model_file),
             log_esc(c->engine_id), log_esc(c->shadow_rules_file), log_esc(c->shadow_model_file));
}

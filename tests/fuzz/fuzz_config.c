/* fuzz_config.c - libFuzzer target: operator input (engine/config.c and duration_parse_ms in common.c).
 * The input is a recipe for a command line and an environment: known flags in both spellings (--f v and
 * --f=v), their VERDICT_* variables, values shaped like durations, lists, integers and names, unknown flags
 * and --help. config_parse must never crash or write outside its fields, and what it accepts must be usable:
 *   - every string field NUL-terminated inside its array;
 *   - counts within the documented ranges (workers 1-256, batch 1-4096, max-msg-size 64..8 MiB, backoff
 *     shorter than max-deliver);
 *   - [item 17] every duration converts to nanoseconds (ms * 1e6) and the budget to the engine's
 *     microsecond comparisons (budget_ms * 4000) without overflowing int64, and the budget is not 0.
 * duration_parse_ms is also checked directly against 128-bit arithmetic: whatever it accepts is exact. */
#include "config.h"
#include "fdp.h"
#include "known.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const flags[] = {
    "--nats-url", "--user",    "--password",     "--token",     "--nkey-seed",   "--creds",       "--tls-ca",
    "--tls-cert", "--tls-key", "--inbox-prefix", "--prefix",    "--workers",     "--batch",       "--budget",
    "--fallback", "--max-keys", "--rules",       "--model",     "--max-msg-size", "--engine-id",  "--metrics-addr",
    "--publish-timeout", "--ack-wait", "--max-deliver", "--backoff", "--dup-window", "--txn-max-age", "--replicas",
};
static const char *const envs[] = {
    "VERDICT_NATS_URL", "VERDICT_NATS_USER", "VERDICT_NATS_PASSWORD", "VERDICT_NATS_TOKEN",
    "VERDICT_NATS_NKEY_SEED", "VERDICT_NATS_CREDS", "VERDICT_TLS_CA", "VERDICT_TLS_CERT", "VERDICT_TLS_KEY",
    "VERDICT_INBOX_PREFIX", "VERDICT_PREFIX", "VERDICT_WORKERS", "VERDICT_BATCH", "VERDICT_BUDGET",
    "VERDICT_FALLBACK", "VERDICT_MAX_KEYS", "VERDICT_RULES", "VERDICT_MODEL", "VERDICT_MAX_MSG_SIZE",
    "VERDICT_ENGINE_ID", "VERDICT_METRICS_ADDR", "VERDICT_PUBLISH_TIMEOUT", "VERDICT_ACK_WAIT",
    "VERDICT_MAX_DELIVER", "VERDICT_BACKOFF", "VERDICT_DUP_WINDOW", "VERDICT_TXN_MAX_AGE", "VERDICT_REPLICAS",
    "VERDICT_TEST_FAULT",
};

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_config: %s\n", what);
    abort();
}

/* A value: a duration (digits and a unit), a list of them, an integer, a name, or raw bytes. */
static void value(fdp *p, char *out, size_t cap)
{
    static const char *const units[] = {"ms", "s", "m", "h", "d", "", "us", "x"};
    switch (fdp_range(p, 0, 5)) {
    case 0:
    case 1: {
        size_t o = 0;
        int parts = fdp_range(p, 0, 1) ? 1 : (int)fdp_range(p, 0, 9);
        for (int i = 0; i < parts && o + 40 < cap; i++) {
            uint64_t digits = fdp_range(p, 0, 3) == 0 ? fdp_range(p, 0, UINT64_MAX) : fdp_range(p, 0, 100000);
            o += (size_t)snprintf(out + o, cap - o, "%s%llu%s", i ? "," : "", (unsigned long long)digits,
                                  units[fdp_range(p, 0, 7)]);
        }
        out[o] = 0;
        return;
    }
    case 2: snprintf(out, cap, "%lld", (long long)fdp_i64(p)); return;
    case 3: fdp_string(p, out, cap, 80, true); return;
    default: fdp_string(p, out, cap, cap - 1, false); return;
    }
}

static bool terminated(const char *s, size_t cap) { return memchr(s, 0, cap) != NULL; }

static void check_duration(int64_t ms, const char *what)
{
    if (ms < 0)
        fail(what);
    if (!fuzz_known(17) && ms > INT64_MAX / 1000000)
        fail("[item 17] a duration overflows when converted to nanoseconds");
}

static void durations(fdp *p)
{
    char s[64];
    size_t n = fdp_string(p, s, sizeof s, 40, false);
    int64_t ms;
    if (!duration_parse_ms(s, n, &ms))
        return;
    size_t i = 0;
    __int128 v = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        v = v * 10 + (s[i++] - '0');
    const char *u = s + i;
    __int128 mult = !strcmp(u, "ms") ? 1 : !strcmp(u, "s") ? 1000 : !strcmp(u, "m") ? 60000
                  : !strcmp(u, "h") ? 3600000 : !strcmp(u, "d") ? 86400000 : -1;
    if (i == 0 || mult < 0 || v * mult != ms)
        fail("duration_parse_ms accepted a string and returned something else than its value");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool once;
    if (!once) {
        log_set_level((log_level)(LOG_ERROR + 1));
        once = true;
    }
    fdp p = fdp_make(data, size);
    if (fdp_range(&p, 0, 3) == 0) {
        durations(&p);
        return 0;
    }
    static char store[48][300];
    char *argv[48];
    int argc = 0;
    argv[argc++] = "serve";
    int nenv = (int)fdp_range(&p, 0, 3);
    bool set[ARRAY_LEN(envs)] = {0};
    for (int i = 0; i < nenv; i++) {
        size_t k = (size_t)fdp_range(&p, 0, ARRAY_LEN(envs) - 1);
        char v[300];
        value(&p, v, sizeof v);
        setenv(envs[k], v, 1);
        set[k] = true;
    }
    while (argc < 46 && !fdp_empty(&p)) {
        char *a = store[argc];
        switch (fdp_range(&p, 0, 7)) {
        case 0: /* --flag=value */ {
            char v[200];
            value(&p, v, sizeof v);
            snprintf(a, sizeof store[0], "%s=%s", flags[fdp_range(&p, 0, ARRAY_LEN(flags) - 1)], v);
            break;
        }
        case 1: fdp_string(&p, a, sizeof store[0], 40, false); break; /* anything */
        case 2: snprintf(a, sizeof store[0], "%s", fdp_bool(&p) ? "--help" : "-h"); break;
        default: /* --flag value (the value perhaps missing at the end) */
            snprintf(a, sizeof store[0], "%s", flags[fdp_range(&p, 0, ARRAY_LEN(flags) - 1)]);
            argv[argc++] = a;
            a = store[argc];
            value(&p, a, sizeof store[0]);
        }
        argv[argc++] = a;
    }
    argv[argc] = NULL;

    config c;
    config_defaults(&c);
    bool help;
    int rest[48], nrest = 0;
    verror e = {0};
    bool with_rest = fdp_bool(&p);
    vstatus rc = config_parse(&c, argc, argv, &help, with_rest ? rest : NULL, with_rest ? &nrest : NULL, &e);
    for (size_t k = 0; k < ARRAY_LEN(envs); k++)
        if (set[k])
            unsetenv(envs[k]);
    if (rc != V_OK) {
        if (!e.msg[0])
            fail("a refusal without a message");
        return 0;
    }
    const char *strs[] = {c.nats_url, c.user, c.password, c.token, c.nkey_seed_file, c.creds_file, c.tls_ca,
                          c.tls_cert, c.tls_key, c.inbox_prefix, c.prefix, c.txn_stream, c.txn_subjects,
                          c.consumer, c.decisions_stream, c.decision_prefix, c.dlq_stream, c.dlq_prefix,
                          c.adv_stream, c.rules_bucket, c.lists_bucket, c.profiles_bucket, c.decide_subject,
                          c.queue_group, c.ingress_subject, c.fallback, c.rules_file, c.model_file, c.engine_id,
                          c.metrics_addr, c.fault};
    size_t caps[] = {sizeof c.nats_url, sizeof c.user, sizeof c.password, sizeof c.token, sizeof c.nkey_seed_file,
                     sizeof c.creds_file, sizeof c.tls_ca, sizeof c.tls_cert, sizeof c.tls_key,
                     sizeof c.inbox_prefix, sizeof c.prefix, sizeof c.txn_stream, sizeof c.txn_subjects,
                     sizeof c.consumer, sizeof c.decisions_stream, sizeof c.decision_prefix, sizeof c.dlq_stream,
                     sizeof c.dlq_prefix, sizeof c.adv_stream, sizeof c.rules_bucket, sizeof c.lists_bucket,
                     sizeof c.profiles_bucket, sizeof c.decide_subject, sizeof c.queue_group,
                     sizeof c.ingress_subject, sizeof c.fallback, sizeof c.rules_file, sizeof c.model_file,
                     sizeof c.engine_id, sizeof c.metrics_addr, sizeof c.fault};
    for (size_t i = 0; i < ARRAY_LEN(strs); i++)
        if (!terminated(strs[i], caps[i]))
            fail("a string field is not terminated");
    if (c.workers < 1 || c.workers > 256 || c.batch < 1 || c.batch > 4096 || c.max_msg_size < 64 ||
        c.max_msg_size > 8 * 1024 * 1024 || c.max_deliver < 1 || c.backoff_len < 0 ||
        c.backoff_len >= c.max_deliver || c.backoff_len > (int)ARRAY_LEN(c.backoff_ms) || c.max_keys < 0 ||
        c.replicas < 0)
        fail("an accepted count is out of its range");
    check_duration(c.ack_wait_ms, "negative ack wait");
    check_duration(c.dup_window_ms, "negative duplicate window");
    check_duration(c.txn_max_age_ms, "negative max age");
    check_duration(c.publish_timeout_ms, "negative publish timeout");
    check_duration(c.budget_ms, "negative budget");
    for (int i = 0; i < c.backoff_len; i++)
        check_duration(c.backoff_ms[i], "negative backoff");
    if (!fuzz_known(17) && (c.budget_ms == 0 || c.budget_ms > INT64_MAX / 4000))
        fail("[item 17] a budget of 0, or one that overflows budget_ms * 4000, was accepted");
    if (with_rest && (nrest < 0 || nrest > argc))
        fail("more leftover arguments than arguments");
    return 0;
}

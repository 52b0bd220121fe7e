/* config.h - engine configuration: every option has a flag, an environment variable and a default.
 *
 * One table (config.c) drives parsing, validation and --help, so the help text cannot drift from what is
 * parsed. Precedence: flag > environment > default. Secrets (password, token) are never printed: --help shows
 * only the variable names, and config_log() masks them. */
#ifndef VERDICT_CONFIG_H
#define VERDICT_CONFIG_H

#include "common.h"

#include <stdint.h>
#include <stdio.h>

#define NAME_MAX_LEN 128

typedef struct config {
    /* connection */
    char nats_url[512];
    char user[128], password[256], token[256];
    char nkey_seed_file[512], creds_file[512];
    char tls_ca[512], tls_cert[512], tls_key[512];
    char inbox_prefix[128];
    char reply_prefix[256]; /* requesters' inbox prefixes (comma-separated) a Verdict-Reply-To may name */
    /* names (DESIGN section 2); all derived from prefix unless set */
    char prefix[64];
    char txn_stream[NAME_MAX_LEN], txn_subjects[NAME_MAX_LEN], consumer[NAME_MAX_LEN];
    char decisions_stream[NAME_MAX_LEN], decision_prefix[NAME_MAX_LEN];
    char dlq_stream[NAME_MAX_LEN], dlq_prefix[NAME_MAX_LEN];
    char adv_stream[NAME_MAX_LEN];
    char rules_bucket[NAME_MAX_LEN], lists_bucket[NAME_MAX_LEN], profiles_bucket[NAME_MAX_LEN]; /* KV */
    char decide_subject[NAME_MAX_LEN], queue_group[64], ingress_subject[NAME_MAX_LEN];
    /* consumer and streams */
    int64_t ack_wait_ms;
    int max_deliver;
    int64_t backoff_ms[8];
    int backoff_len;
    int64_t dup_window_ms;
    int64_t txn_max_age_ms;
    int replicas;
    int partitions; /* TXN split into this many partitions, one durable consumer each (partition.h); 0 = one consumer */
    /* processing */
    int workers;
    int batch;
    int64_t budget_ms;
    int64_t max_keys; /* velocity: entities tracked per key field */
    int64_t feature_ring; /* features of recent sequences kept for redeliveries (sequencer.h) */
    int64_t snapshot_interval_ms; /* velocity checkpoints (checkpoint.c); 0 = off */
    int64_t snapshot_keep;
    char fallback[16]; /* "none" (rules only), "approve", "review", "decline" */
    int64_t max_msg_size;
    char rules_file[512];
    char model_file[512];
    /* shadow policy (shadow.h): a candidate decided beside the live policy, into its own stream only */
    char shadow_rules_file[512];
    char shadow_model_file[512];
    char shadow_stream[NAME_MAX_LEN], shadow_prefix[NAME_MAX_LEN];
    char engine_id[64];
    char metrics_addr[64]; /* host:port or "off" */
    int64_t publish_timeout_ms;
    int64_t sweep_interval_ms; /* the DLQ worker's sweep for what advisories missed; 0 = off */
    int64_t lease_ttl_ms;      /* own the durable consumer through a lease (lease.h); 0 = no lease */
    /* benchmark baseline: republish each message unchanged with a msg-id and ack, no decision logic
     * (set by `verdict bench`, never by a flag) */
    bool passthrough;
    /* test-only fault switch (env VERDICT_TEST_FAULT), see docs/testing.md */
    char fault[64];
} config;

/* How a name is put under --prefix (DESIGN section 2), e.g. with prefix acme: a stream ACME_TXN (the prefix upper
 * case, '_'), a subject acme.txn ('.'), a KV bucket or durable consumer acme_verdict_rules ('_'). Without a
 * prefix, the base name alone. */
typedef enum name_kind { NAME_STREAM, NAME_SUBJECT, NAME_BUCKET } name_kind;

/* Writes base under c's prefix, by the rule of kind, into out (cap bytes, truncated). */
void config_name(const config *c, name_kind kind, const char *base, char *out, size_t cap);

/* Sets defaults and derives names from the prefix. */
void config_defaults(config *c);

/* Parses argv (argv[0] is the subcommand) and the environment into c. Unknown flags or bad values return
 * V_EINVAL with a message. Sets *help when --help was given. Flags not in the table are left for the caller
 * when rest != NULL (their indices are collected in rest[], count in *nrest). */
vstatus config_parse(config *c, int argc, char **argv, bool *help, int *rest, int *nrest, verror *e);

/* Prints the option table (flags, env vars, defaults; secrets never shown) for `verdict CMD --help`. */
void config_print_help(FILE *out, const char *which);

/* Logs the effective configuration as one JSON line with secrets masked. */
void config_log(const config *c);

#endif

/* reloader.h - hot reload of rules and model: file changes, SIGHUP, and the verdict_rules KV bucket.
 *
 * One thread watches the key `rules` of the verdict_rules bucket (so every instance switches together) and
 * polls the modification stamp of the rules and model files once a second. Precedence: a value in the KV key
 * is the fleet-wide truth and wins over the rules file; deleting the key falls back to the file. A file change
 * seen while KV rules are in force reloads the model (if it changed) with the KV rules. Every new version is
 * compiled in full before it is swapped in; a version that fails is logged with its errors, counted, and the
 * running one stays. A version refused only because its velocity state could not be rebuilt from the stream
 * (a stalled or unreachable server: V_ETIMEOUT, V_ENATS) is tried again every 5 s until it applies or a newer
 * one arrives; at start, such KV rules fail the start instead of leaving the file's rules in force. The bucket
 * keeps history, so `nats kv history verdict_rules rules` is the audit trail. */
#ifndef VERDICT_RELOADER_H
#define VERDICT_RELOADER_H

#include "common.h"
#include "config.h"

#include <nats/nats.h>

typedef struct reloader reloader;

/* What the reloader drives: the engine fills it (policyswap.c); the reloader knows nothing else of it. */
typedef struct reload_target {
    void *ctx;
    /* rebuild the policy from the configured rules and model files and swap it in */
    vstatus (*reload_files)(void *ctx, const char *why, verror *e);
    /* the same with rules text from elsewhere (the KV bucket); name labels messages */
    vstatus (*reload_text)(void *ctx, const char *src, size_t len, const char *name, verror *e);
    void (*versions)(void *ctx, char *rules, char *model, size_t cap); /* in force */
} reload_target;

#define RULES_KV_KEY "rules"

/* Takes the first stamps of the files, creates or binds the bucket, applies its current value (before the
 * caller starts taking work), reloads if the files no longer hold the versions in force (they changed while
 * the engine connected and rebuilt its state, after it loaded them), then starts the watching thread. */
vstatus reloader_start(const reload_target *t, const config *c, jsCtx *js, reloader **out, verror *e);

/* Reloads now from the active source (SIGHUP). */
vstatus reloader_reload(reloader *r, const char *why, verror *e);

void reloader_stop(reloader *r);

/* Creates or binds the rules bucket (used by the engine and by `verdict rules push`). */
vstatus reloader_bucket(const config *c, jsCtx *js, kvStore **kv, verror *e);

#endif

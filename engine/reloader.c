/* reloader.c - the reload thread (see reloader.h). */
#include "reloader.h"

#include "broker.h"
#include "log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct stamp {
    bool exists;
    int64_t mtime_ns;
    int64_t size;
    uint64_t ino;
} stamp;

struct reloader {
    reload_target t;
    config cfg;
    kvStore *kv;
    kvWatcher *w;
    pthread_t thread;
    bool thread_started;
    atomic_bool stop;
    pthread_mutex_t mu; /* one reload at a time */
    char *kv_text;      /* the rules in the KV key, when in force */
    size_t kv_len;
    uint64_t kv_rev;
    char *pending_text; /* a KV version refused for want of the stream (see transient): retried */
    size_t pending_len;
    uint64_t pending_rev;
    bool files_pending; /* the same for a file reload */
    int64_t retry_at;   /* mono_ns of the next retry */
    stamp rules_st, model_st;
    stamp rules_seen, model_seen; /* last observed, to wait one tick for a write to settle */
};

static stamp stamp_of(const char *path)
{
    stamp s = {0};
    struct stat st;
    if (path[0] && stat(path, &st) == 0) {
        s.exists = true;
        s.mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        s.size = (int64_t)st.st_size;
        s.ino = (uint64_t)st.st_ino;
    }
    return s;
}

static bool stamp_eq(const stamp *a, const stamp *b)
{
    return a->exists == b->exists && a->mtime_ns == b->mtime_ns && a->size == b->size && a->ino == b->ino;
}

vstatus reloader_bucket(const config *c, jsCtx *js, kvStore **kv, verror *e)
{
    natsStatus s = js_KeyValue(kv, js, c->rules_bucket);
    if (s == NATS_OK)
        return V_OK;
    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = c->rules_bucket;
    kc.Description = "Verdict rules: key 'rules' holds the rules file every engine runs";
    kc.History = 64;
    kc.Replicas = c->replicas;
    kc.MaxValueSize = 4 << 20;
    s = js_CreateKeyValue(kv, js, &kc);
    if (s != NATS_OK)
        return broker_err(e, s, 0, "cannot create or bind the rules KV bucket");
    return V_OK;
}

#define RETRY_NS 5000000000LL

/* A reload refused for want of the stream (the velocity state could not be rebuilt: a stalled or unreachable
 * server), not for what the rules or model say: the same version is tried again every RETRY_NS. */
static bool transient(vstatus rc) { return rc == V_ETIMEOUT || rc == V_ENATS; }

/* Reload from whatever is in force. Caller holds mu. */
static vstatus reload_locked(reloader *r, const char *why, verror *e)
{
    if (r->kv_text) {
        char name[160];
        snprintf(name, sizeof name, "kv:%s/%s@%llu", r->cfg.rules_bucket, RULES_KV_KEY,
                 (unsigned long long)r->kv_rev);
        (void)why;
        return r->t.reload_text(r->t.ctx, r->kv_text, r->kv_len, name, e);
    }
    return r->t.reload_files(r->t.ctx, why, e);
}

vstatus reloader_reload(reloader *r, const char *why, verror *e)
{
    pthread_mutex_lock(&r->mu);
    r->rules_st = stamp_of(r->cfg.rules_file);
    r->model_st = stamp_of(r->cfg.model_file);
    vstatus rc = reload_locked(r, why, e);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

static void clear_pending(reloader *r)
{
    free(r->pending_text);
    r->pending_text = NULL;
    r->pending_len = 0;
}

/* Applies KV rules text t (taking it over). Caller holds mu. */
static vstatus apply_text(reloader *r, char *t, size_t len, uint64_t rev, verror *e)
{
    char name[160];
    snprintf(name, sizeof name, "kv:%s/%s@%llu", r->cfg.rules_bucket, RULES_KV_KEY, (unsigned long long)rev);
    vstatus rc = r->t.reload_text(r->t.ctx, t, len, name, e);
    if (rc == V_OK) {
        if (r->pending_text == t)
            r->pending_text = NULL; /* t is now the text in force */
        clear_pending(r);
        free(r->kv_text);
        r->kv_text = t;
        r->kv_len = len;
        r->kv_rev = rev;
    } else if (transient(rc)) {
        log_warn("KV rules not applied yet: the velocity state could not be built; retrying",
                 "\"source\":\"%s\",\"retry_s\":%d", log_esc(name), (int)(RETRY_NS / 1000000000LL));
        if (r->pending_text != t) {
            clear_pending(r);
            r->pending_text = t;
        }
        r->pending_len = len;
        r->pending_rev = rev;
        r->retry_at = mono_ns() + RETRY_NS;
    } else {
        if (r->pending_text == t)
            r->pending_text = NULL;
        free(t); /* refused and logged by the engine; what ran before stays */
    }
    return rc;
}

/* A KV entry (or NULL after a delete): takes effect at once. Caller holds mu. */
static vstatus apply_entry(reloader *r, kvEntry *ent, verror *e)
{
    kvOperation op = kvEntry_Operation(ent);
    if (op == kvOp_Put) {
        size_t len = (size_t)kvEntry_ValueLen(ent);
        char *t = malloc(len + 1);
        if (!t) {
            log_error("out of memory reading the KV rules", NULL);
            return verror_set(e, V_ENOMEM, "out of memory reading the KV rules");
        }
        memcpy(t, kvEntry_Value(ent), len);
        t[len] = 0;
        return apply_text(r, t, len, kvEntry_Revision(ent), e);
    }
    clear_pending(r);
    if (r->kv_text) {
        log_info("KV rules deleted; falling back to the rules file", "\"bucket\":\"%s\"", log_esc(r->cfg.rules_bucket));
        free(r->kv_text);
        r->kv_text = NULL;
        r->kv_len = 0;
        vstatus rc = r->t.reload_files(r->t.ctx, "kv rules deleted", e);
        r->files_pending = transient(rc);
        r->retry_at = mono_ns() + RETRY_NS;
        return rc;
    }
    return V_OK;
}

/* Retries a version refused for a transient reason. Caller holds mu. */
static void retry_pending(reloader *r)
{
    if ((!r->pending_text && !r->files_pending) || mono_ns() < r->retry_at)
        return;
    verror e = {0};
    if (r->pending_text) {
        apply_text(r, r->pending_text, r->pending_len, r->pending_rev, &e);
        return;
    }
    vstatus rc = reload_locked(r, "retry", &e);
    r->files_pending = transient(rc);
    r->retry_at = mono_ns() + RETRY_NS;
}

/* Whether the file at path now holds other bytes than the version in force (a hash64 of the bytes, as rules
 * and model versions are). An unreadable file counts as unchanged: the file poll reports it. */
static bool file_differs(const char *path, const char *version)
{
    char *buf = NULL;
    size_t n = 0;
    verror e = {0};
    if (!path[0] || file_read(path, (size_t)256 << 20, &buf, &n, &e) != V_OK)
        return false;
    char hex[17];
    hash64_hex(hash64(buf, n), hex);
    free(buf);
    return strcmp(hex, version) != 0;
}

/* The engine loaded the files before it connected and rebuilt its state; the first stamps are taken only now.
 * A change in between would never be seen by the poll, so the files are compared with what is in force, once,
 * after the stamps, before the watching thread starts. */
static void reload_if_changed_since_load(reloader *r)
{
    char rules_v[64], model_v[64];
    r->t.versions(r->t.ctx, rules_v, model_v, sizeof rules_v);
    bool rules_changed = !r->kv_text && file_differs(r->cfg.rules_file, rules_v);
    bool model_changed = file_differs(r->cfg.model_file, model_v);
    if (!rules_changed && !model_changed)
        return;
    log_info("rules or model file changed while the engine started; reloading",
             "\"rules_changed\":%s,\"model_changed\":%s", rules_changed ? "true" : "false",
             model_changed ? "true" : "false");
    verror e = {0};
    r->files_pending = transient(reload_locked(r, "file changed during the start", &e));
    r->retry_at = mono_ns() + RETRY_NS;
}

static void poll_files(reloader *r)
{
    stamp rs = stamp_of(r->cfg.rules_file), ms = stamp_of(r->cfg.model_file);
    bool rules_changed = r->cfg.rules_file[0] && !stamp_eq(&rs, &r->rules_st);
    bool model_changed = r->cfg.model_file[0] && !stamp_eq(&ms, &r->model_st);
    if (!rules_changed && !model_changed)
        return;
    /* wait until a change has held still for one tick, so a file being written is not read half-way */
    bool settled = stamp_eq(&rs, &r->rules_seen) && stamp_eq(&ms, &r->model_seen);
    r->rules_seen = rs;
    r->model_seen = ms;
    if (!settled)
        return;
    r->rules_st = rs;
    r->model_st = ms;
    if (!rs.exists && r->cfg.rules_file[0] && !r->kv_text) {
        log_warn("rules file disappeared; the running rules stay in force", "\"path\":\"%s\"",
                 log_esc(r->cfg.rules_file));
        return;
    }
    if (rules_changed && !model_changed && r->kv_text) {
        log_info("rules file changed but KV rules are in force; ignored", "\"path\":\"%s\"",
                 log_esc(r->cfg.rules_file));
        return;
    }
    verror e = {0};
    vstatus rc = reload_locked(r, model_changed ? "model file changed" : "rules file changed", &e);
    if (!r->pending_text) {
        r->files_pending = transient(rc);
        r->retry_at = mono_ns() + RETRY_NS;
    }
}

static void *reloader_main(void *arg)
{
    reloader *r = arg;
    int64_t next_poll = mono_ns();
    while (!atomic_load(&r->stop)) {
        kvEntry *ent = NULL;
        natsStatus s = r->w ? kvWatcher_Next(&ent, r->w, 1000) : NATS_TIMEOUT;
        if (!r->w) {
            struct timespec ts = {0, 200 * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (atomic_load(&r->stop)) {
            kvEntry_Destroy(ent);
            break;
        }
        pthread_mutex_lock(&r->mu);
        verror e = {0};
        if (s == NATS_OK && ent)
            apply_entry(r, ent, &e);
        retry_pending(r);
        if (mono_ns() >= next_poll) {
            poll_files(r);
            next_poll = mono_ns() + 1000000000LL;
        }
        pthread_mutex_unlock(&r->mu);
        kvEntry_Destroy(ent);
        if (s != NATS_OK && s != NATS_TIMEOUT && !atomic_load(&r->stop)) {
            struct timespec ts = {0, 500 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

vstatus reloader_start(const reload_target *t, const config *c, jsCtx *js, reloader **out, verror *e)
{
    reloader *r = calloc(1, sizeof *r);
    if (!r)
        return verror_set(e, V_ENOMEM, "out of memory");
    r->t = *t;
    r->cfg = *c;
    pthread_mutex_init(&r->mu, NULL);
    r->rules_st = r->rules_seen = stamp_of(c->rules_file);
    r->model_st = r->model_seen = stamp_of(c->model_file);
    vstatus rc = reloader_bucket(c, js, &r->kv, e);
    if (rc != V_OK) {
        reloader_stop(r);
        return rc;
    }
    kvWatchOptions wo;
    kvWatchOptions_Init(&wo);
    natsStatus s = kvStore_Watch(&r->w, r->kv, RULES_KV_KEY, &wo);
    if (s != NATS_OK) {
        reloader_stop(r);
        return broker_err(e, s, 0, "cannot watch the rules KV bucket");
    }
    /* the current value, before any work is taken: every instance starts on the fleet's rules */
    for (;;) {
        kvEntry *ent = NULL;
        s = kvWatcher_Next(&ent, r->w, 5000);
        if (s != NATS_OK) {
            reloader_stop(r);
            return broker_err(e, s, 0, "cannot read the rules KV bucket");
        }
        if (!ent)
            break; /* initial state delivered */
        verror ae = {0};
        vstatus rc = apply_entry(r, ent, &ae);
        kvEntry_Destroy(ent);
        if (transient(rc)) {
            /* the fleet's rules cannot be applied for want of the stream: not ready, rather than the file's */
            reloader_stop(r);
            return verror_set(e, rc, "the KV rules cannot be applied: %s", ae.msg);
        }
    }
    reload_if_changed_since_load(r);
    if (pthread_create(&r->thread, NULL, reloader_main, r) != 0) {
        reloader_stop(r);
        return verror_set(e, V_ENOMEM, "cannot start the reload thread");
    }
    r->thread_started = true;
    *out = r;
    return V_OK;
}

void reloader_stop(reloader *r)
{
    if (!r)
        return;
    atomic_store(&r->stop, true);
    if (r->w)
        kvWatcher_Stop(r->w);
    if (r->thread_started)
        pthread_join(r->thread, NULL);
    kvWatcher_Destroy(r->w);
    kvStore_Destroy(r->kv);
    free(r->kv_text);
    free(r->pending_text);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

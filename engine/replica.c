/* replica.c - the KV replicas behind list membership and profile features (see replica.h).
 *
 * Data: one open-addressing hash table (linear probing, tombstones) of escaped KV keys, per replica. A lists
 * table holds keys only; a profiles table maps each key to a small immutable record of typed fields parsed
 * from the JSON when the update arrived. Profile strings are interned in a per-replica pool that only grows,
 * so a string handed to a reader stays valid for the replica's lifetime without holding the lock.
 *
 * Concurrency: the watcher thread is the only writer. It prepares everything that allocates (key copies,
 * parsed records, a grown slot array) without the lock, then takes the write lock only to store a pointer, and
 * frees what it replaced after releasing it: readers are never held up by allocation or I/O. Initial loads and
 * reloads fill a private table that is swapped in when the watcher's initial-done marker (a NULL entry) comes. */
#include "replica.h"

#include "ident.h"

#include "broker.h"
#include "log.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOMB ((char *)1)
#define PROFILE_STR_MAX 64       /* longest profile string value */
#define INTERN_MAX (1u << 16)    /* distinct profile strings (names and values) per replica */
#define WATCH_TICK_MS 200        /* watcher poll; bounds stop latency and the staleness check period */
#define LAG_CHECK_MS 2000        /* how often the watcher's progress is compared with the bucket's stream */

/* --- hash table ----------------------------------------------------------------------------------------- */

typedef struct slot {
    uint64_t h;
    char *key; /* NULL empty, TOMB deleted, else owned NUL-terminated copy */
    uint32_t klen;
    void *val; /* profiles: owned profile record; lists: NULL */
} slot;

typedef struct table {
    slot *s;
    size_t cap; /* 0 or a power of two */
    size_t live, filled;
} table;

static size_t slot_of(uint64_t h, size_t cap) { return (size_t)((h * 0x9E3779B97F4A7C15ULL) >> 29) & (cap - 1); }

static const slot *table_find(const table *t, const char *k, size_t n, uint64_t h)
{
    if (!t || !t->cap)
        return NULL;
    for (size_t i = slot_of(h, t->cap), probes = 0; probes < t->cap; i = (i + 1) & (t->cap - 1), probes++) {
        const slot *s = &t->s[i];
        if (!s->key)
            return NULL;
        if (s->key != TOMB && s->h == h && s->klen == n && memcmp(s->key, k, n) == 0)
            return s;
    }
    return NULL;
}

/* A slot array of new_cap holding t's live entries (pointers shared, not copied), or NULL. */
static slot *table_rehash(const table *t, size_t new_cap)
{
    slot *ns = calloc(new_cap, sizeof *ns);
    if (!ns)
        return NULL;
    for (size_t i = 0; i < t->cap; i++) {
        const slot *s = &t->s[i];
        if (!s->key || s->key == TOMB)
            continue;
        size_t j = slot_of(s->h, new_cap);
        while (ns[j].key)
            j = (j + 1) & (new_cap - 1);
        ns[j] = *s;
    }
    return ns;
}

static void profile_free(void *p) { free(p); }

static void table_free(table *t, replica_kind kind)
{
    for (size_t i = 0; i < t->cap; i++)
        if (t->s[i].key && t->s[i].key != TOMB) {
            free(t->s[i].key);
            if (kind == REPLICA_PROFILES)
                profile_free(t->s[i].val);
        }
    free(t->s);
    memset(t, 0, sizeof *t);
}

/* --- profiles --------------------------------------------------------------------------------------------- */

typedef struct pfield {
    const char *name; /* interned */
    uint32_t nlen;
    fval v; /* strings interned */
} pfield;

typedef struct profile {
    uint32_t n;
    pfield f[];
} profile;

/* --- the replica ---------------------------------------------------------------------------------------- */

struct replica {
    replica_kind kind;
    char bucket[128];
    char stream[140];
    natsConnection *nc; /* borrowed */
    jsCtx *js;
    kvStore *kv;
    pthread_t thread;
    bool thread_started;

    pthread_rwlock_t lock; /* guards cur's contents as readers see them */
    table cur;
    table intern; /* writer-only: readers only follow pointers into it */

    atomic_bool stop, ready, healthy;
    atomic_uint_fast64_t updates, bad_values, reloads, last_rev;
};

/* in memory only (never stored): the fast hash, about 0.1 us a transaction less than hash64 over four list keys */
static uint64_t key_hash(const char *k, size_t n) { return hash64_mem(k, n); }

/* Interns s (writer thread only); NULL when the pool is full. */
static const char *intern(replica *r, const char *s, size_t n)
{
    uint64_t h = key_hash(s, n);
    const slot *f = table_find(&r->intern, s, n, h);
    if (f)
        return f->key;
    if (r->intern.live >= INTERN_MAX)
        return NULL;
    table *t = &r->intern;
    if ((t->filled + 1) * 10 > t->cap * 7) {
        size_t nc = t->cap ? t->cap * 2 : 64;
        slot *ns = table_rehash(t, nc);
        if (!ns)
            return NULL;
        free(t->s);
        t->s = ns;
        t->cap = nc;
        t->filled = t->live;
    }
    char *k = malloc(n + 1);
    if (!k)
        return NULL;
    memcpy(k, s, n);
    k[n] = 0;
    size_t i = slot_of(h, t->cap);
    while (t->s[i].key)
        i = (i + 1) & (t->cap - 1);
    t->s[i] = (slot){.h = h, .key = k, .klen = (uint32_t)n};
    t->live++;
    t->filled++;
    return k;
}

static void wlock(replica *r, bool shared)
{
    if (shared)
        pthread_rwlock_wrlock(&r->lock);
}

static void wunlock(replica *r, bool shared)
{
    if (shared)
        pthread_rwlock_unlock(&r->lock);
}

/* Makes room for one more key in t. shared: t is the table readers see. */
static bool table_reserve(replica *r, table *t, bool shared)
{
    if ((t->filled + 1) * 10 <= t->cap * 7)
        return true;
    size_t nc = 64;
    while (nc * 7 < (t->live + 1) * 20) /* grow to about 35% load, dropping tombstones */
        nc *= 2;
    slot *ns = table_rehash(t, nc);
    if (!ns)
        return false;
    slot *old = t->s;
    wlock(r, shared);
    t->s = ns;
    t->cap = nc;
    t->filled = t->live;
    wunlock(r, shared);
    free(old);
    return true;
}

/* Stores key -> val (val owned by the table from now on, also on failure). */
static bool table_put(replica *r, table *t, bool shared, const char *key, size_t n, void *val)
{
    uint64_t h = key_hash(key, n);
    const slot *found = table_find(t, key, n, h);
    if (found) {
        slot *s = (slot *)found;
        wlock(r, shared);
        void *old = s->val;
        s->val = val;
        wunlock(r, shared);
        if (r->kind == REPLICA_PROFILES)
            profile_free(old);
        return true;
    }
    char *k = malloc(n + 1);
    if (!k || !table_reserve(r, t, shared)) {
        free(k);
        if (r->kind == REPLICA_PROFILES)
            profile_free(val);
        return false;
    }
    memcpy(k, key, n);
    k[n] = 0;
    size_t i = slot_of(h, t->cap);
    while (t->s[i].key && t->s[i].key != TOMB)
        i = (i + 1) & (t->cap - 1);
    bool was_empty = t->s[i].key == NULL;
    wlock(r, shared);
    t->s[i] = (slot){.h = h, .key = k, .klen = (uint32_t)n, .val = val};
    t->live++; /* under the lock: replica_stats_get reads it from other threads */
    wunlock(r, shared);
    if (was_empty)
        t->filled++;
    return true;
}

static void table_del(replica *r, table *t, bool shared, const char *key, size_t n)
{
    slot *s = (slot *)table_find(t, key, n, key_hash(key, n));
    if (!s)
        return;
    wlock(r, shared);
    char *k = s->key;
    void *v = s->val;
    s->key = TOMB;
    s->val = NULL;
    t->live--;
    wunlock(r, shared);
    free(k);
    if (r->kind == REPLICA_PROFILES)
        profile_free(v);
}

/* --- key layout ------------------------------------------------------------------------------------------ */

static bool token_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '=' || c == '/' || c == '.';
}

static bool verbatim_ok(const char *v, size_t len)
{
    if (len == 0 || len > REPLICA_VALUE_MAX || v[0] == '.' || v[len - 1] == '.')
        return false;
    if ((len >= 2 && v[0] == 'h' && v[1] == '_') || (len >= 3 && memcmp(v, "_kv", 3) == 0))
        return false; /* h_ is the escape's prefix; _kv is reserved by KV clients */
    for (size_t i = 0; i < len; i++)
        if (!token_char(v[i]) || (v[i] == '.' && v[i + 1] == '.'))
            return false;
    return true;
}

size_t replica_key_token(char *out, size_t cap, const char *value, size_t len)
{
    if (len == 0 || cap < 19)
        return 0;
    if (verbatim_ok(value, len) && len < cap) {
        memcpy(out, value, len);
        out[len] = 0;
        return len;
    }
    out[0] = 'h';
    out[1] = '_';
    hash64_hex(hash64(value, len), out + 2);
    return 18;
}

static bool list_name_ok(const char *s, size_t len) { return ident_list_name_valid(s, len); }

size_t replica_list_key(char *out, size_t cap, const char *list, size_t list_len, const char *value, size_t len)
{
    if (!list_name_ok(list, list_len) || len == 0 || cap < list_len + 1 + REPLICA_VALUE_MAX + 1)
        return 0;
    memcpy(out, list, list_len);
    out[list_len] = '.';
    size_t n = replica_key_token(out + list_len + 1, cap - list_len - 1, value, len);
    return n ? list_len + 1 + n : 0;
}

/* --- applying updates ------------------------------------------------------------------------------------ */

static void refuse(replica *r, uint64_t rev, const char *why, const char *field)
{
    atomic_fetch_add(&r->bad_values, 1);
    /* never the key or the value: they may be card or account tokens */
    log_warn("replica: key refused", "\"bucket\":\"%s\",\"revision\":%llu,\"reason\":\"%s\",\"field\":\"%s\"",
             log_esc(r->bucket), (unsigned long long)rev, why, log_esc(field ? field : ""));
}

/* Parses a profile JSON object into a record (NULL on refusal, with *why and *field set). */
static profile *profile_parse(replica *r, const char *data, size_t len, const char **why, const char **field)
{
    json_error_t jerr;
    json_t *root = json_loadb(data, len, 0, &jerr);
    *field = NULL;
    if (!root || !json_is_object(root)) {
        *why = root ? "not a JSON object" : "invalid JSON";
        json_decref(root);
        return NULL;
    }
    size_t n = json_object_size(root);
    profile *p = calloc(1, sizeof *p + n * sizeof p->f[0]);
    if (!p) {
        *why = "out of memory";
        json_decref(root);
        return NULL;
    }
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v) {
        bool known;
        size_t klen = strlen(k);
        feat_type t = featreg_profile_type(k, klen, &known);
        if (!known || json_is_null(v))
            continue; /* unknown fields are ignored (forward compatible); null means missing */
        pfield *f = &p->f[p->n];
        f->v.type = (uint8_t)t;
        f->v.present = true;
        if (t == FT_NUM && json_is_number(v))
            f->v.num = json_number_value(v);
        else if (t == FT_BOOL && json_is_boolean(v))
            f->v.b = json_is_true(v);
        else if (t == FT_STR && json_is_string(v) && json_string_length(v) <= PROFILE_STR_MAX) {
            const char *s = intern(r, json_string_value(v), json_string_length(v));
            if (!s) {
                *why = "profile string pool full";
                *field = k;
                goto bad;
            }
            f->v.str = (fstr){s, (uint32_t)json_string_length(v)};
        } else {
            *why = t == FT_NUM ? "field must be a number" : t == FT_BOOL ? "field must be true or false"
                                                                          : "field must be a string of <= 64 bytes";
            *field = k;
            goto bad;
        }
        f->name = intern(r, k, klen);
        if (!f->name) {
            *why = "profile string pool full";
            goto bad;
        }
        f->nlen = (uint32_t)klen;
        p->n++;
    }
    json_decref(root);
    return p;
bad:
    /* field points into root: copy the schema name out before freeing (it is a known field, so interned) */
    if (*field) {
        bool known;
        featreg_profile_type(*field, strlen(*field), &known);
        const char *s = known ? intern(r, *field, strlen(*field)) : NULL;
        *field = s ? s : "";
    }
    free(p);
    json_decref(root);
    return NULL;
}

static bool list_key_ok(const char *key)
{
    const char *dot = strchr(key, '.');
    return dot && dot[1] && list_name_ok(key, (size_t)(dot - key));
}

static void apply(replica *r, table *t, bool shared, kvEntry *e)
{
    const char *key = kvEntry_Key(e);
    size_t n = strlen(key);
    uint64_t rev = kvEntry_Revision(e);
    kvOperation op = kvEntry_Operation(e);
    atomic_fetch_add(&r->updates, 1);
    if (rev > atomic_load(&r->last_rev))
        atomic_store(&r->last_rev, rev);
    if (op == kvOp_Delete || op == kvOp_Purge) {
        table_del(r, t, shared, key, n);
        return;
    }
    if (r->kind == REPLICA_LISTS) {
        if (!list_key_ok(key)) {
            refuse(r, rev, "a list key is <list>.<value> with a list name of [A-Za-z0-9_-]", NULL);
            return;
        }
        if (!table_put(r, t, shared, key, n, NULL))
            refuse(r, rev, "out of memory", NULL);
        return;
    }
    const char *why = NULL, *field = NULL;
    profile *p = profile_parse(r, (const char *)kvEntry_Value(e), (size_t)kvEntry_ValueLen(e), &why, &field);
    if (!p) {
        table_del(r, t, shared, key, n); /* the latest value is bad: keep the key out, not an older value */
        refuse(r, rev, why, field);
        return;
    }
    if (!table_put(r, t, shared, key, n, p))
        refuse(r, rev, "out of memory", NULL);
}

/* --- the watcher thread ---------------------------------------------------------------------------------- */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Whether the watcher has applied what the bucket's stream held at the previous check. A target message that
 * no longer exists (purged deletes, limits) does not count as lag. */
static bool lag_check(replica *r, uint64_t *target)
{
    uint64_t applied = atomic_load(&r->last_rev);
    bool ok = true;
    if (*target > applied) {
        natsMsg *m = NULL;
        natsStatus s = js_GetMsg(&m, r->js, r->stream, *target, NULL, NULL);
        natsMsg_Destroy(m);
        ok = s == NATS_NOT_FOUND;
    }
    jsStreamInfo *si = NULL;
    if (js_GetStreamInfo(&si, r->js, r->stream, NULL, NULL) != NATS_OK)
        return false;
    *target = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    return ok;
}

static void *watch_main(void *arg)
{
    replica *r = arg;
    kvWatcher *w = NULL;
    table loading = {0};
    bool load_pending = false, watcher_ok = false, lag_ok = true, warned = false;
    uint64_t lag_target = 0;
    int lag_strikes = 0;
    int64_t next_status = 0, next_lag = 0;
    while (!atomic_load(&r->stop)) {
        if (!w) {
            natsStatus s = kvStore_WatchAll(&w, r->kv, NULL);
            if (s != NATS_OK) {
                w = NULL;
                atomic_store(&r->healthy, false);
                if (s == NATS_CONNECTION_CLOSED)
                    break; /* see below */
                if (!warned) /* once per outage, not once a second */
                    log_warn("replica: watch failed, retrying every second",
                             "\"bucket\":\"%s\",\"error\":\"%s\"", log_esc(r->bucket),
                             log_esc(natsStatus_GetText(s)));
                warned = true;
                for (int i = 0; i < 1000 / WATCH_TICK_MS && !atomic_load(&r->stop); i++)
                    sleep_ms(WATCH_TICK_MS); /* a second, but a stop ends it within a tick */
                continue;
            }
            table_free(&loading, r->kind);
            load_pending = true;
            watcher_ok = true;
            lag_target = 0;
            lag_strikes = 0;
            lag_ok = true;
        }
        kvEntry *e = NULL;
        natsStatus s = kvWatcher_Next(&e, w, WATCH_TICK_MS);
        if (s == NATS_OK && warned) {
            log_info("replica: watching again", "\"bucket\":\"%s\"", log_esc(r->bucket));
            warned = false;
        }
        if (s == NATS_OK && e) {
            apply(r, load_pending ? &loading : &r->cur, !load_pending, e);
            kvEntry_Destroy(e);
        } else if (s == NATS_OK) {
            /* initial-done marker: publish the loaded table */
            if (load_pending) {
                table old;
                pthread_rwlock_wrlock(&r->lock);
                old = r->cur;
                r->cur = loading;
                pthread_rwlock_unlock(&r->lock);
                table_free(&old, r->kind);
                memset(&loading, 0, sizeof loading);
                load_pending = false;
                if (!atomic_load(&r->ready))
                    log_info("replica loaded", "\"bucket\":\"%s\",\"keys\":%zu", log_esc(r->bucket), r->cur.live);
                atomic_store(&r->ready, true);
            }
        } else if (s != NATS_TIMEOUT) {
            /* a closed connection is the end, not an outage: the engine reconnects forever, so only a stop closes
             * it (engine_stop, or the closer thread when a start is abandoned or a stop runs late) */
            if (atomic_load(&r->stop) || s == NATS_CONNECTION_CLOSED) {
                atomic_store(&r->healthy, false);
                break;
            }
            if (!warned) /* once until the watch makes progress again */
                log_warn("replica: watcher error, reloading", "\"bucket\":\"%s\",\"error\":\"%s\"",
                         log_esc(r->bucket), log_esc(natsStatus_GetText(s)));
            warned = true;
            watcher_ok = false;
        }
        int64_t now = mono_ns();
        if (now >= next_status || !watcher_ok) {
            next_status = now + (int64_t)WATCH_TICK_MS * 1000000;
            bool connected = natsConnection_Status(r->nc) == NATS_CONN_STATUS_CONNECTED;
            if (!connected || load_pending) {
                lag_strikes = 0;
            } else if (now >= next_lag) {
                next_lag = now + (int64_t)LAG_CHECK_MS * 1000000;
                lag_ok = lag_check(r, &lag_target);
                lag_strikes = lag_ok ? 0 : lag_strikes + 1;
                /* behind in two checks in a row with the connection up: the ordered consumer is stuck */
                if (lag_strikes >= 2) {
                    log_warn("replica: watcher behind the bucket, reloading", "\"bucket\":\"%s\"",
                             log_esc(r->bucket));
                    watcher_ok = false;
                }
            }
            atomic_store(&r->healthy, connected && watcher_ok && lag_ok);
        }
        if (!watcher_ok) {
            atomic_store(&r->healthy, false);
            kvWatcher_Destroy(w);
            w = NULL;
            atomic_fetch_add(&r->reloads, 1);
            sleep_ms(WATCH_TICK_MS);
        }
    }
    kvWatcher_Destroy(w);
    table_free(&loading, r->kind);
    return NULL;
}

/* --- lifecycle ------------------------------------------------------------------------------------------- */

vstatus replica_bucket_open(jsCtx *js, const char *bucket, int storage_replicas, kvStore **kv, verror *e)
{
    *kv = NULL;
    natsStatus s = js_KeyValue(kv, js, bucket);
    if (s == NATS_OK)
        return V_OK;
    if (s != NATS_NOT_FOUND)
        return broker_err(e, s, 0, bucket);
    kvConfig kc;
    kvConfig_Init(&kc);
    kc.Bucket = bucket;
    kc.History = 1;
    kc.Replicas = storage_replicas > 0 ? storage_replicas : 1;
    s = js_CreateKeyValue(kv, js, &kc);
    if (s != NATS_OK) /* another instance may have created it meanwhile */
        s = js_KeyValue(kv, js, bucket);
    if (s != NATS_OK) {
        *kv = NULL;
        return broker_err(e, s, 0, bucket);
    }
    return V_OK;
}

vstatus replica_start(replica **out, natsConnection *nc, const char *bucket, replica_kind kind,
                      int storage_replicas, verror *e)
{
    *out = NULL;
    replica *r = calloc(1, sizeof *r);
    if (!r)
        return verror_set(e, V_ENOMEM, "replica %s: out of memory", bucket);
    r->kind = kind;
    r->nc = nc;
    if (!str_copy(r->bucket, sizeof r->bucket, bucket)) {
        free(r);
        return verror_set(e, V_EINVAL, "bucket name too long: %s", bucket);
    }
    snprintf(r->stream, sizeof r->stream, "KV_%s", bucket);
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    /* writer preference: a steady stream of look-ups must not starve the watcher */
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(&r->lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    if (rc != 0) {
        free(r);
        return verror_set(e, V_ENOMEM, "replica %s: rwlock", bucket);
    }
    natsStatus s = natsConnection_JetStream(&r->js, nc, NULL);
    vstatus v = s == NATS_OK ? V_OK : broker_err(e, s, 0, "JetStream context");
    if (v == V_OK)
        v = replica_bucket_open(r->js, bucket, storage_replicas, &r->kv, e);
    if (v == V_OK && pthread_create(&r->thread, NULL, watch_main, r) != 0)
        v = verror_set(e, V_ENOMEM, "replica %s: cannot start the watcher thread", bucket);
    if (v != V_OK) {
        kvStore_Destroy(r->kv);
        jsCtx_Destroy(r->js);
        pthread_rwlock_destroy(&r->lock);
        free(r);
        return v;
    }
    r->thread_started = true;
    *out = r;
    return V_OK;
}

void replica_stop(replica *r)
{
    if (!r)
        return;
    atomic_store(&r->stop, true);
    if (r->thread_started)
        pthread_join(r->thread, NULL);
    table_free(&r->cur, r->kind);
    table_free(&r->intern, REPLICA_LISTS); /* interned strings have no values */
    kvStore_Destroy(r->kv);
    jsCtx_Destroy(r->js);
    pthread_rwlock_destroy(&r->lock);
    free(r);
}

bool replica_ready(const replica *r) { return r && atomic_load(&r->ready); }

bool replica_fresh(const replica *r) { return r && atomic_load(&r->ready) && atomic_load(&r->healthy); }

bool replica_wait_ready(const replica *r, int timeout_ms)
{
    int64_t end = mono_ns() + (int64_t)timeout_ms * 1000000;
    while (!replica_ready(r) && mono_ns() < end)
        sleep_ms(5);
    return replica_ready(r);
}

void replica_stats_get(const replica *r, replica_stats *st)
{
    memset(st, 0, sizeof *st);
    if (!r)
        return;
    st->ready = replica_ready(r);
    st->fresh = replica_fresh(r);
    replica *m = (replica *)r;
    pthread_rwlock_rdlock(&m->lock);
    st->keys = r->cur.live;
    pthread_rwlock_unlock(&m->lock);
    st->updates = atomic_load(&r->updates);
    st->bad_values = atomic_load(&r->bad_values);
    st->reloads = atomic_load(&r->reloads);
    st->last_revision = atomic_load(&r->last_rev);
}

/* --- look-ups -------------------------------------------------------------------------------------------- */

/* The caller holds the read lock. */
static bool list_has_locked(const replica *r, const char *list, size_t list_len, const char *value, size_t len)
{
    char key[REPLICA_KEY_MAX + 1];
    size_t n = replica_list_key(key, sizeof key, list, list_len, value, len);
    return n && table_find(&r->cur, key, n, key_hash(key, n)) != NULL;
}

static const profile *profile_locked(const replica *r, const char *account, size_t alen)
{
    char key[REPLICA_VALUE_MAX + 1];
    size_t n = replica_key_token(key, sizeof key, account, alen);
    const slot *s = n ? table_find(&r->cur, key, n, key_hash(key, n)) : NULL;
    return s ? s->val : NULL;
}

static void profile_get(const profile *p, const char *field, size_t flen, fval *out)
{
    for (uint32_t i = 0; p && i < p->n; i++)
        if (p->f[i].nlen == flen && memcmp(p->f[i].name, field, flen) == 0) {
            *out = p->f[i].v;
            return;
        }
}

bool replica_list_has(const replica *r, const char *list, size_t list_len, const char *value, size_t len)
{
    if (!r || r->kind != REPLICA_LISTS)
        return false;
    replica *m = (replica *)r;
    pthread_rwlock_rdlock(&m->lock);
    bool has = list_has_locked(r, list, list_len, value, len);
    pthread_rwlock_unlock(&m->lock);
    return has;
}

bool replica_profile_field(const replica *r, const char *account, size_t alen, const char *field, size_t flen,
                           fval *out)
{
    bool known;
    out->type = (uint8_t)featreg_profile_type(field, flen, &known);
    out->present = false;
    if (!r || r->kind != REPLICA_PROFILES)
        return false;
    replica *m = (replica *)r;
    pthread_rwlock_rdlock(&m->lock);
    const profile *p = profile_locked(r, account, alen);
    profile_get(p, field, flen, out);
    pthread_rwlock_unlock(&m->lock);
    return p != NULL;
}

bool replica_fill(const replica *lists, const replica *profiles, const featreg *reg, fval *vals)
{
    bool uses_lists = false, uses_profiles = false;
    for (int i = 0; i < reg->n; i++) {
        feat_kind k = reg->defs[i].kind;
        uses_lists |= k == FK_LIST;
        uses_profiles |= k == FK_PROFILE;
    }
    if (uses_lists) {
        bool ready = replica_ready(lists) && lists->kind == REPLICA_LISTS;
        if (ready)
            pthread_rwlock_rdlock(&((replica *)lists)->lock);
        for (int i = 0; i < reg->n; i++) {
            const feat_def *d = &reg->defs[i];
            if (d->kind != FK_LIST)
                continue;
            vals[i].type = FT_BOOL;
            vals[i].present = false;
            const fval *kv = d->key_feat >= 0 && d->key_feat < reg->n ? &vals[d->key_feat] : NULL;
            if (!ready || !kv || !kv->present || kv->type != FT_STR || kv->str.len == 0)
                continue;
            vals[i].present = true;
            vals[i].b = list_has_locked(lists, d->arg, strlen(d->arg), kv->str.ptr, kv->str.len);
        }
        if (ready)
            pthread_rwlock_unlock(&((replica *)lists)->lock);
    }
    if (uses_profiles) {
        bool ready = replica_ready(profiles) && profiles->kind == REPLICA_PROFILES;
        const fval *acct = &vals[FEAT_ACCOUNT_ID];
        bool have_acct = acct->present && acct->type == FT_STR && acct->str.len > 0;
        if (ready)
            pthread_rwlock_rdlock(&((replica *)profiles)->lock);
        const profile *p = ready && have_acct ? profile_locked(profiles, acct->str.ptr, acct->str.len) : NULL;
        for (int i = 0; i < reg->n; i++) {
            const feat_def *d = &reg->defs[i];
            if (d->kind != FK_PROFILE)
                continue;
            vals[i].type = (uint8_t)d->type;
            vals[i].present = false;
            profile_get(p, d->arg, strlen(d->arg), &vals[i]);
        }
        if (ready)
            pthread_rwlock_unlock(&((replica *)profiles)->lock);
    }
    return (!uses_lists || replica_fresh(lists)) && (!uses_profiles || replica_fresh(profiles));
}

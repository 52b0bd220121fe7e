/* lease.c - partition leases on a JetStream KV bucket (see lease.h for the protocol, docs/architecture.md for
 * why it is safe). */
#include "lease.h"

#include "broker.h"
#include "replica.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define NS_PER_MS 1000000LL
#define LEASE_TTL_MIN_MS 600

struct lease_table {
    kvStore *kv;
    int64_t ttl_ms;
    int64_t margin_ms; /* the holder stops this much before its lease could be taken over */
    char instance[LEASE_OWNER_MAX];
};

void lease_bucket(const config *c, char *out, size_t cap)
{
    config_name(c, NAME_BUCKET, "verdict_leases", out, cap);
}

vstatus lease_open(lease_table **out, jsCtx *js, const char *bucket, const char *engine_id, int64_t ttl_ms,
                   int replicas, verror *e)
{
    *out = NULL;
    if (ttl_ms < LEASE_TTL_MIN_MS)
        return verror_set(e, V_EINVAL, "lease TTL %lld ms is below the minimum %d ms", (long long)ttl_ms,
                          LEASE_TTL_MIN_MS);
    if (!engine_id || !engine_id[0] || strlen(engine_id) > LEASE_OWNER_MAX - 10)
        return verror_set(e, V_EINVAL, "engine id must be 1..%d characters", LEASE_OWNER_MAX - 10);
    for (const char *c = engine_id; *c; c++)
        if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20)
            return verror_set(e, V_EINVAL, "engine id must not contain quotes, backslashes or control characters");
    lease_table *t = calloc(1, sizeof *t);
    if (!t)
        return verror_set(e, V_ENOMEM, "lease table: out of memory");
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
        r = (uint32_t)mono_ns() ^ (uint32_t)now_us();
    snprintf(t->instance, sizeof t->instance, "%s/%08x", engine_id, r);
    t->ttl_ms = ttl_ms;
    /* A tenth of the TTL covers the work in hand when the holder stops (one batch, bounded by the budget) and
     * clock-rate differences (parts per million); at least 100 ms. */
    t->margin_ms = ttl_ms / 10 > 100 ? ttl_ms / 10 : 100;
    vstatus v = replica_bucket_open(js, bucket, replicas, &t->kv, e);
    if (v != V_OK) {
        free(t);
        return v;
    }
    *out = t;
    return V_OK;
}

void lease_close(lease_table *t)
{
    if (!t)
        return;
    kvStore_Destroy(t->kv);
    free(t);
}

const char *lease_instance(const lease_table *t)
{
    return t->instance;
}

bool lease_init(lease *l, const char *name)
{
    memset(l, 0, sizeof *l);
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n >= sizeof l->name)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    memcpy(l->name, name, n + 1);
    return true;
}

bool lease_valid(const lease *l, int64_t now_ns)
{
    return l->held && now_ns < l->valid_until_ns;
}

/* Parses a lease value; false when it is not one (then the entry is treated as foreign with the default TTL,
 * so a garbled value can still be taken over, but only after a full TTL). */
static bool lease_parse(const void *data, int len, char *owner, size_t cap, uint64_t *epoch, int64_t *ttl_ms)
{
    owner[0] = 0;
    *epoch = 0;
    *ttl_ms = 0;
    if (!data || len <= 0)
        return false;
    json_error_t je;
    json_t *j = json_loadb(data, (size_t)len, 0, &je);
    if (!j)
        return false;
    json_t *o = json_object_get(j, "owner"), *ep = json_object_get(j, "epoch"), *tt = json_object_get(j, "ttl_ms");
    bool ok = json_is_string(o) && json_is_integer(ep) && json_is_integer(tt) && json_integer_value(ep) >= 0 &&
              json_integer_value(tt) > 0 && str_copy(owner, cap, json_string_value(o));
    if (ok) {
        *epoch = (uint64_t)json_integer_value(ep);
        *ttl_ms = (int64_t)json_integer_value(tt);
    }
    json_decref(j);
    return ok;
}

/* Writes {owner, epoch} by CAS on l->revision (0: the entry must not exist). On success l says what was written;
 * sent_ns is when the write left, the start of its validity. */
static natsStatus lease_write(lease_table *t, lease *l, const char *owner, uint64_t epoch, int64_t sent_ns)
{
    char val[LEASE_OWNER_MAX + 96];
    int n = snprintf(val, sizeof val, "{\"owner\":\"%s\",\"epoch\":%llu,\"ttl_ms\":%lld}", owner,
                     (unsigned long long)epoch, (long long)t->ttl_ms);
    uint64_t rev = 0;
    natsStatus s = l->revision ? kvStore_Update(&rev, t->kv, l->name, val, n, l->revision)
                               : kvStore_Create(&rev, t->kv, l->name, val, n);
    if (s != NATS_OK)
        return s;
    l->revision = rev;
    l->epoch = epoch;
    str_copy(l->owner, sizeof l->owner, owner);
    l->held = owner[0] != 0;
    l->valid_until_ns = l->held ? sent_ns + (t->ttl_ms - t->margin_ms) * NS_PER_MS : 0;
    l->observed_ns = sent_ns;
    return NATS_OK;
}

vstatus lease_step(lease_table *t, lease *l, verror *e)
{
    int64_t now = mono_ns();

    /* A holder renews the revision it wrote. When that fails (someone wrote after us, or the answer was lost),
     * it reads before it writes again; meanwhile its validity runs on from its last success, never longer. */
    if (l->held && lease_write(t, l, t->instance, l->epoch, now) == NATS_OK)
        return V_OK;

    kvEntry *ent = NULL;
    natsStatus s = kvStore_Get(&ent, t->kv, l->name);
    bool was_held = l->held;
    if (s == NATS_NOT_FOUND) { /* absent or deleted: taken at once; Create fails if someone else just did */
        l->held = false;
        l->revision = 0;
        l->owner[0] = 0;
        if (!l->no_take && !was_held) /* a holder whose entry vanished has lost it: below */
            (void)lease_write(t, l, t->instance, l->epoch + 1, now);
        return V_OK;
    }
    if (s != NATS_OK)
        return broker_err(e, s, 0, "lease read");

    uint64_t rev = kvEntry_Revision(ent);
    char owner[LEASE_OWNER_MAX];
    uint64_t epoch = 0;
    int64_t ttl = 0;
    if (!lease_parse(kvEntry_Value(ent), kvEntry_ValueLen(ent), owner, sizeof owner, &epoch, &ttl)) {
        str_copy(owner, sizeof owner, "?"); /* unreadable: a foreign owner with our own TTL */
        epoch = l->epoch;
        ttl = t->ttl_ms;
    }
    kvEntry_Destroy(ent);
    if (rev != l->revision) { /* a revision we had not seen: the contender's clock starts now */
        l->revision = rev;
        l->observed_ns = now;
        l->epoch = epoch;
        l->foreign_ttl_ms = ttl;
        str_copy(l->owner, sizeof l->owner, owner);
    }

    if (strcmp(owner, t->instance) == 0) { /* ours (a renewal whose answer was lost): the CAS proves nobody wrote since */
        (void)lease_write(t, l, t->instance, epoch, now);
        return V_OK;
    }
    l->held = false; /* someone else's, or released */
    /* A holder that finds another's write has lost the lease, even when that other has released it again since
     * (taken during a cut, handed back at the heal): it reports the loss, so that the caller stops what it held,
     * and takes the lease only in a later step, as a new owner. Taking it here would look like a renewal. */
    if (was_held)
        return V_OK;
    bool released = owner[0] == 0;
    bool expired = now - l->observed_ns >= (ttl > t->ttl_ms ? ttl : t->ttl_ms) * NS_PER_MS;
    if ((released || expired) && !l->no_take)
        (void)lease_write(t, l, t->instance, epoch + 1, now);
    return V_OK;
}

vstatus lease_release(lease_table *t, lease *l, verror *e)
{
    if (!l->held)
        return V_OK;
    natsStatus s = lease_write(t, l, "", l->epoch, mono_ns());
    l->held = false;
    l->valid_until_ns = 0;
    if (s != NATS_OK)
        return broker_err(e, s, 0, "lease release");
    return V_OK;
}

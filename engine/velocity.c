/* velocity.c - per-entity velocity windows, least-recently-seen eviction, distinct sketch, seen-set
 * (see velocity.h; design and numbers in docs/state.md).
 *
 * Layout: one table (vclass) per key field. An entity is a fixed-size record in a preallocated array: a
 * 24-byte header (64-bit key hash, hash-chain link, LRU links, newest event time) followed by only the columns
 * that the registry's defs on that key field need: per bucket size a ring of uint16 counts and/or uint32 sums,
 * and per distinct field a small last-seen set. Times are uint32 seconds since the epoch, so a bucket index is
 * t / step and a ring slot is that index modulo the ring length; the newest event time of the entity says
 * which absolute buckets the slots hold, so rings need no per-slot timestamps. */
#include "velocity.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NIL UINT32_MAX
#define MAX_CLASSES VELOCITY_MAX_KEYS /* key fields */
#define MAX_RINGS 12   /* bucket sizes per key field (all of them) */
#define MAX_COLS 24    /* count/sum columns per key field */
#define MAX_DSETS 6    /* distinct value fields per key field */
#define MAX_BUCKETS 12 /* a window spans at most this many buckets of its size */
#define DSTEP 10       /* seconds: the time unit of distinct last-seen stamps */
#define K VELOCITY_DISTINCT_EXACT

/* Bucket sizes in seconds; a window uses the smallest one that spans it in at most MAX_BUCKETS buckets. */
static const uint32_t steps[MAX_RINGS] = {5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200};

typedef struct vrec {
    uint64_t key;   /* mixed hash of the key string */
    uint32_t chain; /* next record in the same index bucket */
    uint32_t prev, next; /* LRU list, most recently seen at the head */
    uint32_t max_ts;     /* newest event time (s) added to this entity */
} vrec;

/* A distinct set: exact last-seen stamps of up to K values; in sample mode (thr != 0) only values whose hash is
 * below thr are kept, and every value seen in the held window with hash < thr is guaranteed to be there. */
typedef struct vdset_hdr {
    uint32_t thr;   /* 0 = exact mode */
    uint16_t rej;   /* stamp of the newest rejected or dropped value (sample mode) */
    uint8_t n;      /* live entries, packed at the front */
    uint8_t pad;
    uint32_t fp[K]; /* value hashes */
    uint16_t st[K]; /* last-seen stamps (t / DSTEP, modulo 2^16) */
} vdset_hdr;

/* Columns, distinct sets and classes name their value or key field by the index of one plan entry that uses
 * it (a "rep"): the field's id is read from the plan of the caller's registry, never stored in the state. */
typedef struct vcol {
    uint8_t ring;
    uint8_t is_sum;
    int16_t value_rep; /* sums: plan entry whose value field this column adds up; -1 for counts */
    uint32_t off;      /* byte offset in the record */
} vcol;

typedef struct vdset {
    int value_rep; /* plan entry whose value field this set holds */
    uint32_t nst;  /* longest window on this set, in DSTEP units */
    uint32_t off;
} vdset;

typedef struct vring {
    uint32_t step; /* seconds */
    uint32_t n;    /* buckets held */
} vring;

typedef struct vclass {
    int key_rep;  /* plan entry whose key field this table is keyed by */
    int key_feat; /* that field's id in the plan the state was built from (velocity_stats only) */
    vring rings[MAX_RINGS];
    int nrings;
    vcol cols[MAX_COLS];
    int ncols;
    vdset dsets[MAX_DSETS];
    int ndsets;
    uint32_t rec_size, cap, used;
    unsigned char *recs;
    uint32_t *heads, mask;
    bigmem recs_mem, heads_mem;
    uint32_t lru_head, lru_tail;
    uint64_t evictions;
} vclass;

/* How one velocity feature (plan entry i, canonical order) is answered, and what it is, by name. */
typedef struct vent {
    uint8_t cls;
    uint8_t is_dset;
    uint8_t idx; /* column or distinct set */
    uint32_t nw; /* window in buckets (of the ring) or in DSTEP units */
    vel_agg agg;
    int64_t window_ms;
    char name[FEAT_NAME_MAX], key[FEAT_NAME_MAX], value[FEAT_NAME_MAX]; /* value "" for count */
} vent;

struct velocity {
    pthread_mutex_t mu;
    vclass cls[MAX_CLASSES];
    int ncls;
    vent *ent; /* the velocity features kept, in the canonical order of velocity_plan */
    int nent;
    uint64_t sig; /* velocity_plan.sig of the plans this state serves */
    /* seen-set: open addressing on 64-bit hashes (0 = empty) plus a FIFO of insertion order */
    uint64_t *seen_tab, *seen_fifo;
    bigmem seen_tab_mem, seen_fifo_mem;
    uint32_t seen_mask, seen_cap, seen_n, seen_pos;
    uint64_t duplicates, late_drops;
};

/* --- helpers ------------------------------------------------------------------------------------------ */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static uint64_t str_key(const fval *f) { return mix64(hash64(f->str.ptr, f->str.len)); }

static bool has_str(const fval *f) { return f->present && f->type == FT_STR && f->str.len > 0; }

static uint32_t secs_of(int64_t ms)
{
    if (ms <= 0)
        return 0;
    int64_t s = ms / 1000;
    return s > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

static uint32_t pow2_at_least(uint64_t n)
{
    uint64_t p = 1;
    while (p < n)
        p <<= 1;
    return (uint32_t)p;
}

static vrec *rec_at(const vclass *c, uint32_t i) { return (vrec *)(c->recs + (size_t)i * c->rec_size); }

static inline uint16_t *count_col(vrec *r, const vcol *col) { return (uint16_t *)((unsigned char *)r + col->off); }
static inline uint32_t *sum_col(vrec *r, const vcol *col) { return (uint32_t *)((unsigned char *)r + col->off); }
static inline vdset_hdr *dset_of(vrec *r, const vdset *d) { return (vdset_hdr *)((unsigned char *)r + d->off); }

#define HUGE_PAGE BIGMEM_HUGE_PAGE

/* Writes the first n bytes of a fresh (zero) mapping, so the kernel backs them now rather than on the first
 * transaction: a huge page is zeroed on its first touch (2 MB, about a millisecond), and the first transactions
 * after a start touched several at once on the sequencing thread, which every transaction waits behind (a 16 ms
 * first transaction and a 20-100 ms stall at start under load: docs/benchmarks.md, "Tail latency"). */
static void prefault(void *p, size_t n)
{
    memset(p, 0, n);
}

/* --- construction --------------------------------------------------------------------------------------- */

static int ring_for(vclass *c, int64_t window_ms, uint32_t *nw, verror *e)
{
    int s = 0;
    while (s < MAX_RINGS - 1 && (window_ms + steps[s] * 1000 - 1) / (steps[s] * 1000) > MAX_BUCKETS)
        s++;
    *nw = (uint32_t)((window_ms + steps[s] * 1000 - 1) / (steps[s] * 1000));
    if (*nw > MAX_BUCKETS)
        return verror_set(e, V_EINVAL, "velocity window of %lld ms is longer than 24h", (long long)window_ms);
    for (int i = 0; i < c->nrings; i++)
        if (c->rings[i].step == steps[s]) {
            if (c->rings[i].n < *nw)
                c->rings[i].n = *nw;
            return i;
        }
    c->rings[c->nrings] = (vring){.step = steps[s], .n = *nw};
    return c->nrings++;
}

/* Adds plan entry i (already copied into v->ent[i]) to the layout. Key fields, columns and distinct sets are
 * matched by field name, so the layout depends only on the canonical definitions, never on feature ids. */
static vstatus plan_entry(velocity *v, int i, int key_feat, verror *e)
{
    vent *p = &v->ent[i];
    int ci = 0;
    while (ci < v->ncls && strcmp(v->ent[v->cls[ci].key_rep].key, p->key) != 0)
        ci++;
    if (ci == MAX_CLASSES)
        return verror_set(e, V_ENOMEM, "velocity features use more than %d key fields", MAX_CLASSES);
    vclass *c = &v->cls[ci];
    if (ci == v->ncls) {
        v->ncls++;
        c->key_rep = i;
        c->key_feat = key_feat;
    }
    p->cls = (uint8_t)ci;
    if (p->agg == VEL_DISTINCT) {
        uint32_t nst = (uint32_t)((p->window_ms + DSTEP * 1000 - 1) / (DSTEP * 1000));
        int di = 0;
        while (di < c->ndsets && strcmp(v->ent[c->dsets[di].value_rep].value, p->value) != 0)
            di++;
        if (di == MAX_DSETS)
            return verror_set(e, V_ENOMEM, "more than %d distinct() fields on one key field", MAX_DSETS);
        if (di == c->ndsets)
            c->dsets[c->ndsets++] = (vdset){.value_rep = i};
        if (c->dsets[di].nst < nst)
            c->dsets[di].nst = nst;
        p->is_dset = 1;
        p->idx = (uint8_t)di;
        p->nw = nst;
        return V_OK;
    }
    if (p->agg != VEL_COUNT && p->agg != VEL_SUM)
        return verror_set(e, V_EINVAL, "unknown velocity aggregate in %s", p->name);
    int r = ring_for(c, p->window_ms, &p->nw, e);
    if (r < 0)
        return (vstatus)r;
    uint8_t is_sum = p->agg == VEL_SUM;
    int k = 0;
    while (k < c->ncols && !(c->cols[k].ring == r && c->cols[k].is_sum == is_sum &&
                             (!is_sum || strcmp(v->ent[c->cols[k].value_rep].value, p->value) == 0)))
        k++;
    if (k == MAX_COLS)
        return verror_set(e, V_ENOMEM, "more than %d window columns on one key field", MAX_COLS);
    if (k == c->ncols)
        c->cols[c->ncols++] = (vcol){.ring = (uint8_t)r, .is_sum = is_sum, .value_rep = is_sum ? (int16_t)i : -1};
    p->idx = (uint8_t)k;
    return V_OK;
}

/* --- plans ---------------------------------------------------------------------------------------------- */

static const char *def_name(const featreg *reg, int id) { return id >= 0 && id < reg->n ? reg->defs[id].name : ""; }

void velocity_plan_init(velocity_plan *pl, const featreg *reg)
{
    memset(pl, 0, sizeof *pl);
    pl->reg = reg;
    for (int id = 0; id < reg->n; id++) {
        const feat_def *d = &reg->defs[id];
        if (d->kind != FK_VELOCITY)
            continue;
        /* insertion into canonical (name) order: a handful of features, once per load */
        int i = pl->n++;
        while (i > 0 && strcmp(reg->defs[pl->f[i - 1].id].name, d->name) > 0) {
            pl->f[i] = pl->f[i - 1];
            i--;
        }
        pl->f[i].id = (int16_t)id;
        pl->f[i].key = (int16_t)d->key_feat;
        pl->f[i].value = (int16_t)(d->agg == VEL_COUNT ? -1 : d->value_feat);
    }
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)pl->n;
    for (int i = 0; i < pl->n; i++) {
        const feat_def *d = &reg->defs[pl->f[i].id];
        char buf[3 * FEAT_NAME_MAX + 48];
        int n = snprintf(buf, sizeof buf, "%s|%d|%lld|%s|%s", d->name, (int)d->agg, (long long)d->window_ms,
                         def_name(reg, pl->f[i].key), def_name(reg, pl->f[i].value));
        h = mix64(h ^ hash64(buf, n > 0 && (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1));
    }
    pl->sig = h;
}

/* Lays out a record: header, then 4-byte columns (sums, distinct sets), then 2-byte count columns. */
static void layout(vclass *c)
{
    uint32_t off = sizeof(vrec);
    for (int k = 0; k < c->ncols; k++)
        if (c->cols[k].is_sum) {
            c->cols[k].off = off;
            off += 4 * c->rings[c->cols[k].ring].n;
        }
    for (int k = 0; k < c->ndsets; k++) {
        c->dsets[k].off = off;
        off += sizeof(vdset_hdr);
    }
    for (int k = 0; k < c->ncols; k++)
        if (!c->cols[k].is_sum) {
            c->cols[k].off = off;
            off += 2 * c->rings[c->cols[k].ring].n;
        }
    c->rec_size = (off + 7) & ~7u;
}

vstatus velocity_new(const velocity_plan *pl, const velocity_cfg *cfg, velocity **out, verror *e)
{
    *out = NULL;
    size_t max_keys = cfg && cfg->max_keys ? cfg->max_keys : 1000000;
    size_t seen_cap = cfg && cfg->seen_cap ? cfg->seen_cap : (size_t)1 << 20;
    if (max_keys >= (size_t)1 << 30 || seen_cap >= (size_t)1 << 30)
        return verror_set(e, V_EINVAL, "velocity max_keys and seen_cap must be below 2^30");
    velocity *v = calloc(1, sizeof *v);
    if (!v)
        return verror_set(e, V_ENOMEM, "out of memory");
    /* adaptive: critical sections are a few hundred ns, so spinning a little beats sleeping in the kernel */
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&v->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    vstatus s = V_OK;
    v->sig = pl->sig;
    v->nent = pl->n;
    v->ent = calloc(pl->n > 0 ? (size_t)pl->n : 1, sizeof *v->ent);
    if (!v->ent)
        s = verror_set(e, V_ENOMEM, "out of memory");
    for (int i = 0; i < pl->n && s == V_OK; i++) {
        const feat_def *d = &pl->reg->defs[pl->f[i].id];
        vent *p = &v->ent[i];
        p->agg = d->agg;
        p->window_ms = d->window_ms;
        str_copy(p->name, sizeof p->name, d->name);
        str_copy(p->key, sizeof p->key, def_name(pl->reg, pl->f[i].key));
        str_copy(p->value, sizeof p->value, def_name(pl->reg, pl->f[i].value));
        s = plan_entry(v, i, pl->f[i].key, e);
    }
    if (s != V_OK) {
        velocity_free(v);
        return s;
    }
    for (int i = 0; i < v->ncls; i++) {
        vclass *c = &v->cls[i];
        layout(c);
        c->cap = (uint32_t)max_keys;
        c->mask = pow2_at_least(max_keys) - 1;
        c->recs = bigmem_alloc(&c->recs_mem, max_keys * c->rec_size);
        c->heads = bigmem_alloc(&c->heads_mem, ((size_t)c->mask + 1) * sizeof *c->heads);
        if (!c->recs || !c->heads) {
            velocity_free(v);
            return verror_set(e, V_ENOMEM, "out of memory for %zu velocity keys", max_keys);
        }
        memset(c->heads, 0xff, ((size_t)c->mask + 1) * sizeof *c->heads);
        prefault(c->recs, max_keys * c->rec_size < HUGE_PAGE ? max_keys * c->rec_size : HUGE_PAGE);
        c->lru_head = c->lru_tail = NIL;
    }
    v->seen_cap = (uint32_t)seen_cap;
    v->seen_mask = pow2_at_least(seen_cap * 2) - 1;
    v->seen_tab = bigmem_alloc(&v->seen_tab_mem, ((size_t)v->seen_mask + 1) * sizeof *v->seen_tab);
    v->seen_fifo = bigmem_alloc(&v->seen_fifo_mem, seen_cap * sizeof *v->seen_fifo);
    if (!v->seen_tab || !v->seen_fifo) {
        velocity_free(v);
        return verror_set(e, V_ENOMEM, "out of memory for a seen-set of %zu ids", seen_cap);
    }
    /* the seen-set's table is probed at random from the first transaction: all of it (16 MB at the default);
     * its FIFO and the records fill from the start: their first huge page */
    prefault(v->seen_tab, ((size_t)v->seen_mask + 1) * sizeof *v->seen_tab);
    prefault(v->seen_fifo, seen_cap * sizeof *v->seen_fifo < HUGE_PAGE ? seen_cap * sizeof *v->seen_fifo : HUGE_PAGE);
    *out = v;
    return V_OK;
}

void velocity_free(velocity *v)
{
    if (!v)
        return;
    for (int i = 0; i < v->ncls; i++) {
        bigmem_free(&v->cls[i].recs_mem);
        bigmem_free(&v->cls[i].heads_mem);
    }
    bigmem_free(&v->seen_tab_mem);
    bigmem_free(&v->seen_fifo_mem);
    pthread_mutex_destroy(&v->mu);
    free(v->ent);
    free(v);
}

bool velocity_serves(const velocity *v, const velocity_plan *pl) { return v->sig == pl->sig; }

bool velocity_compatible(const velocity *v, const velocity_plan *pl)
{
    if (v->sig != pl->sig || v->nent != pl->n)
        return false;
    for (int i = 0; i < pl->n; i++) {
        const vent *p = &v->ent[i];
        const feat_def *d = &pl->reg->defs[pl->f[i].id];
        if (p->agg != d->agg || p->window_ms != d->window_ms || strcmp(p->name, d->name) != 0 ||
            strcmp(p->key, def_name(pl->reg, pl->f[i].key)) != 0 ||
            strcmp(p->value, def_name(pl->reg, pl->f[i].value)) != 0)
            return false;
    }
    return true;
}

/* --- entity table --------------------------------------------------------------------------------------- */

static void lru_unlink(vclass *c, vrec *r)
{
    if (r->prev != NIL)
        rec_at(c, r->prev)->next = r->next;
    else
        c->lru_head = r->next;
    if (r->next != NIL)
        rec_at(c, r->next)->prev = r->prev;
    else
        c->lru_tail = r->prev;
}

static void lru_push_head(vclass *c, vrec *r, uint32_t i)
{
    r->prev = NIL;
    r->next = c->lru_head;
    if (c->lru_head != NIL)
        rec_at(c, c->lru_head)->prev = i;
    else
        c->lru_tail = i;
    c->lru_head = i;
}

static void chain_unlink(vclass *c, vrec *r, uint32_t i)
{
    uint32_t *link = &c->heads[r->key & c->mask];
    while (*link != i)
        link = &rec_at(c, *link)->chain;
    *link = r->chain;
}

/* The record of key (r when lookup found it), created (evicting the least recently seen entity when full) and
 * moved to the LRU head. */
static vrec *touch(vclass *c, vrec *r, uint64_t key, uint32_t t)
{
    if (r) {
        uint32_t i = (uint32_t)(((unsigned char *)r - c->recs) / c->rec_size);
        if (c->lru_head != i) {
            lru_unlink(c, r);
            lru_push_head(c, r, i);
        }
        return r;
    }
    uint32_t i;
    if (c->used < c->cap) {
        i = c->used++;
        r = rec_at(c, i);
    } else {
        i = c->lru_tail;
        r = rec_at(c, i);
        lru_unlink(c, r);
        chain_unlink(c, r, i);
        c->evictions++;
    }
    memset(r, 0, c->rec_size);
    r->key = key;
    r->max_ts = t;
    r->chain = c->heads[key & c->mask];
    c->heads[key & c->mask] = i;
    lru_push_head(c, r, i);
    return r;
}

static void prefetch_rec(const vclass *c, uint32_t i)
{
    const unsigned char *p = c->recs + (size_t)i * c->rec_size;
    for (uint32_t off = 0; off < c->rec_size; off += 64)
        __builtin_prefetch(p + off);
}

/* The key of every key field in vals (have[i] false when the field is missing), their index slots starting to
 * load. */
static void hash_keys(const velocity *v, const velocity_plan *pl, const fval *vals, uint64_t *keys, bool *have)
{
    for (int i = 0; i < v->ncls; i++) {
        const vclass *c = &v->cls[i];
        const fval *k = &vals[pl->f[c->key_rep].key];
        have[i] = has_str(k);
        keys[i] = have[i] ? str_key(k) : 0;
        if (have[i])
            __builtin_prefetch(&c->heads[keys[i] & c->mask]);
    }
}

/* The records of keys[] (hashed by hash_keys, whose index slots are being loaded). */
static void lookup_keys(const velocity *v, const uint64_t *keys, vrec **recs, const bool *have)
{
    uint32_t first[MAX_CLASSES];
    for (int i = 0; i < v->ncls; i++) {
        const vclass *c = &v->cls[i];
        first[i] = have[i] ? c->heads[keys[i] & c->mask] : NIL;
        if (first[i] != NIL)
            prefetch_rec(c, first[i]);
    }
    for (int i = 0; i < v->ncls; i++) {
        const vclass *c = &v->cls[i];
        recs[i] = NULL;
        for (uint32_t j = first[i]; j != NIL;) {
            vrec *r = rec_at(c, j);
            if (r->key == keys[i]) {
                recs[i] = r;
                break;
            }
            j = r->chain;
        }
    }
}

/* Finds the record of every key field in vals (NULL when untracked; have[i] false when the field is missing).
 * The state is far larger than the CPU caches and each lookup is two dependent misses (index slot, record), so
 * the key fields are looked up side by side with prefetches: the misses overlap instead of queueing (and the
 * sequencer starts them transactions ahead: velocity_keys). */
static void lookup_all(const velocity *v, const velocity_plan *pl, const fval *vals, uint64_t *keys, vrec **recs,
                       bool *have)
{
    hash_keys(v, pl, vals, keys, have);
    lookup_keys(v, keys, recs, have);
}

/* --- windows -------------------------------------------------------------------------------------------- */

/* Moves every ring of r forward to time t (> r->max_ts), zeroing the slots of buckets it skips into. */
static void advance(const vclass *c, vrec *r, uint32_t t)
{
    for (int k = 0; k < c->ncols; k++) {
        const vcol *col = &c->cols[k];
        const vring *g = &c->rings[col->ring];
        uint32_t old_b = r->max_ts / g->step, new_b = t / g->step;
        uint32_t d = new_b - old_b;
        if (d == 0)
            continue;
        if (d > g->n)
            d = g->n;
        uint32_t slot = (old_b + 1) % g->n;
        for (uint32_t k2 = 0; k2 < d; k2++, slot = slot + 1 == g->n ? 0 : slot + 1) {
            if (col->is_sum)
                sum_col(r, col)[slot] = 0;
            else
                count_col(r, col)[slot] = 0;
        }
    }
}

static uint32_t sum_value(const fval *f)
{
    if (!f->present || f->type != FT_NUM || !(f->num > 0))
        return 0;
    return f->num >= (double)UINT32_MAX ? UINT32_MAX : (uint32_t)llround(f->num);
}

/* Window total of one column at query time now: buckets (now_b - nw, now_b] that the ring still holds. */
static uint64_t col_total(const vclass *c, vrec *r, const vcol *col, uint32_t nw, uint32_t now)
{
    const vring *g = &c->rings[col->ring];
    int64_t now_b = now / g->step, head = r->max_ts / g->step;
    int64_t lo = now_b - nw, held_lo = head - g->n;
    if (held_lo > lo)
        lo = held_lo;
    if (lo < -1)
        lo = -1;
    int64_t hi = now_b < head ? now_b : head;
    uint64_t tot = 0;
    if (hi <= lo)
        return 0;
    /* one division, then walk the ring: a modulo per bucket cost more than the whole lookup */
    uint32_t slot = (uint32_t)((lo + 1) % g->n), k = (uint32_t)(hi - lo);
    if (col->is_sum) {
        const uint32_t *a = sum_col(r, col);
        for (; k; k--, slot = slot + 1 == g->n ? 0 : slot + 1)
            tot += a[slot];
    } else {
        const uint16_t *a = count_col(r, col);
        for (; k; k--, slot = slot + 1 == g->n ? 0 : slot + 1)
            tot += a[slot];
    }
    return tot;
}

/* --- distinct sets -------------------------------------------------------------------------------------- */

static uint32_t value_fp(const fval *f) { return (uint32_t)(mix64(hash64(f->str.ptr, f->str.len)) >> 32); }

/* Age in DSTEP units of stamp st relative to the entity's newest stamp (valid below 2^16, see dset_sweep). */
static inline uint32_t st_age(uint32_t newest, uint16_t st) { return (uint16_t)((uint16_t)newest - st); }

/* Drops entries that no window at or after the newest event can reach, and leaves sample mode once a whole
 * window has passed since the last value was turned away. Called on every add, so live ages stay < 2^16. */
static void dset_sweep(const vdset *d, vdset_hdr *h, uint32_t newest)
{
    for (int i = 0; i < h->n;) {
        if (st_age(newest, h->st[i]) >= d->nst) {
            h->n--;
            h->fp[i] = h->fp[h->n];
            h->st[i] = h->st[h->n];
        } else
            i++;
    }
    if (h->thr && st_age(newest, h->rej) >= d->nst)
        h->thr = 0;
}

static void dset_add(velocity *v, const vdset *d, vdset_hdr *h, uint32_t fp, uint32_t stamp, uint32_t newest)
{
    if (newest - stamp >= d->nst) {
        v->late_drops++;
        return;
    }
    for (int i = 0; i < h->n; i++)
        if (h->fp[i] == fp) {
            if (st_age(newest, (uint16_t)stamp) < st_age(newest, h->st[i]))
                h->st[i] = (uint16_t)stamp;
            return;
        }
    if (h->thr && fp >= h->thr) {
        if (st_age(newest, (uint16_t)stamp) < st_age(newest, h->rej))
            h->rej = (uint16_t)stamp;
        return;
    }
    if (h->n < K) {
        h->fp[h->n] = fp;
        h->st[h->n++] = (uint16_t)stamp;
        return;
    }
    /* Full: of the K entries and the new value, drop the one with the largest hash and admit only hashes below
     * it from now on. Every value of the window with a hash below thr is then still in the set. */
    int mx = 0;
    for (int i = 1; i < K; i++)
        if (h->fp[i] > h->fp[mx])
            mx = i;
    bool was_exact = h->thr == 0;
    uint16_t dropped_st = (uint16_t)stamp;
    if (h->fp[mx] > fp) {
        h->thr = h->fp[mx];
        dropped_st = h->st[mx];
        h->fp[mx] = fp;
        h->st[mx] = (uint16_t)stamp;
    } else
        h->thr = fp;
    if (h->thr == 0)
        h->thr = 1;
    if (was_exact || st_age(newest, dropped_st) < st_age(newest, h->rej))
        h->rej = dropped_st;
}

static double dset_estimate(const vdset_hdr *h, uint32_t newest, uint32_t nw, uint32_t now_st)
{
    uint32_t c = 0;
    int64_t lo = (int64_t)now_st - nw;
    for (int i = 0; i < h->n; i++)
        if ((int64_t)newest - st_age(newest, h->st[i]) > lo)
            c++;
    /* exact when nothing was turned away inside this window (also in sample mode, for a shorter window) */
    if (!h->thr || (int64_t)newest - st_age(newest, h->rej) <= lo)
        return c;
    return nearbyint((double)c * 4294967296.0 / (double)h->thr);
}

/* --- seen-set ------------------------------------------------------------------------------------------- */

static uint64_t *seen_slot(const velocity *v, uint64_t h)
{
    uint32_t i = (uint32_t)h & v->seen_mask;
    while (v->seen_tab[i] && v->seen_tab[i] != h)
        i = (i + 1) & v->seen_mask;
    return &v->seen_tab[i];
}

/* Linear-probing delete by backward shift, so lookups need no tombstones. */
static void seen_delete(velocity *v, uint64_t h)
{
    uint64_t *s = seen_slot(v, h);
    if (!*s)
        return;
    uint32_t i = (uint32_t)(s - v->seen_tab), j = i;
    for (;;) {
        v->seen_tab[i] = 0;
        for (;;) {
            j = (j + 1) & v->seen_mask;
            if (!v->seen_tab[j])
                return;
            uint32_t home = (uint32_t)v->seen_tab[j] & v->seen_mask;
            /* move j back to i unless its home lies cyclically in (i, j] */
            if (i <= j ? (home <= i || home > j) : (home <= i && home > j))
                break;
        }
        v->seen_tab[i] = v->seen_tab[j];
        i = j;
    }
}

static uint64_t txn_hash(const fval *vals)
{
    if (!has_str(&vals[FEAT_TXN_ID]))
        return 0;
    uint64_t h = str_key(&vals[FEAT_TXN_ID]);
    return h ? h : 1;
}

static bool seen_has(const velocity *v, uint64_t h) { return h && *seen_slot(v, h) == h; }

static void seen_put(velocity *v, uint64_t h)
{
    if (v->seen_n == v->seen_cap) {
        seen_delete(v, v->seen_fifo[v->seen_pos]);
        v->seen_n--;
    }
    v->seen_fifo[v->seen_pos] = h;
    v->seen_pos = v->seen_pos + 1 == v->seen_cap ? 0 : v->seen_pos + 1;
    *seen_slot(v, h) = h;
    v->seen_n++;
}

/* --- per transaction ------------------------------------------------------------------------------------ */

/* Every key field's record, found once for both the features and the count of one transaction. */
typedef struct vfound {
    vrec *recs[MAX_CLASSES];
    bool have[MAX_CLASSES];
    uint64_t keys[MAX_CLASSES];
} vfound;

static void features_found(const velocity *v, const velocity_plan *pl, fval *vals, int64_t event_ms,
                           const vfound *fd)
{
    uint32_t now = secs_of(event_ms);
    for (int i = 0; i < v->nent; i++) {
        const vent *p = &v->ent[i];
        fval *f = &vals[pl->f[i].id];
        f->type = FT_NUM;
        f->present = fd->have[p->cls];
        f->num = 0;
        vrec *r = fd->recs[p->cls];
        if (!r)
            continue;
        const vclass *c = &v->cls[p->cls];
        if (p->is_dset)
            f->num = dset_estimate(dset_of(r, &c->dsets[p->idx]), r->max_ts / DSTEP, p->nw, now / DSTEP);
        else
            f->num = (double)col_total(c, r, &c->cols[p->idx], p->nw, now);
    }
}

static void features_locked(velocity *v, const velocity_plan *pl, fval *vals, int64_t event_ms)
{
    vfound fd;
    lookup_all(v, pl, vals, fd.keys, fd.recs, fd.have);
    features_found(v, pl, vals, event_ms, &fd);
}

/* The seen-set is far larger than the caches: start loading the slots add_locked will probe. */
static void seen_prefetch(const velocity *v, uint64_t th)
{
    __builtin_prefetch(&v->seen_tab[(uint32_t)th & v->seen_mask]);
    if (v->seen_n == v->seen_cap)
        __builtin_prefetch(&v->seen_tab[(uint32_t)v->seen_fifo[v->seen_pos] & v->seen_mask]);
}

/* Counts one transaction into the records fd found for it (none yet: a new record), unless its hash is in the
 * seen-set already (a duplicate: false). */
static bool add_found(velocity *v, const velocity_plan *pl, const fval *vals, int64_t event_ms, uint64_t th,
                      const vfound *fd)
{
    if (seen_has(v, th)) {
        v->duplicates++;
        return false;
    }
    if (th)
        seen_put(v, th);
    uint32_t t = secs_of(event_ms);
    vrec *const *recs = fd->recs;
    const bool *have_key = fd->have;
    const uint64_t *keys = fd->keys;
    for (int i = 0; i < v->ncls; i++)
        if (recs[i]) { /* the LRU neighbours that touch will relink */
            if (recs[i]->prev != NIL)
                __builtin_prefetch(rec_at(&v->cls[i], recs[i]->prev));
            if (recs[i]->next != NIL)
                __builtin_prefetch(rec_at(&v->cls[i], recs[i]->next));
        }
    for (int i = 0; i < v->ncls; i++) {
        vclass *c = &v->cls[i];
        if (!have_key[i])
            continue;
        vrec *r = touch(c, recs[i], keys[i], t);
        uint32_t old_newest = r->max_ts / DSTEP;
        if (t > r->max_ts) {
            advance(c, r, t);
            r->max_ts = t;
        }
        for (int j = 0; j < c->ncols; j++) {
            const vcol *col = &c->cols[j];
            const vring *g = &c->rings[col->ring];
            uint32_t b = t / g->step, head = r->max_ts / g->step;
            if (head - b >= g->n) {
                v->late_drops++;
                continue;
            }
            if (col->is_sum) {
                uint32_t *s = &sum_col(r, col)[b % g->n];
                uint32_t a = sum_value(&vals[pl->f[col->value_rep].value]);
                *s = a > UINT32_MAX - *s ? UINT32_MAX : *s + a;
            } else {
                uint16_t *n = &count_col(r, col)[b % g->n];
                if (*n < UINT16_MAX)
                    (*n)++;
            }
        }
        uint32_t newest = r->max_ts / DSTEP;
        for (int j = 0; j < c->ndsets; j++) {
            const vdset *d = &c->dsets[j];
            vdset_hdr *h = dset_of(r, d);
            if (newest - old_newest >= d->nst) /* a gap longer than the window: all expired, stamps may alias */
                memset(h, 0, sizeof *h);
            else
                dset_sweep(d, h, newest);
            const fval *f = &vals[pl->f[d->value_rep].value];
            if (has_str(f))
                dset_add(v, d, h, value_fp(f), t / DSTEP, newest);
        }
    }
    return true;
}

static bool add_locked(velocity *v, const velocity_plan *pl, const fval *vals, int64_t event_ms, uint64_t th)
{
    vfound fd;
    lookup_all(v, pl, vals, fd.keys, fd.recs, fd.have);
    return add_found(v, pl, vals, event_ms, th, &fd);
}

void velocity_features(velocity *v, const velocity_plan *pl, fval *vals, int64_t event_ms)
{
    if (!velocity_serves(v, pl))
        return;
    pthread_mutex_lock(&v->mu);
    features_locked(v, pl, vals, event_ms);
    pthread_mutex_unlock(&v->mu);
}

bool velocity_add(velocity *v, const velocity_plan *pl, const fval *vals, int64_t event_ms)
{
    if (!velocity_serves(v, pl))
        return false;
    uint64_t th = txn_hash(vals);
    pthread_mutex_lock(&v->mu);
    seen_prefetch(v, th);
    bool ok = add_locked(v, pl, vals, event_ms, th);
    pthread_mutex_unlock(&v->mu);
    return ok;
}

bool velocity_features_and_add(velocity *v, const velocity_plan *pl, fval *vals, int64_t event_ms)
{
    if (!velocity_serves(v, pl))
        return false;
    uint64_t th = txn_hash(vals);
    pthread_mutex_lock(&v->mu);
    seen_prefetch(v, th);
    vfound fd; /* the features read the records before the count changes them */
    lookup_all(v, pl, vals, fd.keys, fd.recs, fd.have);
    features_found(v, pl, vals, event_ms, &fd);
    bool ok = add_found(v, pl, vals, event_ms, th, &fd);
    pthread_mutex_unlock(&v->mu);
    return ok;
}

void velocity_keys(const velocity *v, const velocity_plan *pl, const fval *vals, vkeys *k)
{
    k->set = velocity_serves(v, pl);
    if (!k->set)
        return;
    hash_keys(v, pl, vals, k->key, k->have);
    k->txn = txn_hash(vals);
    seen_prefetch(v, k->txn);
}

void velocity_prefetch_recs(const velocity *v, const vkeys *k)
{
    if (!k->set)
        return;
    for (int i = 0; i < v->ncls; i++) {
        if (!k->have[i])
            continue;
        const vclass *c = &v->cls[i];
        uint32_t j = c->heads[k->key[i] & c->mask];
        if (j != NIL)
            prefetch_rec(c, j);
    }
}

bool velocity_features_and_add_keyed(velocity *v, const velocity_plan *pl, fval *vals, int64_t event_ms,
                                     const vkeys *k)
{
    if (!k->set)
        return velocity_features_and_add(v, pl, vals, event_ms);
    if (!velocity_serves(v, pl))
        return false;
    pthread_mutex_lock(&v->mu);
    seen_prefetch(v, k->txn);
    vfound fd;
    memcpy(fd.keys, k->key, sizeof fd.keys);
    memcpy(fd.have, k->have, sizeof fd.have);
    lookup_keys(v, fd.keys, fd.recs, fd.have);
    features_found(v, pl, vals, event_ms, &fd);
    bool ok = add_found(v, pl, vals, event_ms, k->txn, &fd);
    pthread_mutex_unlock(&v->mu);
    return ok;
}

void velocity_stats(velocity *v, velocity_stats_t *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&v->mu);
    for (int i = 0; i < v->ncls; i++) {
        const vclass *c = &v->cls[i];
        out->keys += c->used;
        out->evictions += c->evictions;
        out->bytes_state += (uint64_t)c->cap * c->rec_size + ((uint64_t)c->mask + 1) * sizeof *c->heads;
        if (i < 8) {
            out->record_bytes[i] = c->rec_size;
            out->key_feats[i] = c->key_feat;
            out->n_key_feats = i + 1;
        }
    }
    out->seen = v->seen_n;
    out->duplicates = v->duplicates;
    out->late_drops = v->late_drops;
    out->bytes_seen = ((uint64_t)v->seen_mask + 1 + v->seen_cap) * sizeof(uint64_t);
    out->bytes = out->bytes_state + out->bytes_seen + sizeof *v;
    pthread_mutex_unlock(&v->mu);
}

/* --- snapshots ------------------------------------------------------------------------------------------ */

/* The format (docs/state.md, "Checkpoints"): a header that names everything the bytes depend on, the live
 * records of each table copied as they are in memory (record i of the snapshot is record i of the state, so
 * the LRU links, which are record indices, stay valid), the seen-set ids oldest first, and a CRC-32C of all
 * that. Host byte order, with a tag that a reader on another byte order refuses. The records are copied, not
 * re-encoded: a write is a memcpy of the live part of each table, which is what keeps the owning thread's
 * pause short. The hash index (chain heads and links) and the seen-set's hash table are rebuilt on read. */
#define SNAP_MAGIC "VRDSNAP\n"
#define SNAP_VERSION 1u
#define SNAP_BYTE_ORDER 0x01020304u
#define SNAP_FIXED 88        /* bytes of the fixed part of the header */
#define SNAP_TRAILER 8       /* CRC-32C and SNAP_END */
#define SNAP_END 0x444e4556u /* "VEND" */

/* CRC-32C (Castagnoli, reflected 0x82F63B78), with the SSE4.2 instruction where the CPU has it: about 8 bytes
 * a cycle against 1 for the table, and a 1M-key snapshot is 150 MB. */
static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc32c_sw(uint32_t crc, const unsigned char *p, size_t n)
{
    pthread_once(&crc_once, crc_init);
    while (n--)
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const unsigned char *p, size_t n)
{
    for (; n && ((uintptr_t)p & 7); n--)
        crc = __builtin_ia32_crc32qi(crc, *p++);
    uint64_t c = crc;
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
    }
    crc = (uint32_t)c;
    for (; n; n--)
        crc = __builtin_ia32_crc32qi(crc, *p++);
    return crc;
}
#endif

static uint32_t crc32c(const void *data, size_t n)
{
    uint32_t crc = 0xffffffffu;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2"))
        return ~crc32c_hw(crc, data, n);
#endif
    return ~crc32c_sw(crc, data, n);
}

/* Bounded writer and reader of the header: a writer past its cap, or a reader past its end, only marks itself
 * failed, so the callers check once at the end. */
typedef struct snapw {
    unsigned char *p;
    size_t n, cap;
    bool over;
} snapw;

static void w_bytes(snapw *w, const void *src, size_t n)
{
    if (w->over || n > w->cap - w->n) {
        w->over = true;
        return;
    }
    if (w->p)
        memcpy(w->p + w->n, src, n);
    w->n += n;
}
static void w_u8(snapw *w, uint8_t x) { w_bytes(w, &x, 1); }
static void w_u16(snapw *w, uint16_t x) { w_bytes(w, &x, 2); }
static void w_u32(snapw *w, uint32_t x) { w_bytes(w, &x, 4); }
static void w_u64(snapw *w, uint64_t x) { w_bytes(w, &x, 8); }
static void w_str(snapw *w, const char *s)
{
    size_t n = strlen(s);
    w_u16(w, (uint16_t)n);
    w_bytes(w, s, n);
}

typedef struct snapr {
    const unsigned char *p;
    size_t n, off;
    bool bad;
} snapr;

static const unsigned char *r_take(snapr *r, size_t n)
{
    if (r->bad || n > r->n - r->off) {
        r->bad = true;
        return NULL;
    }
    const unsigned char *at = r->p + r->off;
    r->off += n;
    return at;
}
static uint64_t r_uint(snapr *r, size_t n)
{
    const unsigned char *at = r_take(r, n);
    uint64_t x = 0;
    if (at)
        memcpy(&x, at, n); /* little-endian host (checked through the byte-order tag) */
    return x;
}
static bool r_str(snapr *r, char *out, size_t cap)
{
    size_t n = (size_t)r_uint(r, 2);
    const unsigned char *at = r_take(r, n);
    if (!at || n >= cap)
        return false;
    memcpy(out, at, n);
    out[n] = 0;
    return true;
}

/* The header after the fixed part: the definitions in canonical order, then each table's layout and LRU ends.
 * With w->p NULL it only counts. */
static void write_layout(const velocity *v, snapw *w)
{
    for (int i = 0; i < v->nent; i++) {
        const vent *p = &v->ent[i];
        w_u8(w, (uint8_t)p->agg);
        w_u64(w, (uint64_t)p->window_ms);
        w_str(w, p->name);
        w_str(w, p->key);
        w_str(w, p->value);
    }
    for (int i = 0; i < v->ncls; i++) {
        const vclass *c = &v->cls[i];
        w_u32(w, (uint32_t)c->key_rep);
        w_u32(w, c->rec_size);
        w_u32(w, (uint32_t)c->nrings);
        for (int k = 0; k < c->nrings; k++) {
            w_u32(w, c->rings[k].step);
            w_u32(w, c->rings[k].n);
        }
        w_u32(w, (uint32_t)c->ncols);
        for (int k = 0; k < c->ncols; k++) {
            w_u8(w, c->cols[k].ring);
            w_u8(w, c->cols[k].is_sum);
            w_u16(w, (uint16_t)c->cols[k].value_rep);
            w_u32(w, c->cols[k].off);
        }
        w_u32(w, (uint32_t)c->ndsets);
        for (int k = 0; k < c->ndsets; k++) {
            w_u32(w, (uint32_t)c->dsets[k].value_rep);
            w_u32(w, c->dsets[k].nst);
            w_u32(w, c->dsets[k].off);
        }
        w_u32(w, c->used);
        w_u32(w, c->lru_head);
        w_u32(w, c->lru_tail);
        w_u64(w, c->evictions);
    }
}

static size_t snapshot_size_locked(const velocity *v)
{
    snapw w = {.cap = SIZE_MAX};
    write_layout(v, &w);
    size_t n = SNAP_FIXED + w.n + SNAP_TRAILER + (size_t)v->seen_n * sizeof(uint64_t);
    for (int i = 0; i < v->ncls; i++)
        n += (size_t)v->cls[i].used * v->cls[i].rec_size;
    return n;
}

size_t velocity_snapshot_bound(const velocity *v)
{
    pthread_mutex_t *mu = (pthread_mutex_t *)&v->mu; /* the lock is internal: a const state may still take it */
    pthread_mutex_lock(mu);
    size_t n = snapshot_size_locked(v);
    pthread_mutex_unlock(mu);
    return n;
}

vstatus velocity_snapshot_copy(const velocity *v, uint64_t position, int64_t taken_ms, unsigned char *buf, size_t cap,
                               size_t *len, verror *e)
{
    pthread_mutex_t *mu = (pthread_mutex_t *)&v->mu;
    pthread_mutex_lock(mu);
    size_t total = snapshot_size_locked(v);
    *len = total;
    if (total > cap) {
        pthread_mutex_unlock(mu);
        return verror_set(e, V_ENOMEM, "velocity snapshot needs %zu bytes, the buffer has %zu", total, cap);
    }
    snapw w = {.p = buf, .cap = cap};
    w_bytes(&w, SNAP_MAGIC, 8);
    w_u32(&w, SNAP_VERSION);
    w_u32(&w, 0); /* header length, filled in below */
    w_u64(&w, total);
    w_u64(&w, position);
    w_u64(&w, (uint64_t)taken_ms);
    w_u64(&w, v->sig);
    w_u32(&w, v->ncls ? v->cls[0].cap : 0);
    w_u32(&w, v->seen_cap);
    w_u32(&w, (uint32_t)v->nent);
    w_u32(&w, (uint32_t)v->ncls);
    w_u64(&w, v->duplicates);
    w_u64(&w, v->late_drops);
    w_u32(&w, v->seen_n);
    w_u32(&w, SNAP_BYTE_ORDER);
    write_layout(v, &w);
    uint32_t hdr = (uint32_t)w.n;
    memcpy(buf + 12, &hdr, 4);
    for (int i = 0; i < v->ncls; i++)
        w_bytes(&w, v->cls[i].recs, (size_t)v->cls[i].used * v->cls[i].rec_size);
    /* the seen-set oldest first: the FIFO has wrapped once it is full, and then the oldest is at seen_pos */
    uint32_t start = v->seen_n == v->seen_cap ? v->seen_pos : 0;
    uint32_t first = v->seen_n < v->seen_cap - start ? v->seen_n : v->seen_cap - start;
    w_bytes(&w, v->seen_fifo + start, (size_t)first * sizeof(uint64_t));
    w_bytes(&w, v->seen_fifo, (size_t)(v->seen_n - first) * sizeof(uint64_t));
    pthread_mutex_unlock(mu);
    uint32_t zero = 0;
    w_u32(&w, zero); /* the checksum, written by velocity_snapshot_seal */
    w_u32(&w, zero);
    if (w.over || w.n != total)
        return verror_set(e, V_EINVAL, "velocity snapshot: internal size mismatch (%zu of %zu)", w.n, total);
    return V_OK;
}

void velocity_snapshot_seal(unsigned char *buf, size_t len)
{
    if (len < SNAP_FIXED + SNAP_TRAILER)
        return;
    uint32_t crc = crc32c(buf, len - SNAP_TRAILER), end = SNAP_END;
    memcpy(buf + len - 8, &crc, 4);
    memcpy(buf + len - 4, &end, 4);
}

vstatus velocity_snapshot_write(const velocity *v, uint64_t position, int64_t taken_ms, unsigned char *buf, size_t cap,
                                size_t *len, verror *e)
{
    vstatus s = velocity_snapshot_copy(v, position, taken_ms, buf, cap, len, e);
    if (s == V_OK) /* the copy is private now: the checksum does not hold the state */
        velocity_snapshot_seal(buf, *len);
    return s;
}

/* The first difference between the definitions in the snapshot and those of v (built from the caller's plan),
 * or "" when they are the same. */
static bool read_defs(snapr *r, const velocity *v, uint32_t nent, char *why, size_t cap)
{
    char name[FEAT_NAME_MAX], key[FEAT_NAME_MAX], value[FEAT_NAME_MAX];
    uint32_t i;
    for (i = 0; i < nent; i++) {
        vel_agg agg = (vel_agg)r_uint(r, 1);
        int64_t window_ms = (int64_t)r_uint(r, 8);
        if (!r_str(r, name, sizeof name) || !r_str(r, key, sizeof key) || !r_str(r, value, sizeof value)) {
            snprintf(why, cap, "snapshot header is malformed");
            return false;
        }
        if (i >= (uint32_t)v->nent) {
            snprintf(why, cap, "snapshot plan has feature %s, which the policy does not", name);
            return false;
        }
        const vent *p = &v->ent[i];
        if (strcmp(p->name, name) != 0) {
            snprintf(why, cap, "snapshot plan has feature %s where the policy has %s", name, p->name);
            return false;
        }
        if (p->agg != agg || p->window_ms != window_ms || strcmp(p->key, key) != 0 || strcmp(p->value, value) != 0) {
            snprintf(why, cap, "snapshot plan defines feature %s differently", name);
            return false;
        }
    }
    if (i < (uint32_t)v->nent) {
        snprintf(why, cap, "the policy has feature %s, which the snapshot plan does not", v->ent[i].name);
        return false;
    }
    return true;
}

static bool read_layout(snapr *r, velocity *v, uint32_t ncls, uint32_t *used, char *why, size_t cap)
{
    if (ncls != (uint32_t)v->ncls) {
        snprintf(why, cap, "snapshot has %u key fields, the policy's plan %d", ncls, v->ncls);
        return false;
    }
    for (int i = 0; i < v->ncls; i++) {
        vclass *c = &v->cls[i];
        bool same =
            r_uint(r, 4) == (uint32_t)c->key_rep && r_uint(r, 4) == c->rec_size && r_uint(r, 4) == (uint32_t)c->nrings;
        for (int k = 0; same && k < c->nrings; k++)
            same = r_uint(r, 4) == c->rings[k].step && r_uint(r, 4) == c->rings[k].n;
        same = same && r_uint(r, 4) == (uint32_t)c->ncols;
        for (int k = 0; same && k < c->ncols; k++)
            same = r_uint(r, 1) == c->cols[k].ring && r_uint(r, 1) == c->cols[k].is_sum &&
                   r_uint(r, 2) == (uint16_t)c->cols[k].value_rep && r_uint(r, 4) == c->cols[k].off;
        same = same && r_uint(r, 4) == (uint32_t)c->ndsets;
        for (int k = 0; same && k < c->ndsets; k++)
            same = r_uint(r, 4) == (uint32_t)c->dsets[k].value_rep && r_uint(r, 4) == c->dsets[k].nst &&
                   r_uint(r, 4) == c->dsets[k].off;
        if (!same || r->bad) {
            snprintf(why, cap, "snapshot bucket layout of key field %s differs from this build's",
                     v->ent[c->key_rep].key);
            return false;
        }
        used[i] = (uint32_t)r_uint(r, 4);
        c->lru_head = (uint32_t)r_uint(r, 4);
        c->lru_tail = (uint32_t)r_uint(r, 4);
        c->evictions = r_uint(r, 8);
        if (used[i] > c->cap) {
            snprintf(why, cap, "snapshot holds %u keys of %s, more than max_keys %u", used[i], v->ent[c->key_rep].key,
                     c->cap);
            return false;
        }
        bool ends_ok =
            used[i] == 0 ? c->lru_head == NIL && c->lru_tail == NIL : c->lru_head < used[i] && c->lru_tail < used[i];
        if (!ends_ok) {
            snprintf(why, cap, "snapshot LRU list of %s is malformed", v->ent[c->key_rep].key);
            return false;
        }
    }
    return !r->bad;
}

/* Copies a table's records in and rebuilds its hash chains; refuses links out of range and repeated keys. */
static bool load_records(vclass *c, const unsigned char *src, uint32_t used)
{
    memcpy(c->recs, src, (size_t)used * c->rec_size);
    c->used = used;
    for (uint32_t i = 0; i < used; i++) {
        vrec *r = rec_at(c, i);
        if ((r->prev != NIL && r->prev >= used) || (r->next != NIL && r->next >= used))
            return false;
        uint32_t *head = &c->heads[r->key & c->mask];
        for (uint32_t j = *head; j != NIL; j = rec_at(c, j)->chain)
            if (rec_at(c, j)->key == r->key)
                return false;
        r->chain = *head;
        *head = i;
    }
    return true;
}

size_t velocity_snapshot_length(const unsigned char *buf, size_t len)
{
    if (len < SNAP_FIXED + SNAP_TRAILER || memcmp(buf, SNAP_MAGIC, 8) != 0)
        return 0;
    uint64_t total;
    memcpy(&total, buf + 16, 8); /* magic, version, header length, then the total */
    return total <= len ? (size_t)total : 0;
}

vstatus velocity_snapshot_read(const velocity_plan *pl, const velocity_cfg *cfg, const unsigned char *buf, size_t len,
                               velocity **out, uint64_t *position, int64_t *taken_ms, verror *e)
{
    *out = NULL;
    if (len < SNAP_FIXED + SNAP_TRAILER)
        return verror_set(e, V_EINVAL, "snapshot truncated: %zu bytes", len);
    snapr r = {.p = buf, .n = len};
    if (memcmp(r_take(&r, 8), SNAP_MAGIC, 8) != 0)
        return verror_set(e, V_EINVAL, "not a velocity snapshot (bad magic)");
    uint32_t version = (uint32_t)r_uint(&r, 4);
    uint32_t hdr_len = (uint32_t)r_uint(&r, 4);
    uint64_t total = r_uint(&r, 8);
    if (total != len)
        return verror_set(e, V_EINVAL, "snapshot truncated or padded: %zu bytes, its header says %llu", len,
                          (unsigned long long)total);
    uint32_t crc, end;
    memcpy(&crc, buf + len - 8, 4);
    memcpy(&end, buf + len - 4, 4);
    if (end != SNAP_END || crc32c(buf, len - SNAP_TRAILER) != crc)
        return verror_set(e, V_EINVAL, "snapshot checksum mismatch (corrupt)");
    if (version != SNAP_VERSION)
        return verror_set(e, V_EINVAL, "snapshot format version %u, this build reads version %u", version,
                          SNAP_VERSION);
    uint64_t pos = r_uint(&r, 8);
    int64_t taken = (int64_t)r_uint(&r, 8);
    uint64_t sig = r_uint(&r, 8);
    r_uint(&r, 4); /* the writer's max_keys and seen_cap: informative; the caller's cfg decides */
    r_uint(&r, 4);
    uint32_t nent = (uint32_t)r_uint(&r, 4), ncls = (uint32_t)r_uint(&r, 4);
    uint64_t dups = r_uint(&r, 8), late = r_uint(&r, 8);
    uint32_t seen_n = (uint32_t)r_uint(&r, 4);
    if (r_uint(&r, 4) != SNAP_BYTE_ORDER)
        return verror_set(e, V_EINVAL, "snapshot written on a host of another byte order");
    if (r.bad || hdr_len > len - SNAP_TRAILER)
        return verror_set(e, V_EINVAL, "snapshot header is malformed");

    velocity *v = NULL;
    vstatus s = velocity_new(pl, cfg, &v, e);
    if (s != V_OK)
        return s;
    char why[512] = "";
    uint32_t used[MAX_CLASSES] = {0};
    /* the definitions first, so that a refusal names the feature; the signature covers what they do not say */
    if (!read_defs(&r, v, nent, why, sizeof why) && !why[0])
        snprintf(why, sizeof why, "snapshot header is malformed");
    if (!why[0] && sig != v->sig)
        snprintf(why, sizeof why, "snapshot plan signature differs from the policy's");
    if (!why[0] && !read_layout(&r, v, ncls, used, why, sizeof why) && !why[0])
        snprintf(why, sizeof why, "snapshot header is malformed");
    if (!why[0] && r.off != hdr_len)
        snprintf(why, sizeof why, "snapshot header length disagrees with its contents");
    size_t body = 0;
    for (int i = 0; !why[0] && i < v->ncls; i++)
        body += (size_t)used[i] * v->cls[i].rec_size;
    if (!why[0] && hdr_len + body + (size_t)seen_n * 8 + SNAP_TRAILER != len)
        snprintf(why, sizeof why, "snapshot body length disagrees with its header");
    const unsigned char *at = buf + hdr_len;
    for (int i = 0; !why[0] && i < v->ncls; i++) {
        if (!load_records(&v->cls[i], at, used[i]))
            snprintf(why, sizeof why, "snapshot records of %s are malformed", v->ent[v->cls[i].key_rep].key);
        at += (size_t)used[i] * v->cls[i].rec_size;
    }
    /* a smaller seen_cap than the writer's keeps the newest ids, as the writer's FIFO would have */
    uint32_t skip = seen_n > v->seen_cap ? seen_n - v->seen_cap : 0;
    for (uint32_t i = skip; !why[0] && i < seen_n; i++) {
        uint64_t h;
        memcpy(&h, at + (size_t)i * 8, 8);
        if (!h || seen_has(v, h))
            snprintf(why, sizeof why, "snapshot seen-set is malformed");
        else
            seen_put(v, h);
    }
    if (why[0]) {
        velocity_free(v);
        return verror_set(e, V_EINVAL, "%s", why);
    }
    v->duplicates = dups;
    v->late_drops = late;
    *out = v;
    if (position)
        *position = pos;
    if (taken_ms)
        *taken_ms = taken;
    return V_OK;
}

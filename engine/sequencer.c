/* sequencer.c - the sequencing step and the ring of recent features (see sequencer.h). */
#include "sequencer.h"

#include <stdlib.h>
#include <string.h>

_Static_assert(FEAT_MAX % 64 == 0, "velvals.present holds FEAT_MAX bits in whole words");

void velvals_save(const velocity_plan *pl, const fval *vals, velvals *vv)
{
    vv->n = pl->n;
    memset(vv->present, 0, sizeof vv->present);
    for (int k = 0; k < pl->n; k++) {
        const fval *f = &vals[pl->f[k].id];
        if (f->present)
            vv->present[k / 64] |= (uint64_t)1 << (k % 64);
        vv->num[k] = f->present ? f->num : 0;
    }
}

void velvals_load(const velocity_plan *pl, const velvals *vv, fval *vals)
{
    for (int k = 0; k < pl->n && k < vv->n; k++)
        vals[pl->f[k].id] = (fval){.type = FT_NUM,
                                   .present = (vv->present[k / 64] >> (k % 64)) & 1,
                                   .num = vv->num[k]};
}

void seq_step(velocity *v, const velocity_plan *pl, const Transaction *t, int64_t event_ms, fval *vals)
{
    features_from_txn(pl->reg, t, event_ms, vals);
    if (v && pl->n > 0)
        velocity_features_and_add(v, pl, vals, event_ms);
}

struct featring {
    size_t cap;    /* entries, a power of two (0: none) */
    size_t stride; /* uint64 words per entry: seq, presence words, values */
    int nvel, words;
    uint64_t *e;
    bigmem mem; /* e's mapping */
};

vstatus featring_new(size_t cap, int nvel, featring **out, verror *e)
{
    *out = NULL;
    if (cap & (cap - 1))
        return verror_set(e, V_EINVAL, "the feature ring's size must be a power of two");
    if (nvel < 0 || nvel > FEAT_MAX)
        return verror_set(e, V_EINVAL, "too many velocity features for the feature ring");
    featring *r = calloc(1, sizeof *r);
    if (!r)
        return verror_set(e, V_ENOMEM, "out of memory");
    r->nvel = nvel;
    r->words = (nvel + 63) / 64;
    r->stride = 1 + (size_t)r->words + (size_t)nvel;
    r->cap = nvel > 0 ? cap : 0; /* a policy without velocity features needs no memory of them */
    if (r->cap) {
        /* zeroed (sequence 0 never occurs in a stream, so a zeroed entry is empty) and on huge pages: filled in
         * stream order, on 4 KB pages it took a page fault every few dozen transactions on the sequencing thread
         * until it had wrapped once (docs/benchmarks.md); the first huge page is backed now, before the first
         * transaction */
        size_t bytes = r->cap * r->stride * sizeof *r->e;
        r->e = bigmem_alloc(&r->mem, bytes);
        if (!r->e) {
            free(r);
            return verror_set(e, V_ENOMEM, "out of memory for a feature ring of %zu entries", cap);
        }
        memset(r->e, 0, bytes < BIGMEM_HUGE_PAGE ? bytes : BIGMEM_HUGE_PAGE);
    }
    *out = r;
    return V_OK;
}

void featring_free(featring *r)
{
    if (!r)
        return;
    bigmem_free(&r->mem);
    free(r);
}

size_t featring_bytes(const featring *r) { return r ? r->cap * r->stride * sizeof *r->e : 0; }

void featring_put(featring *r, uint64_t seq, const velvals *vv)
{
    if (!r || !r->cap || !seq)
        return;
    uint64_t *p = &r->e[(seq & (r->cap - 1)) * r->stride];
    p[0] = seq;
    memcpy(p + 1, vv->present, (size_t)r->words * sizeof *p);
    memcpy(p + 1 + r->words, vv->num, (size_t)r->nvel * sizeof(double));
}

bool featring_get(const featring *r, uint64_t seq, velvals *vv)
{
    if (!r || !r->cap || !seq)
        return false;
    const uint64_t *p = &r->e[(seq & (r->cap - 1)) * r->stride];
    if (p[0] != seq)
        return false;
    vv->n = r->nvel;
    memset(vv->present, 0, sizeof vv->present);
    memcpy(vv->present, p + 1, (size_t)r->words * sizeof *p);
    memcpy(vv->num, p + 1 + r->words, (size_t)r->nvel * sizeof(double));
    return true;
}

#define RING_MAGIC "VRDRING1"
#define RING_HDR 24 /* magic, uint32 features, uint32 zero, uint64 entries */

size_t featring_export_bound(const featring *r) { return RING_HDR + featring_bytes(r); }

size_t featring_export(const featring *r, uint64_t after, uint64_t upto, unsigned char *buf, size_t cap)
{
    if (cap < RING_HDR)
        return 0;
    uint64_t n = 0;
    size_t off = RING_HDR, esz = r ? r->stride * sizeof *r->e : 0;
    if (r && r->cap && upto > after) {
        uint64_t from = upto - after > r->cap ? upto - r->cap + 1 : after + 1;
        for (uint64_t seq = from; seq <= upto && off + esz <= cap; seq++) {
            const uint64_t *p = &r->e[(seq & (r->cap - 1)) * r->stride];
            if (p[0] != seq)
                continue;
            memcpy(buf + off, p, esz);
            off += esz;
            n++;
        }
    }
    uint32_t nvel = r ? (uint32_t)r->nvel : 0, zero = 0;
    memcpy(buf, RING_MAGIC, 8);
    memcpy(buf + 8, &nvel, 4);
    memcpy(buf + 12, &zero, 4);
    memcpy(buf + 16, &n, 8);
    return off;
}

bool featring_import(featring *r, const unsigned char *buf, size_t len, size_t *entries)
{
    *entries = 0;
    if (!r || len < RING_HDR || memcmp(buf, RING_MAGIC, 8) != 0)
        return false;
    uint32_t nvel;
    uint64_t n;
    memcpy(&nvel, buf + 8, 4);
    memcpy(&n, buf + 16, 8);
    size_t esz = r->stride * sizeof *r->e;
    if ((int)nvel != r->nvel || (esz && n > (len - RING_HDR) / esz) || RING_HDR + n * esz != len)
        return false;
    if (!r->cap)
        return true;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t seq;
        memcpy(&seq, buf + RING_HDR + i * esz, 8);
        if (!seq)
            continue;
        memcpy(&r->e[(seq & (r->cap - 1)) * r->stride], buf + RING_HDR + i * esz, esz);
        (*entries)++;
    }
    return true;
}

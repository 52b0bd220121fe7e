/* hist.c - log-bucketed histogram (see hist.h). Values below 64 have their own bucket; above, each power of
 * two is split into 64 linear sub-buckets, so the relative error is at most 1/64. */
#include "hist.h"

#include <string.h>

static int bucket_of(int64_t v)
{
    if (v < HIST_SUB)
        return v < 0 ? 0 : (int)v;
    int e = 63 - __builtin_clzll((unsigned long long)v); /* v in [2^e, 2^(e+1)) with e >= 6 */
    int shift = e - 6;
    int idx = HIST_SUB * (shift + 1) + (int)((v >> shift) - HIST_SUB);
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

static int64_t bucket_upper(int idx)
{
    if (idx < HIST_SUB)
        return idx;
    int shift = idx / HIST_SUB - 1;
    int64_t mant = HIST_SUB + idx % HIST_SUB;
    return ((mant + 1) << shift) - 1;
}

void hist_reset(hist *h)
{
    memset(h, 0, sizeof *h);
    h->min = INT64_MAX;
}

void hist_record(hist *h, int64_t v)
{
    h->counts[bucket_of(v)]++;
    h->total++;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

int64_t hist_quantile(const hist *h, double q)
{
    if (h->total == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->total + 0.5);
    if (rank < 1)
        rank = 1;
    if (rank > h->total)
        rank = h->total;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            int64_t up = bucket_upper(i);
            return up > h->max ? h->max : up;
        }
    }
    return h->max;
}

void hist_merge(hist *into, const hist *from)
{
    for (int i = 0; i < HIST_BUCKETS; i++)
        into->counts[i] += from->counts[i];
    into->total += from->total;
    if (from->min < into->min)
        into->min = from->min;
    if (from->max > into->max)
        into->max = from->max;
}

/* hist.h - a log-bucketed latency histogram in the style of HdrHistogram: fixed memory, O(1) record, about
 * 1.6% relative precision (64 sub-buckets per power of two), values in microseconds up to about 2^40. No
 * Debian C library provides HdrHistogram, so this is ours, with its own tests. */
#ifndef VERDICT_HIST_H
#define VERDICT_HIST_H

#include <stdint.h>

#define HIST_SUB 64
#define HIST_BUCKETS (HIST_SUB * 36)

typedef struct hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    int64_t min, max;
} hist;

void hist_reset(hist *h);
void hist_record(hist *h, int64_t value);
/* The value at quantile q (0..1): an upper bound of the bucket holding it (never under-reports). */
int64_t hist_quantile(const hist *h, double q);
void hist_merge(hist *into, const hist *from);

#endif

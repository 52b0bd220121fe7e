/* test_hist.c - the latency histogram: exact small values, bounded relative error, quantiles. */
#include "hist.h"

#include <criterion/criterion.h>
#include <stdlib.h>

Test(hist, small_values_are_exact)
{
    hist h;
    hist_reset(&h);
    for (int v = 1; v <= 50; v++)
        hist_record(&h, v);
    cr_assert_eq(hist_quantile(&h, 0.5), 25);
    cr_assert_eq(hist_quantile(&h, 1.0), 50);
    cr_assert_eq(h.min, 1);
}

Test(hist, relative_error_is_bounded_over_a_wide_range)
{
    for (int64_t v = 64; v < (int64_t)1 << 36; v = v * 3 / 2 + 7) {
        hist h;
        hist_reset(&h);
        hist_record(&h, v);
        hist_record(&h, v + 1000000000000LL); /* max sits elsewhere, so the bucket bound is reported */
        int64_t q = hist_quantile(&h, 0.5);
        cr_assert(q >= v, "never under-reports: %lld < %lld", (long long)q, (long long)v);
        cr_assert((double)(q - v) <= (double)v / 64.0 + 1, "within 1/64: v=%lld got %lld", (long long)v,
                  (long long)q);
    }
}

Test(hist, quantiles_of_a_uniform_distribution)
{
    hist h;
    hist_reset(&h);
    for (int v = 1; v <= 100000; v++)
        hist_record(&h, v);
    int64_t p50 = hist_quantile(&h, 0.5), p99 = hist_quantile(&h, 0.99);
    cr_assert(p50 >= 50000 && p50 <= 50000 * 65 / 64, "p50 %lld", (long long)p50);
    cr_assert(p99 >= 99000 && p99 <= 99000 * 65 / 64 + 1, "p99 %lld", (long long)p99);
    hist o;
    hist_reset(&o);
    hist_record(&o, 5);
    hist_merge(&h, &o);
    cr_assert_eq(h.total, 100001);
    cr_assert_eq(h.min, 1);
}

/* test_alloccount.c - the allocation counter that proves the hot path allocates nothing. */
#include <criterion/criterion.h>

#include "alloccount.h"

#include <stdlib.h>

Test(alloccount, counts_allocation_calls_of_our_code)
{
    uint64_t before = alloc_count();
    void *volatile p = malloc(16);
    void *volatile q = calloc(2, 8);
    p = realloc(p, 64);
    cr_assert_eq(alloc_count() - before, 3);
    free(p);
    free(q);
}

/* alloccount.h - counts the heap allocations made by Verdict's own code, to prove the hot path makes none.
 *
 * The build links every Verdict executable with `-Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc`, so each call
 * that an engine or test object makes to those functions goes through a counting wrapper before reaching the
 * real allocator (or AddressSanitizer's). Calls made inside shared libraries (nats.c, jansson) are not seen;
 * the per-transaction path calls neither (protobuf-c decodes into our arena), which is what the count proves.
 * The counter is process-wide and atomic: measure with a single thread doing the work, as the tests do. */
#ifndef VERDICT_ALLOCCOUNT_H
#define VERDICT_ALLOCCOUNT_H

#include <stdint.h>

/* Allocation calls (malloc + calloc + realloc) made by Verdict code since the process started. */
uint64_t alloc_count(void);

#endif

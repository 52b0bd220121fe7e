/* idset.h - a growable set of 64-bit ids (stream sequences or txn_id hashes) for the operator tools and the
 * state rebuild: open addressing, 0 marks an empty slot (a zero key is stored as 1, a 2^-64 event). */
#ifndef VERDICT_IDSET_H
#define VERDICT_IDSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct idset {
    uint64_t *slots;
    size_t cap, n;
} idset;

/* Sized for about n keys (it grows when needed). False when out of memory. */
bool idset_init(idset *s, size_t n);
/* False only when growing failed (out of memory). */
bool idset_add(idset *s, uint64_t k);
bool idset_has(const idset *s, uint64_t k);
void idset_free(idset *s);

#endif

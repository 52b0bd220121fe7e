/* idset.c - see idset.h. Slots are chosen by a multiplicative mix so sequential keys spread out. */
#include "idset.h"

#include <stdlib.h>

bool idset_init(idset *s, size_t n)
{
    s->cap = 1024;
    while (s->cap < n * 2)
        s->cap <<= 1;
    s->n = 0;
    s->slots = calloc(s->cap, sizeof *s->slots);
    return s->slots != NULL;
}

static size_t slot_of(size_t cap, uint64_t k) { return (size_t)((k * 0x9E3779B97F4A7C15ULL) >> 20) & (cap - 1); }

static void put(uint64_t *slots, size_t cap, uint64_t k, size_t *n)
{
    for (size_t i = slot_of(cap, k);; i = (i + 1) & (cap - 1))
        if (!slots[i] || slots[i] == k) {
            *n += !slots[i];
            slots[i] = k;
            return;
        }
}

bool idset_add(idset *s, uint64_t k)
{
    if (!k)
        k = 1;
    if ((s->n + 1) * 2 > s->cap) {
        size_t cap = s->cap * 2, n = 0;
        uint64_t *slots = calloc(cap, sizeof *slots);
        if (!slots)
            return false;
        for (size_t i = 0; i < s->cap; i++)
            if (s->slots[i])
                put(slots, cap, s->slots[i], &n);
        free(s->slots);
        s->slots = slots;
        s->cap = cap;
        s->n = n;
    }
    put(s->slots, s->cap, k, &s->n);
    return true;
}

bool idset_has(const idset *s, uint64_t k)
{
    if (!k)
        k = 1;
    for (size_t i = slot_of(s->cap, k); s->slots[i]; i = (i + 1) & (s->cap - 1))
        if (s->slots[i] == k)
            return true;
    return false;
}

void idset_free(idset *s)
{
    free(s->slots);
    s->slots = NULL;
    s->cap = s->n = 0;
}

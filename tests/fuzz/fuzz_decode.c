/* fuzz_decode.c - libFuzzer target: the transaction decoder (the first thing untrusted bytes meet) must
 * either return a valid transaction or a poison reason, for any input, without crashing or leaking. */
#include "codec.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static arena a;
    static int ready;
    if (!ready) {
        arena_init(&a, 1 << 20);
        ready = 1;
    }
    arena_reset(&a);
    Transaction *t = NULL;
    poison_reason why;
    verror e;
    if (txn_decode(&a, (const char *)data, size, 65536, &t, &why, &e) == V_OK && !t->txn_id)
        __builtin_trap(); /* a valid transaction always has an id */
    return 0;
}

/* fdp.h - a small FuzzedDataProvider for C fuzz targets: turns libFuzzer's bytes into typed values, so a
 * target can build structured inputs (a valid Transaction, an argv) instead of hoping random bytes parse.
 *
 * Like LLVM's FuzzedDataProvider: integers and lengths are taken from the end of the input and byte strings
 * from the front, so a mutation of one region mostly changes one decision; when the input runs out every
 * consumer returns zero / empty, so any input is a complete (if short) program. Header-only, no allocation. */
#ifndef VERDICT_FUZZ_FDP_H
#define VERDICT_FUZZ_FDP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct fdp {
    const uint8_t *data;
    size_t size; /* bytes not yet consumed: data[0 .. size) */
} fdp;

static inline fdp fdp_make(const uint8_t *data, size_t size) { return (fdp){data, size}; }

static inline bool fdp_empty(const fdp *p) { return p->size == 0; }

/* An integer in [lo, hi] from up to 8 bytes taken off the end. */
static inline uint64_t fdp_range(fdp *p, uint64_t lo, uint64_t hi)
{
    if (hi <= lo)
        return lo;
    uint64_t span = hi - lo, v = 0;
    for (unsigned bits = 0; bits < 64 && (span >> bits) != 0 && p->size > 0; bits += 8)
        v = (v << 8) | p->data[--p->size];
    return span == UINT64_MAX ? lo + v : lo + v % (span + 1);
}

static inline uint8_t fdp_u8(fdp *p) { return (uint8_t)fdp_range(p, 0, 255); }
static inline bool fdp_bool(fdp *p) { return fdp_range(p, 0, 1) == 1; }
static inline uint32_t fdp_u32(fdp *p) { return (uint32_t)fdp_range(p, 0, UINT32_MAX); }
static inline int64_t fdp_i64(fdp *p) { return (int64_t)fdp_range(p, 0, UINT64_MAX); }

/* Up to max bytes off the front (fewer when the input runs out); returns the count, data in *out. */
static inline size_t fdp_bytes(fdp *p, size_t max, const uint8_t **out)
{
    size_t n = (size_t)fdp_range(p, 0, max);
    if (n > p->size)
        n = p->size;
    *out = p->data;
    p->data += n;
    p->size -= n;
    return n;
}

/* A NUL-terminated string of up to max bytes (cap > max) copied into out. When printable is set, bytes are
 * folded into [A-Za-z0-9_-] so the string passes identifier checks more often; otherwise embedded NULs cut it. */
static inline size_t fdp_string(fdp *p, char *out, size_t cap, size_t max, bool printable)
{
    static const char ident[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    const uint8_t *b;
    if (max >= cap)
        max = cap - 1;
    size_t n = fdp_bytes(p, max, &b);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (printable)
            out[o++] = ident[b[i] % (sizeof ident - 1)];
        else if (b[i] == 0)
            break;
        else
            out[o++] = (char)b[i];
    }
    out[o] = 0;
    return o;
}

#endif

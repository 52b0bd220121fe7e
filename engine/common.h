/* common.h - the one error convention, clocks and small helpers shared by every module.
 *
 * Every fallible function returns a vstatus (0 = ok, negative = failure) and, when the caller passes a
 * verror, fills it with a human-readable message. The message is reported once, at the boundary, with
 * context (file:line:col for rules, stream/seq for messages). Nothing here allocates. */
#ifndef VERDICT_COMMON_H
#define VERDICT_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum vstatus {
    V_OK = 0,
    V_EINVAL = -1,    /* bad input: a malformed message, a bad flag, a bad file */
    V_ENOMEM = -2,    /* an allocation failed or a fixed capacity is exhausted */
    V_EIO = -3,       /* a file or OS call failed */
    V_ENATS = -4,     /* the broker refused or failed a call */
    V_EPARSE = -5,    /* a rules file, model or config does not parse or type-check */
    V_ECONFLICT = -6, /* an existing stream/consumer/bucket differs from what we need */
    V_ETIMEOUT = -7,  /* a deadline passed */
    V_ENOTFOUND = -8, /* a looked-up thing does not exist */
    V_ESTOPPED = -9,  /* abandoned because a stop was requested (SIGTERM while starting) */
} vstatus;

typedef struct verror {
    vstatus code;
    char msg[1024];
} verror;

const char *vstatus_str(vstatus s);

/* Sets e (if not NULL) and returns code, so callers can write `return verror_set(e, V_EINVAL, ...)`. */
vstatus verror_set(verror *e, vstatus code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Wall clock in ms and us since the epoch; monotonic clock in ns. */
int64_t now_ms(void);
int64_t now_us(void);
int64_t mono_ns(void);

/* a * b, clamped to INT64_MIN/INT64_MAX instead of overflowing (counters summed over a long uptime). */
int64_t i64_mul_sat(int64_t a, int64_t b);

/* 64-bit FNV-1a: stable across runs and machines (used for content versions and key hashing). */
uint64_t hash64(const void *data, size_t len);
uint64_t hash64_str(const char *s);
/* A faster hash (eight bytes a step, where hash64 takes one) for in-memory tables only: it may change from one
 * version to the next, so nothing stored, sent or compared across processes may use it (hash64 is the stable
 * one: velocity keys in snapshots, partitions, KV key names). */
uint64_t hash64_mem(const void *data, size_t len);

/* Formats a content hash as 16 lower-case hex digits into out (>= 17 bytes). */
void hash64_hex(uint64_t h, char *out);

/* v in decimal into out (>= 21 bytes), NUL-terminated, as "%lld" writes it; returns the length. */
size_t fmt_i64(int64_t v, char *out);

/* x with six decimals into out (>= 32 bytes), NUL-terminated, byte for byte as "%.6f" writes it (the exact
 * binary value rounded half to even), without printf's cost on the hot path; returns the length. Written whole
 * below 1e24 (a score is 0..1); a larger x is cut to 31 characters. */
size_t fmt_fixed6(double x, char *out);

/* Copies at most cap-1 bytes and always NUL-terminates; returns false if truncated. */
bool str_copy(char *dst, size_t cap, const char *src);

/* Parses a duration such as 250ms, 30s, 10m, 24h, 7d into milliseconds; false on bad syntax. */
bool duration_parse_ms(const char *s, size_t len, int64_t *out_ms);

/* Reads a whole file of at most max bytes into *buf (malloc'd, NUL-terminated after len bytes; the caller
 * frees it). Failures: V_EIO "cannot open: <reason>" / "read failed", V_EINVAL "larger than N MiB",
 * V_ENOMEM; the message does not repeat the path, so callers can prefix it in their own format. */
vstatus file_read(const char *path, size_t max, char **buf, size_t *len, verror *e);

/* How many lines of the file at path contain needle (0 when it cannot be read); lines longer than 8 KiB count
 * once per 8 KiB piece. For logs: tests and benches wait on what a process has said. */
int file_count_lines(const char *path, const char *needle);

/* Large zeroed arrays straight from mmap, committed lazily by the kernel and backed by transparent huge pages
 * where the system allows it (THP "madvise" or "always"): the velocity state's tables, whose lookups are random
 * over hundreds of MB (with 4 KB pages nearly every one also misses the TLB: docs/state.md), and the sequencer's
 * feature ring, filled in order (with 4 KB pages a fault every few dozen transactions: docs/benchmarks.md). The
 * mapping is aligned to a huge page; bigmem_free unmaps it (a zeroed bigmem is empty). */
#define BIGMEM_HUGE_PAGE ((size_t)2 << 20)
typedef struct bigmem {
    void *map;
    size_t len;
} bigmem;
void *bigmem_alloc(bigmem *b, size_t n);
void bigmem_free(bigmem *b);

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif

/* common.c - implementation of the shared error convention, clocks and hashing (see common.h). */
#define _POSIX_C_SOURCE 200809L
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

const char *vstatus_str(vstatus s)
{
    switch (s) {
    case V_OK: return "ok";
    case V_EINVAL: return "invalid input";
    case V_ENOMEM: return "out of memory or capacity";
    case V_EIO: return "i/o error";
    case V_ENATS: return "broker error";
    case V_EPARSE: return "parse error";
    case V_ECONFLICT: return "conflicting existing configuration";
    case V_ETIMEOUT: return "timed out";
    case V_ENOTFOUND: return "not found";
    case V_ESTOPPED: return "stopped";
    }
    return "unknown error";
}

vstatus verror_set(verror *e, vstatus code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        e->code = code;
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t i64_mul_sat(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return (a < 0) == (b < 0) ? INT64_MAX : INT64_MIN;
    return r;
}

uint64_t hash64(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

uint64_t hash64_str(const char *s) { return hash64(s, s ? strlen(s) : 0); }

uint64_t hash64_mem(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)len * 0xFF51AFD7ED558CCDULL);
    for (; len >= 8; p += 8, len -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 29;
    }
    uint64_t w = 0;
    memcpy(&w, p, len);
    h = (h ^ w) * 0x94D049BB133111EBULL;
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ULL;
    return h ^ (h >> 32);
}

void hash64_hex(uint64_t h, char *out) { snprintf(out, 17, "%016llx", (unsigned long long)h); }

size_t fmt_i64(int64_t v, char *out)
{
    char tmp[20];
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    size_t n = 0, o = 0;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        out[o++] = '-';
    while (n)
        out[o++] = tmp[--n];
    out[o] = 0;
    return o;
}

size_t fmt_fixed6(double x, char *out)
{
    /* 0 <= x < 2^44 (what a score or a probability is): x = m / 2^sh exactly, so x * 10^6 = m * 10^6 / 2^sh,
     * whose integer part and remainder come out exact in 128 bits; the rest, and NaN, go through printf */
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    int ex = (int)(bits >> 52 & 0x7ff);
    if ((bits >> 63) || ex >= 1023 + 44) {
        int n = snprintf(out, 32, "%.6f", x);
        return n > 0 ? (size_t)n : 0;
    }
    uint64_t m = bits & ((1ULL << 52) - 1);
    if (ex)
        m |= 1ULL << 52;
    else
        ex = 1; /* subnormal */
    int sh = 1075 - ex; /* x = m / 2^sh, sh > 52 - 44 */
    uint64_t q;         /* x * 10^6 rounded half to even */
    if (sh >= 75) {
        q = 0; /* m * 10^6 < 2^73 <= half of 2^sh: below 0.5e-6 */
    } else {
        __extension__ typedef unsigned __int128 u128;
        u128 p = (u128)m * 1000000u;
        u128 rem = p & (((u128)1 << sh) - 1), half = (u128)1 << (sh - 1);
        q = (uint64_t)(p >> sh);
        if (rem > half || (rem == half && (q & 1)))
            q++;
    }
    size_t o = fmt_i64((int64_t)(q / 1000000), out);
    uint64_t f = q % 1000000;
    out[o++] = '.';
    for (int i = 5; i >= 0; i--, f /= 10)
        out[o + (size_t)i] = (char)('0' + f % 10);
    o += 6;
    out[o] = 0;
    return o;
}

bool str_copy(char *dst, size_t cap, const char *src)
{
    if (cap == 0)
        return false;
    size_t n = src ? strlen(src) : 0;
    bool fits = n < cap;
    if (!fits)
        n = cap - 1;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
    return fits;
}

bool duration_parse_ms(const char *s, size_t len, int64_t *out_ms)
{
    size_t i = 0;
    int64_t v = 0;
    if (len == 0)
        return false;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        if (v > (INT64_MAX / 10) - 10)
            return false;
        v = v * 10 + (s[i] - '0');
        i++;
    }
    if (i == 0)
        return false;
    const char *u = s + i;
    size_t ulen = len - i;
    int64_t mult;
    if (ulen == 2 && u[0] == 'm' && u[1] == 's')
        mult = 1;
    else if (ulen == 1 && u[0] == 's')
        mult = 1000;
    else if (ulen == 1 && u[0] == 'm')
        mult = 60 * 1000;
    else if (ulen == 1 && u[0] == 'h')
        mult = 3600 * 1000;
    else if (ulen == 1 && u[0] == 'd')
        mult = 24 * 3600 * 1000;
    else
        return false;
    if (v > INT64_MAX / mult)
        return false;
    *out_ms = v * mult;
    return true;
}

vstatus file_read(const char *path, size_t max, char **buf, size_t *len, verror *e)
{
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return verror_set(e, V_EIO, "cannot open: %s", strerror(errno));
    size_t cap = 65536, n = 0;
    char *b = malloc(cap + 1);
    vstatus rc = V_OK;
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap)
            break;
        if (cap >= max) {
            rc = verror_set(e, V_EINVAL, "larger than %zu MiB", max >> 20);
            break;
        }
        char *nb = realloc(b, cap * 2 + 1);
        if (!nb)
            free(b);
        b = nb;
        cap *= 2;
    }
    if (!b)
        rc = verror_set(e, V_ENOMEM, "out of memory");
    else if (rc == V_OK && ferror(f))
        rc = verror_set(e, V_EIO, "read failed: %s", errno == EISDIR ? "it is a directory, not a file" : strerror(errno));
    fclose(f);
    if (rc != V_OK) {
        free(b);
        return rc;
    }
    b[n] = 0;
    *buf = b;
    *len = n;
    return V_OK;
}

int file_count_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[8192];
    int n = 0;
    while (fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

void *bigmem_alloc(bigmem *b, size_t n)
{
    b->len = n + BIGMEM_HUGE_PAGE;
    b->map = mmap(NULL, b->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b->map == MAP_FAILED) {
        b->map = NULL;
        return NULL;
    }
    uintptr_t p = ((uintptr_t)b->map + BIGMEM_HUGE_PAGE - 1) & ~(uintptr_t)(BIGMEM_HUGE_PAGE - 1);
    madvise((void *)p, n, MADV_HUGEPAGE);
    return (void *)p;
}

void bigmem_free(bigmem *b)
{
    if (b->map)
        munmap(b->map, b->len);
    b->map = NULL;
}

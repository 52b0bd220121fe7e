/* fuzz_ack.c - libFuzzer target: JetStream ack-subject parsing (broker_parse_ack_subject, engine/broker.c),
 * which gives every pulled message its stream sequence, delivery count and store time. Two halves:
 *   - structure-aware: a v1 ($JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>) or v2
 *     (domain and account hash in front, perhaps a random token at the end) subject built from the input's
 *     numbers and names must parse to exactly those numbers;
 *   - raw: any string either is refused or yields numbers that are the decimal tokens at the right places,
 *     within uint64 (a token too long for uint64 must be refused, not wrapped). */
#include "broker.h"
#include "fdp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *subject)
{
    fprintf(stderr, "fuzz_ack: %s: '%s'\n", what, subject);
    abort();
}

/* The value of a decimal token, or false when it is empty, not all digits or over UINT64_MAX. */
static bool u64_token(const char *s, size_t n, uint64_t *out)
{
    unsigned __int128 v = 0;
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0'); /* leading zeros keep v small; past UINT64_MAX we stop */
        if (v > UINT64_MAX)
            return false;
    }
    *out = (uint64_t)v;
    return true;
}

static void raw(const char *s)
{
    js_meta m;
    if (!broker_parse_ack_subject(s, &m))
        return;
    if (strncmp(s, "$JS.ACK.", 8) != 0)
        fail("accepted a subject that is not an ack subject", s);
    const char *tok[32];
    size_t len[32];
    int n = 0;
    for (const char *p = s + 8; n < 32;) {
        const char *dot = strchr(p, '.');
        tok[n] = p;
        len[n++] = dot ? (size_t)(dot - p) : strlen(p);
        if (!dot)
            break;
        p = dot + 1;
    }
    int base = n == 7 || (n == 8 && len[7] == 0) ? 0 : 2;
    uint64_t d, sseq, ts, pend;
    if (n < 7 || !u64_token(tok[base + 2], len[base + 2], &d) || !u64_token(tok[base + 3], len[base + 3], &sseq) ||
        !u64_token(tok[base + 5], len[base + 5], &ts) || !u64_token(tok[base + 6], len[base + 6], &pend))
        fail("accepted a subject whose numbers are not uint64 decimal tokens", s);
    if (m.delivered != d || m.stream_seq != sseq || m.timestamp_ns != (int64_t)ts || m.pending != pend)
        fail("numbers differ from the subject's tokens", s);
}

static size_t name(fdp *p, char *out, size_t cap)
{
    size_t n = fdp_string(p, out, cap, 24, true);
    if (n == 0) {
        out[0] = 'S';
        out[1] = 0;
        n = 1;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char s[512];
    fdp p = fdp_make(data, size);
    if (fdp_bool(&p)) {
        size_t n = fdp_string(&p, s, sizeof s, sizeof s - 1, false);
        (void)n;
        raw(s);
        return 0;
    }
    char stream[32], consumer[32], domain[32], hash[32], rnd[32];
    name(&p, stream, sizeof stream);
    name(&p, consumer, sizeof consumer);
    uint64_t d = fdp_range(&p, 0, UINT64_MAX), sseq = fdp_range(&p, 0, UINT64_MAX), cseq = fdp_u32(&p);
    uint64_t ts = fdp_range(&p, 0, INT64_MAX), pend = fdp_range(&p, 0, UINT64_MAX);
    int version = (int)fdp_range(&p, 1, 3); /* 3: v2 with the random token */
    int o;
    if (version == 1) {
        o = snprintf(s, sizeof s, "$JS.ACK.%s.%s.%llu.%llu.%llu.%llu.%llu", stream, consumer, (unsigned long long)d,
                     (unsigned long long)sseq, (unsigned long long)cseq, (unsigned long long)ts,
                     (unsigned long long)pend);
    } else {
        name(&p, domain, sizeof domain);
        name(&p, hash, sizeof hash);
        name(&p, rnd, sizeof rnd);
        o = snprintf(s, sizeof s, "$JS.ACK.%s.%s.%s.%s.%llu.%llu.%llu.%llu.%llu%s%s", domain, hash, stream,
                     consumer, (unsigned long long)d, (unsigned long long)sseq, (unsigned long long)cseq,
                     (unsigned long long)ts, (unsigned long long)pend, version == 3 ? "." : "",
                     version == 3 ? rnd : "");
    }
    if (o <= 0 || (size_t)o >= sizeof s)
        return 0;
    js_meta m;
    if (!broker_parse_ack_subject(s, &m))
        fail("refused a well-formed ack subject", s);
    if (m.delivered != d || m.stream_seq != sseq || m.timestamp_ns != (int64_t)ts || m.pending != pend)
        fail("parsed numbers differ from the ones written", s);
    raw(s);
    return 0;
}

/* log.c - one JSON object a line on stderr (see log.h). A line is formatted into a stack buffer and written
 * with one write(2), so lines from different threads never interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static log_level min_level = LOG_INFO;
static const char *component = "verdict";
static int quiet;

void log_set_level(log_level min) { min_level = min; }
void log_set_component(const char *name) { component = name; }
void log_set_quiet(int q) { quiet = q; }

/* The length of the valid UTF-8 sequence at p (RFC 3629: no overlongs, no surrogates, at most U+10FFFF),
 * or 0 when the bytes there are not one. */
static size_t utf8_len(const unsigned char *p)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    size_t n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80) /* also stops at the terminating NUL */
            return 0;
    if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f) || (c == 0xf0 && p[1] < 0x90) ||
        (c == 0xf4 && p[1] > 0x8f))
        return 0;
    return n;
}

const char *log_esc(const char *s)
{
    static _Thread_local char bufs[8][512];
    static _Thread_local int next;
    char *out = bufs[next++ & 7];
    size_t o = 0;
    /* 7 bytes of room for the longest step (a \u escape or a 4-byte character) and the NUL */
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p && o < sizeof bufs[0] - 7; p++) {
        if (*p == '"' || *p == '\\') {
            out[o++] = '\\';
            out[o++] = (char)*p;
        } else if (*p < 0x20) {
            o += (size_t)snprintf(out + o, 7, "\\u%04x", *p);
        } else if (*p < 0x80) {
            out[o++] = (char)*p;
        } else {
            /* a log line must stay valid JSON: a byte that is not part of UTF-8 becomes U+FFFD */
            size_t n = utf8_len(p);
            if (n == 0) {
                memcpy(out + o, "\xef\xbf\xbd", 3);
                o += 3;
            } else {
                memcpy(out + o, p, n);
                o += n;
                p += n - 1;
            }
        }
    }
    out[o] = 0;
    return out;
}

void log_event(log_level lvl, const char *msg, const char *fields_fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (lvl < min_level || (quiet && lvl < LOG_WARN))
        return;
    char line[2048];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line,
                     "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",\"level\":\"%s\",\"component\":\"%s\","
                     "\"msg\":\"%s\"",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(tv.tv_usec / 1000), names[lvl], component, log_esc(msg));
    if (fields_fmt && fields_fmt[0] && n > 0 && (size_t)n < sizeof line - 2) {
        line[n++] = ',';
        va_list ap;
        va_start(ap, fields_fmt);
        int m = vsnprintf(line + n, sizeof line - (size_t)n, fields_fmt, ap);
        va_end(ap);
        if (m > 0)
            n += m;
    }
    if (n < 0 || (size_t)n > sizeof line - 3)
        n = (int)sizeof line - 3;
    line[n++] = '}';
    line[n++] = '\n';
    ssize_t w = write(2, line, (size_t)n);
    (void)w;
}

const char *log_mask(const char *v, char *out, unsigned cap)
{
    if (cap == 0)
        return "";
    size_t n = v ? strlen(v) : 0, show = n >= 8 ? 4 : 0, o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++)
        out[o++] = i + show >= n ? v[i] : '*';
    out[o] = 0;
    return out;
}

void log_vwarn_line(const char *msg, const char *fmt, va_list ap)
{
    char text[256];
    vsnprintf(text, sizeof text, fmt, ap);
    size_t n = strlen(text);
    while (n && (text[n - 1] == '\n' || text[n - 1] == '\r'))
        text[--n] = 0;
    log_warn(msg, "\"error\":\"%s\"", log_esc(text));
}

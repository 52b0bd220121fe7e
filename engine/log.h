/* log.h - structured logs: one JSON object a line on stderr.
 *
 * Callers pass a message and optional extra members as a printf format producing JSON members
 * (`"stream":"%s","seq":%llu`). Strings from outside (error texts, file names) go through log_esc() first.
 * Never pass card ids, IPs, emails or secrets: the log is for operators, not for data. */
#ifndef VERDICT_LOG_H
#define VERDICT_LOG_H

#include <stdarg.h>

typedef enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

void log_set_level(log_level min);
/* Sets a component name included in every line (e.g. "serve", "demo"). */
void log_set_component(const char *name);
/* When quiet, only warnings and errors are written (used by the demo for the engine it embeds). */
void log_set_quiet(int quiet);

void log_event(log_level lvl, const char *msg, const char *fields_fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A library's own printf-style message (libmicrohttpd's logger) as a warning: msg, and the formatted text, trailing
 * newlines cut, as "error". */
void log_vwarn_line(const char *msg, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* JSON-escapes s into one of a few rotating thread-local buffers (valid for the next few calls). */
const char *log_esc(const char *s);

/* Card data as the operator tools show it (the logs leave it out altogether): every character '*' but the
 * last four, and all of them '*' when the value is shorter than eight, so a token can be recognised, never
 * read back. Writes into out (cap bytes; longer values are cut to cap-1) and returns out; "" stays "". */
const char *log_mask(const char *v, char *out, unsigned cap);

#define log_info(msg, ...) log_event(LOG_INFO, msg, __VA_ARGS__)
#define log_warn(msg, ...) log_event(LOG_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...) log_event(LOG_ERROR, msg, __VA_ARGS__)

#endif

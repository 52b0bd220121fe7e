/* crshim.c - runs the tests registered through the Criterion stand-in (criterion/criterion.h in this
 * directory) in this process, in registration order (file order), for the ThreadSanitizer build. */
#include "criterion/criterion.h"

#include <fnmatch.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static struct crs_test *tests, **tail = &tests;
static struct crs_suite *suites;
static const struct crs_test *current;

void crs_register(struct crs_test *t)
{
    *tail = t;
    tail = &t->next;
}

void crs_register_suite(struct crs_suite *s)
{
    s->next = suites;
    suites = s;
}

void crs_fail(const char *file, int line, const char *expr, const char *fmt, ...)
{
    fprintf(stderr, "[FAIL] %s::%s: %s:%d: assertion failed: %s\n", current ? current->suite : "?",
            current ? current->name : "?", file, line, expr);
    if (fmt[0] && !(fmt[0] == ' ' && fmt[1] == 0)) {
        va_list ap;
        va_start(ap, fmt);
        fputs("[----]   ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
    fflush(stderr);
    _exit(1); /* no clean-up: children die with us (harness.h), temporary files may stay */
}

void crs_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("[----] ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static const struct crs_params *suite_params(const char *name)
{
    for (const struct crs_suite *s = suites; s; s = s->next)
        if (strcmp(s->name, name) == 0)
            return &s->p;
    return NULL;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    const char *filter = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc)
            filter = argv[++i];
        else if (strncmp(argv[i], "--filter=", 9) == 0)
            filter = argv[i] + 9;
        else if (strcmp(argv[i], "--list") == 0 || strcmp(argv[i], "-l") == 0) {
            for (const struct crs_test *t = tests; t; t = t->next)
                printf("%s/%s\n", t->suite, t->name);
            return 0;
        }
    }
    int ran = 0, skipped = 0;
    for (const struct crs_test *t = tests; t; t = t->next) {
        char full[512];
        snprintf(full, sizeof full, "%s/%s", t->suite, t->name);
        if ((filter && fnmatch(filter, full, FNM_EXTMATCH) != 0) || t->p.disabled) {
            skipped++;
            continue;
        }
        const struct crs_params *sp = suite_params(t->suite);
        double timeout = t->p.timeout > 0 ? t->p.timeout : sp ? sp->timeout : 0;
        /* as Criterion: the suite's init, then the test's; the test's fini, then the suite's */
        void (*sinit)(void) = sp ? sp->init : NULL, (*sfini)(void) = sp ? sp->fini : NULL;
        current = t;
        fprintf(stderr, "[RUN ] %s::%s\n", t->suite, t->name);
        double start = mono_s();
        /* ThreadSanitizer slows everything down; the alarm only stops a test that hangs */
        alarm(timeout > 0 ? (unsigned)(timeout * 3) : 0);
        if (sinit)
            sinit();
        if (t->p.init)
            t->p.init();
        t->fn();
        if (t->p.fini)
            t->p.fini();
        if (sfini)
            sfini();
        alarm(0);
        fprintf(stderr, "[PASS] %s::%s: (%.2fs)\n", t->suite, t->name, mono_s() - start);
        ran++;
    }
    current = NULL;
    fprintf(stderr, "[====] Synthesis: Tested: %d | Passing: %d | Skipped: %d\n", ran, ran, skipped);
    return 0;
}

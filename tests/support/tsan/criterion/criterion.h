/* criterion/criterion.h (ThreadSanitizer stand-in) - the part of Criterion's API the tests use, for `make tsan`.
 *
 * Criterion runs every test in a forked BoxFort worker, and BoxFort's inheritable arena cannot be mapped
 * under ThreadSanitizer ("Could not initialize inheritable arena"), so a TSan build cannot use it. This header
 * sits first on the include path of the TSan test executables only (CMakeLists.txt, VERDICT_TSAN): the same
 * test sources compile against it, and crshim.c runs their tests one after another in the test process itself,
 * where ThreadSanitizer sees every thread. Differences from Criterion, all deliberate: the first failed
 * assertion ends the process (exit 1) after printing file:line, the expression and the message (the engines
 * and servers it started die with it: tests/support/harness.h); a test's .timeout is an alarm() that kills the
 * process; --filter takes the same suite/name glob and other Criterion options are accepted and ignored. */
#ifndef VERDICT_TSAN_CRITERION_SHIM_H
#define VERDICT_TSAN_CRITERION_SHIM_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct crs_params {
    int unused_; /* lets the macros write {.unused_ = 0, __VA_ARGS__} when no parameter is given */
    void (*init)(void);
    void (*fini)(void);
    double timeout; /* seconds, 0: none */
    bool disabled;
    const char *description;
};

struct crs_test {
    const char *suite, *name;
    void (*fn)(void);
    struct crs_params p;
    struct crs_test *next;
};

struct crs_suite {
    const char *name;
    struct crs_params p;
    struct crs_suite *next;
};

void crs_register(struct crs_test *t);
void crs_register_suite(struct crs_suite *s);
void crs_fail(const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));
void crs_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define Test(suite, name, ...)                                                                                   \
    static void crs_fn_##suite##_##name(void);                                                                 \
    static struct crs_test crs_t_##suite##_##name = {#suite, #name, crs_fn_##suite##_##name, {.unused_ = 0, __VA_ARGS__},  \
                                                     NULL};                                                      \
    __attribute__((constructor)) static void crs_reg_##suite##_##name(void)                                    \
    {                                                                                                            \
        crs_register(&crs_t_##suite##_##name);                                                                 \
    }                                                                                                            \
    static void crs_fn_##suite##_##name(void)

#define TestSuite(suite, ...)                                                                                    \
    static struct crs_suite crs_s_##suite = {#suite, {.unused_ = 0, __VA_ARGS__}, NULL};                                  \
    __attribute__((constructor)) static void crs_regs_##suite(void) { crs_register_suite(&crs_s_##suite); }

/* " " __VA_ARGS__: an absent message becomes " " (crs_fail prints none), a literal format stays first */
#define cr_assert(cond, ...)                                                                                     \
    do {                                                                                                         \
        if (!(cond))                                                                                             \
            crs_fail(__FILE__, __LINE__, #cond, " " __VA_ARGS__);                                                 \
    } while (0)
#define cr_assert_not(cond, ...) cr_assert(!(cond), __VA_ARGS__)
#define cr_assert_eq(a, b, ...) cr_assert((a) == (b), __VA_ARGS__)
#define cr_assert_neq(a, b, ...) cr_assert((a) != (b), __VA_ARGS__)
#define cr_assert_lt(a, b, ...) cr_assert((a) < (b), __VA_ARGS__)
#define cr_assert_leq(a, b, ...) cr_assert((a) <= (b), __VA_ARGS__)
#define cr_assert_gt(a, b, ...) cr_assert((a) > (b), __VA_ARGS__)
#define cr_assert_geq(a, b, ...) cr_assert((a) >= (b), __VA_ARGS__)
#define cr_assert_null(p, ...) cr_assert((p) == NULL, __VA_ARGS__)
#define cr_assert_not_null(p, ...) cr_assert((p) != NULL, __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...) cr_assert(strcmp((a), (b)) == 0, __VA_ARGS__)
#define cr_assert_arr_eq(a, b, size, ...) cr_assert(memcmp((a), (b), (size)) == 0, __VA_ARGS__)
#define cr_assert_str_neq(a, b, ...) cr_assert(strcmp((a), (b)) != 0, __VA_ARGS__)
#define cr_assert_float_eq(a, b, eps, ...) cr_assert(fabs((double)(a) - (double)(b)) <= (eps), __VA_ARGS__)
#define cr_assert_fail(...) crs_fail(__FILE__, __LINE__, "cr_assert_fail", " " __VA_ARGS__)
#define cr_log_info(...) crs_log(__VA_ARGS__)

#endif

/* test_log.c - the structured log's string escaping (log_esc): every log line must stay one valid JSON object,
 * whatever bytes an outside string (an error text, a file name, a rules source) carries. */
#include "log.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

/* log_esc(s) between quotes, parsed as JSON; the decoded string in out. */
static bool round_trip(const char *s, char *out, size_t cap)
{
    char quoted[1100];
    snprintf(quoted, sizeof quoted, "\"%s\"", log_esc(s));
    json_error_t err;
    json_t *j = json_loads(quoted, JSON_DECODE_ANY, &err);
    bool ok = j && json_is_string(j) && json_string_length(j) < cap;
    if (ok)
        memcpy(out, json_string_value(j), json_string_length(j) + 1);
    json_decref(j);
    return ok;
}

Test(log, esc_keeps_text_and_escapes_json_specials)
{
    char out[600];
    cr_assert(round_trip("plain \"quoted\" back\\slash\nnew line\ttab \x01", out, sizeof out));
    cr_assert_str_eq(out, "plain \"quoted\" back\\slash\nnew line\ttab \x01");
    cr_assert(round_trip("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x92\xb3", out, sizeof out)); /* é € 💳 */
    cr_assert_str_eq(out, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x92\xb3");
}

/* Found by tests/fuzz/fuzz_escape.c: bytes that are not UTF-8 were copied through, so the log line was not
 * valid JSON (jq and log shippers reject it). Now each such byte becomes U+FFFD. */
Test(log, esc_output_is_valid_json_for_bytes_that_are_not_utf8)
{
    static const char *const bad[] = {
        "\xff\xfe",             /* never valid */
        "\xc0\xaf",             /* overlong '/' */
        "\xed\xa0\x80",         /* a UTF-16 surrogate */
        "\xf4\x90\x80\x80",     /* beyond U+10FFFF */
        "\xe2\x82",             /* cut short at the end */
        "\xe2\x82 x",           /* cut short in the middle */
        "\x80 continuation",    /* a lone continuation byte */
    };
    char out[600];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert(round_trip(bad[i], out, sizeof out), "log_esc of case %zu is not a JSON string", i);
    cr_assert(round_trip("a\xff" "b", out, sizeof out));
    cr_assert_str_eq(out, "a\xef\xbf\xbd" "b"); /* U+FFFD in place of the bad byte */
}

Test(log, esc_truncates_long_strings_to_valid_json)
{
    char s[2000], out[600];
    memset(s, 'x', sizeof s - 1);
    s[sizeof s - 1] = 0;
    for (int i = 0; i < 1990; i += 7)
        s[i] = (char)(i % 3 ? '\xe2' : '"'); /* cut sequences and escapes near every boundary */
    cr_assert(round_trip(s, out, sizeof out));
}

/* log_mask: how the operator tools show card data (the logs leave it out): the last four characters of a
 * value of eight or more, nothing of a shorter one. */
Test(log, mask_shows_at_most_the_last_four_characters)
{
    char b[64];
    cr_expect_str_eq(log_mask("tok_4000123412349876", b, sizeof b), "****************9876");
    cr_expect_str_eq(log_mask("10.0.0.1", b, sizeof b), "****.0.1");
    cr_expect_str_eq(log_mask("dev_123", b, sizeof b), "*******", "under eight: all masked");
    cr_expect_str_eq(log_mask("", b, sizeof b), "");
    cr_expect_str_eq(log_mask(NULL, b, sizeof b), "");
    cr_expect_str_eq(log_mask("abcdefghij", b, 5), "****", "cut to the buffer, never past it");
}

/* fuzz_escape.c - libFuzzer target: the escaping functions that turn outside strings into something safe.
 *   - replica_key_token / replica_list_key (engine/replica.c): any list value or account id becomes a valid
 *     KV key token: the value itself when it is 1-128 of [A-Za-z0-9_=/-] and dots with no empty token and no
 *     reserved prefix, else h_<16 hex>; a verbatim token never looks like an escaped one, and list keys are
 *     <list>.<token> only for valid list names;
 *   - log_esc (engine/log.c): any string, put between quotes, is a valid JSON string (the log is one JSON
 *     object a line), and short strings come back unchanged when parsed. */
#include "fdp.h"
#include "log.h"
#include "replica.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_escape: %s\n", what);
    abort();
}

static bool key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '=' || c == '/' || c == '.';
}

/* A valid NATS KV key (nats.c's validKeyRe: [-/_=\.a-zA-Z0-9]+, no leading or trailing dot) with no empty
 * token, so every dot-separated part is a subject token. */
static bool kv_key_ok(const char *k, size_t n)
{
    if (n == 0 || k[0] == '.' || k[n - 1] == '.' || strlen(k) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!key_char(k[i]) || (k[i] == '.' && k[i + 1] == '.'))
            return false;
    return true;
}

static bool verbatim_expected(const char *v, size_t n)
{
    if (n == 0 || n > REPLICA_VALUE_MAX || memchr(v, 0, n))
        return false;
    if ((n >= 2 && v[0] == 'h' && v[1] == '_') || (n >= 3 && memcmp(v, "_kv", 3) == 0))
        return false;
    char tmp[REPLICA_VALUE_MAX + 1];
    memcpy(tmp, v, n);
    tmp[n] = 0;
    return kv_key_ok(tmp, n);
}

static bool escaped_form(const char *k, size_t n)
{
    if (n != 18 || k[0] != 'h' || k[1] != '_')
        return false;
    for (size_t i = 2; i < 18; i++)
        if (!((k[i] >= '0' && k[i] <= '9') || (k[i] >= 'a' && k[i] <= 'f')))
            return false;
    return true;
}

static void keys(fdp *p)
{
    const uint8_t *v;
    size_t n = fdp_bytes(p, 300, &v);
    char tok[REPLICA_VALUE_MAX + 1];
    size_t t = replica_key_token(tok, sizeof tok, (const char *)v, n);
    if (n == 0) {
        if (t != 0)
            fail("an empty value got a key token");
        return;
    }
    if (!kv_key_ok(tok, t))
        fail("a key token is not a valid KV key");
    if (verbatim_expected((const char *)v, n)) {
        if (t != n || memcmp(tok, v, n) != 0)
            fail("a plain value was escaped");
    } else if (!escaped_form(tok, t)) {
        fail("a value that needs escaping was not escaped as h_<16 hex>");
    }
    char again[REPLICA_VALUE_MAX + 1];
    if (replica_key_token(again, sizeof again, (const char *)v, n) != t || memcmp(again, tok, t) != 0)
        fail("escaping is not deterministic");

    char list[80];
    size_t ln = fdp_string(p, list, sizeof list, 70, fdp_range(p, 0, 3) != 0);
    char key[REPLICA_KEY_MAX + 1];
    size_t k = replica_list_key(key, sizeof key, list, ln, (const char *)v, n);
    bool list_ok = ln >= 1 && ln <= 63;
    for (size_t i = 0; i < ln && list_ok; i++)
        list_ok = key_char(list[i]) && list[i] != '.' && list[i] != '=' && list[i] != '/';
    if (!list_ok) {
        if (k != 0)
            fail("a list key was made for an invalid list name");
        return;
    }
    if (k != ln + 1 + t || memcmp(key, list, ln) != 0 || key[ln] != '.' || memcmp(key + ln + 1, tok, t) != 0 ||
        !kv_key_ok(key, k))
        fail("a list key is not <list>.<token>");
}

static void logs(fdp *p)
{
    char s[400];
    size_t n = fdp_string(p, s, sizeof s, sizeof s - 1, false);
    const char *esc = log_esc(s);
    size_t en = strlen(esc);
    char quoted[1024];
    quoted[0] = '"';
    memcpy(quoted + 1, esc, en);
    quoted[en + 1] = '"';
    quoted[en + 2] = 0;
    json_error_t err;
    json_t *j = json_loads(quoted, JSON_DECODE_ANY, &err);
    if (!j || !json_is_string(j)) {
        fprintf(stderr, "fuzz_escape: log_esc output is not a JSON string (%s): %s\n", err.text, quoted);
        abort();
    }
    /* 80 bytes escape to at most 480, well inside log_esc's buffer: no truncation, so they must come back */
    if (n <= 80 && (json_string_length(j) != n || memcmp(json_string_value(j), s, n) != 0)) {
        /* bytes that are not UTF-8 may be replaced; everything else must survive */
        bool ascii = true;
        for (size_t i = 0; i < n; i++)
            ascii &= (unsigned char)s[i] < 0x80;
        if (ascii)
            fail("log_esc changed an ASCII string");
    }
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fdp p = fdp_make(data, size);
    if (fdp_bool(&p))
        keys(&p);
    else
        logs(&p);
    return 0;
}

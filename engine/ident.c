/* ident.c - identifier and subject checks (see ident.h). */
#include "ident.h"

#include <string.h>

static bool id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

bool ident_txn_id_valid(const char *s)
{
    if (!s)
        return false;
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= IDENT_TXN_ID_MAX || !id_char(s[n]))
            return false;
    return n > 0;
}

bool ident_token_valid(const char *s, size_t len, size_t max)
{
    if (!s || len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!id_char(s[i]))
            return false;
    return true;
}

bool ident_list_name_valid(const char *s, size_t len)
{
    return ident_token_valid(s, len, IDENT_NAME_MAX);
}

bool ident_rule_id_valid(const char *s, size_t len)
{
    if (!s || len == 0 || len > IDENT_NAME_MAX || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

bool ident_subject_valid(const char *s)
{
    if (!s || !s[0])
        return false;
    size_t n = strlen(s);
    if (n > IDENT_SUBJECT_MAX)
        return false;
    size_t tok = 0; /* start of the current token */
    for (size_t i = 0; i <= n; i++) {
        char c = s[i];
        if (c == '.' || c == 0) {
            size_t len = i - tok;
            if (len == 0)
                return false; /* empty token: "a..b", ".a", "a." */
            if (len == 1 && (s[tok] == '*' || s[tok] == '>'))
                return false;
            tok = i + 1;
            continue;
        }
        if (c <= ' ' || c >= 0x7f)
            return false; /* space, LF, CR, tab, any other control byte, non-ASCII */
    }
    return true;
}

bool ident_subject_under(const char *s, const char *prefixes)
{
    if (!s || !prefixes)
        return false;
    const char *p = prefixes;
    while (*p) {
        while (*p == ',' || *p == ' ')
            p++;
        const char *end = p;
        while (*end && *end != ',')
            end++;
        size_t n = (size_t)(end - p);
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '.'))
            n--;
        if (n > 0 && strncmp(s, p, n) == 0 && s[n] == '.' && s[n + 1])
            return true;
        p = end;
    }
    return false;
}

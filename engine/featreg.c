/* featreg.c - the feature registry and the transaction/derived stage of the feature vector (see featreg.h). */
#include "featreg.h"

#include "ident.h"

#include "verdict/v1/verdict.pb-c.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    feat_type type;
    feat_kind kind;
} builtins[FEAT_BUILTIN_COUNT] = {
    [FEAT_TXN_ID] = {"txn_id", FT_STR, FK_TXN},
    [FEAT_CREATED_AT_MS] = {"created_at_ms", FT_NUM, FK_TXN},
    [FEAT_AMOUNT_MINOR] = {"amount_minor", FT_NUM, FK_TXN},
    [FEAT_CURRENCY] = {"currency", FT_STR, FK_TXN},
    [FEAT_CARD_ID] = {"card_id", FT_STR, FK_TXN},
    [FEAT_ACCOUNT_ID] = {"account_id", FT_STR, FK_TXN},
    [FEAT_MERCHANT_ID] = {"merchant_id", FT_STR, FK_TXN},
    [FEAT_MCC] = {"mcc", FT_NUM, FK_TXN},
    [FEAT_MERCHANT_COUNTRY] = {"merchant_country", FT_STR, FK_TXN},
    [FEAT_CARD_COUNTRY] = {"card_country", FT_STR, FK_TXN},
    [FEAT_IP] = {"ip", FT_STR, FK_TXN},
    [FEAT_IP_COUNTRY] = {"ip_country", FT_STR, FK_TXN},
    [FEAT_DEVICE_ID] = {"device_id", FT_STR, FK_TXN},
    [FEAT_CHANNEL] = {"channel", FT_STR, FK_TXN},
    [FEAT_EMAIL_HASH] = {"email_hash", FT_STR, FK_TXN},
    [FEAT_CARD_BIN] = {"card_bin", FT_STR, FK_TXN},
    [FEAT_AMOUNT] = {"amount", FT_NUM, FK_DERIVED},
    [FEAT_HOUR_OF_DAY] = {"hour_of_day", FT_NUM, FK_DERIVED},
    [FEAT_DAY_OF_WEEK] = {"day_of_week", FT_NUM, FK_DERIVED},
    [FEAT_CROSS_BORDER] = {"cross_border", FT_BOOL, FK_DERIVED},
    [FEAT_IP_COUNTRY_MISMATCH] = {"ip_country_mismatch", FT_BOOL, FK_DERIVED},
    [FEAT_SCORE] = {"score", FT_NUM, FK_MODEL},
    [FEAT_CHANNEL_CODE] = {"channel_code", FT_NUM, FK_DERIVED},
};

static const struct {
    const char *name;
    feat_type type;
} profile_fields[] = {
    {"account_age_days", FT_NUM}, /* days since the account was opened */
    {"home_country", FT_STR},     /* ISO 3166 alpha-2 */
    {"avg_amount_minor", FT_NUM}, /* typical ticket size */
    {"kyc_level", FT_NUM},        /* 0 none .. 3 full */
    {"risk_tier", FT_STR},        /* "low", "medium", "high" */
    {"chargebacks_90d", FT_NUM},
};

void featreg_init(featreg *r)
{
    memset(r, 0, sizeof *r);
    for (int i = 0; i < FEAT_BUILTIN_COUNT; i++) {
        feat_def *d = &r->defs[i];
        str_copy(d->name, sizeof d->name, builtins[i].name);
        d->type = builtins[i].type;
        d->kind = builtins[i].kind;
        d->key_feat = -1;
        d->value_feat = -1;
    }
    r->n = FEAT_BUILTIN_COUNT;
}

int featreg_find(const featreg *r, const char *name, size_t len)
{
    for (int i = 0; i < r->n; i++)
        if (strlen(r->defs[i].name) == len && memcmp(r->defs[i].name, name, len) == 0)
            return i;
    return -1;
}

static int intern(featreg *r, const feat_def *d, verror *e)
{
    int id = featreg_find(r, d->name, strlen(d->name));
    if (id >= 0)
        return id;
    if (r->n >= FEAT_MAX)
        return verror_set(e, V_ENOMEM, "too many features (at most %d): simplify the rules or model", FEAT_MAX);
    r->defs[r->n] = *d;
    return r->n++;
}

static void window_str(int64_t ms, char *out, size_t cap)
{
    if (ms % (3600 * 1000) == 0)
        snprintf(out, cap, "%lldh", (long long)(ms / (3600 * 1000)));
    else if (ms % (60 * 1000) == 0)
        snprintf(out, cap, "%lldm", (long long)(ms / (60 * 1000)));
    else if (ms % 1000 == 0)
        snprintf(out, cap, "%llds", (long long)(ms / 1000));
    else
        snprintf(out, cap, "%lldms", (long long)ms);
}

int featreg_velocity(featreg *r, vel_agg agg, int value_feat, int key_feat, int64_t window_ms, verror *e)
{
    if (key_feat < 0 || key_feat >= r->n || r->defs[key_feat].type != FT_STR)
        return verror_set(e, V_EINVAL, "a velocity key must be a string field such as card_id");
    if (window_ms < 60 * 1000 || window_ms > 24 * 3600 * 1000)
        return verror_set(e, V_EINVAL, "a velocity window must be between 1m and 24h");
    feat_def d = {.kind = FK_VELOCITY, .agg = agg, .key_feat = key_feat, .value_feat = -1, .window_ms = window_ms};
    char w[32];
    window_str(window_ms, w, sizeof w);
    const char *key = r->defs[key_feat].name;
    int n = 0;
    switch (agg) {
    case VEL_COUNT:
        d.type = FT_NUM;
        n = snprintf(d.name, sizeof d.name, "count(%s,%s)", key, w);
        break;
    case VEL_SUM:
        if (value_feat < 0 || value_feat >= r->n || r->defs[value_feat].type != FT_NUM)
            return verror_set(e, V_EINVAL, "sum() needs a numeric field such as amount_minor");
        d.type = FT_NUM;
        d.value_feat = value_feat;
        n = snprintf(d.name, sizeof d.name, "sum(%s,%s,%s)", r->defs[value_feat].name, key, w);
        break;
    case VEL_DISTINCT:
        if (value_feat < 0 || value_feat >= r->n || r->defs[value_feat].type != FT_STR)
            return verror_set(e, V_EINVAL, "distinct() needs a string field such as device_id");
        d.type = FT_NUM;
        d.value_feat = value_feat;
        n = snprintf(d.name, sizeof d.name, "distinct(%s,%s,%s)", key, r->defs[value_feat].name, w);
        break;
    default:
        return verror_set(e, V_EINVAL, "unknown velocity aggregate");
    }
    /* a cut name could equal another feature's and be interned as that one */
    if (n < 0 || (size_t)n >= sizeof d.name)
        return verror_set(e, V_EINVAL, "feature name too long: %.60s...", d.name);
    return intern(r, &d, e);
}

_Static_assert(sizeof(((feat_def *)0)->arg) > IDENT_NAME_MAX, "a list name must fit a feature's argument");

int featreg_list(featreg *r, const char *list, size_t list_len, int key_feat, verror *e)
{
    if (!ident_list_name_valid(list, list_len))
        return verror_set(e, V_EINVAL, "a list name is 1-%d of [A-Za-z0-9_-]", IDENT_NAME_MAX);
    if (key_feat < 0 || key_feat >= r->n || r->defs[key_feat].type != FT_STR)
        return verror_set(e, V_EINVAL, "list membership needs a string field such as card_id");
    feat_def d = {.kind = FK_LIST, .type = FT_BOOL, .key_feat = key_feat, .value_feat = -1};
    memcpy(d.arg, list, list_len);
    int n = snprintf(d.name, sizeof d.name, "in_list(%s,%s)", r->defs[key_feat].name, d.arg);
    if (n < 0 || (size_t)n >= sizeof d.name)
        return verror_set(e, V_EINVAL, "feature name too long: %.60s...", d.name);
    return intern(r, &d, e);
}

feat_type featreg_profile_type(const char *field, size_t len, bool *known)
{
    for (size_t i = 0; i < ARRAY_LEN(profile_fields); i++)
        if (strlen(profile_fields[i].name) == len && memcmp(profile_fields[i].name, field, len) == 0) {
            *known = true;
            return profile_fields[i].type;
        }
    *known = false;
    return FT_NUM;
}

int featreg_profile(featreg *r, const char *field, size_t len, verror *e)
{
    bool known;
    feat_type t = featreg_profile_type(field, len, &known);
    if (!known) {
        char buf[256] = "";
        for (size_t i = 0; i < ARRAY_LEN(profile_fields); i++) {
            strncat(buf, i ? ", " : "", sizeof buf - strlen(buf) - 1);
            strncat(buf, profile_fields[i].name, sizeof buf - strlen(buf) - 1);
        }
        return verror_set(e, V_EINVAL, "unknown profile field '%.*s' (known: %s)", (int)len, field, buf);
    }
    feat_def d = {.kind = FK_PROFILE, .type = t, .key_feat = FEAT_ACCOUNT_ID, .value_feat = -1};
    memcpy(d.arg, field, len);
    snprintf(d.name, sizeof d.name, "profile.%s", d.arg);
    return intern(r, &d, e);
}

int featreg_attr(featreg *r, const char *key, size_t len, verror *e)
{
    if (!ident_token_valid(key, len, sizeof(((feat_def *)0)->arg) - 1)) /* and its NUL */
        return verror_set(e, V_EINVAL, "an attribute key is 1-63 of [A-Za-z0-9_-]");
    feat_def d = {.kind = FK_ATTR, .type = FT_STR, .key_feat = -1, .value_feat = -1};
    memcpy(d.arg, key, len);
    snprintf(d.name, sizeof d.name, "attributes.%s", d.arg);
    return intern(r, &d, e);
}

/* Splits "a,b,c" inside parentheses into at most 3 trimmed parts. */
static int split_args(const char *s, size_t len, const char *parts[3], size_t plen[3])
{
    int n = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == ',') {
            if (n == 3)
                return -1;
            size_t a = start, b = i;
            while (a < b && s[a] == ' ')
                a++;
            while (b > a && s[b - 1] == ' ')
                b--;
            parts[n] = s + a;
            plen[n] = b - a;
            n++;
            start = i + 1;
        }
    }
    return n;
}

int featreg_resolve(featreg *r, const char *name, size_t len, verror *e)
{
    int id = featreg_find(r, name, len);
    if (id >= 0)
        return id;
    if (len > 8 && memcmp(name, "profile.", 8) == 0)
        return featreg_profile(r, name + 8, len - 8, e);
    if (len > 11 && memcmp(name, "attributes.", 11) == 0)
        return featreg_attr(r, name + 11, len - 11, e);
    const char *open = memchr(name, '(', len);
    if (!open || name[len - 1] != ')')
        return verror_set(e, V_ENOTFOUND, "unknown feature '%.*s'", (int)len, name);
    size_t fn_len = (size_t)(open - name);
    const char *parts[3];
    size_t plen[3];
    int n = split_args(open + 1, len - fn_len - 2, parts, plen);
    int64_t w = 0;
#define FIND(i) featreg_find(r, parts[i], plen[i])
    if (fn_len == 5 && memcmp(name, "count", 5) == 0 && n == 2 && duration_parse_ms(parts[1], plen[1], &w))
        return featreg_velocity(r, VEL_COUNT, -1, FIND(0), w, e);
    if (fn_len == 3 && memcmp(name, "sum", 3) == 0 && n == 3 && duration_parse_ms(parts[2], plen[2], &w))
        return featreg_velocity(r, VEL_SUM, FIND(0), FIND(1), w, e);
    if (fn_len == 8 && memcmp(name, "distinct", 8) == 0 && n == 3 && duration_parse_ms(parts[2], plen[2], &w))
        return featreg_velocity(r, VEL_DISTINCT, FIND(1), FIND(0), w, e);
    if (fn_len == 7 && memcmp(name, "in_list", 7) == 0 && n == 2)
        return featreg_list(r, parts[1], plen[1], FIND(0), e);
#undef FIND
    return verror_set(e, V_ENOTFOUND, "unknown feature '%.*s'", (int)len, name);
}

int currency_exponent(const char *code)
{
    static const char *zero[] = {"JPY", "KRW", "VND", "CLP", "ISK", "XAF", "XOF", "UGX", "PYG", "RWF"};
    static const char *three[] = {"KWD", "BHD", "OMR", "JOD", "TND", "IQD", "LYD"};
    if (!code)
        return 2;
    for (size_t i = 0; i < ARRAY_LEN(zero); i++)
        if (strcmp(code, zero[i]) == 0)
            return 0;
    for (size_t i = 0; i < ARRAY_LEN(three); i++)
        if (strcmp(code, three[i]) == 0)
            return 3;
    return 2;
}

static void set_str(fval *v, const char *s)
{
    v->type = FT_STR;
    v->present = s && s[0];
    v->str.ptr = s ? s : "";
    v->str.len = s ? (uint32_t)strlen(s) : 0;
}

static void set_num(fval *v, double x)
{
    v->type = FT_NUM;
    v->present = true;
    v->num = x;
}

static void set_bool(fval *v, bool b)
{
    v->type = FT_BOOL;
    v->present = true;
    v->b = b;
}

static bool both_differ(const fval *a, const fval *b)
{
    return a->str.len != b->str.len || memcmp(a->str.ptr, b->str.ptr, a->str.len) != 0;
}

void features_from_txn(const featreg *r, const Verdict__V1__Transaction *t, int64_t event_ms, fval *vals)
{
    static const char *channels[] = {"", "ecom", "pos", "atm", "moto"};
    for (int i = 0; i < r->n; i++) {
        vals[i].type = (uint8_t)r->defs[i].type;
        vals[i].present = false;
        vals[i].num = 0;
    }
    set_str(&vals[FEAT_TXN_ID], t->txn_id);
    set_num(&vals[FEAT_CREATED_AT_MS], (double)t->created_at_ms);
    set_num(&vals[FEAT_AMOUNT_MINOR], (double)t->amount_minor);
    set_str(&vals[FEAT_CURRENCY], t->currency);
    set_str(&vals[FEAT_CARD_ID], t->card_id);
    set_str(&vals[FEAT_ACCOUNT_ID], t->account_id);
    set_str(&vals[FEAT_MERCHANT_ID], t->merchant_id);
    set_num(&vals[FEAT_MCC], (double)t->mcc);
    vals[FEAT_MCC].present = t->mcc != 0;
    set_str(&vals[FEAT_MERCHANT_COUNTRY], t->merchant_country);
    set_str(&vals[FEAT_CARD_COUNTRY], t->card_country);
    set_str(&vals[FEAT_IP], t->ip);
    set_str(&vals[FEAT_IP_COUNTRY], t->ip_country);
    set_str(&vals[FEAT_DEVICE_ID], t->device_id);
    set_str(&vals[FEAT_CHANNEL], (unsigned)t->channel < ARRAY_LEN(channels) ? channels[t->channel] : "");
    set_str(&vals[FEAT_EMAIL_HASH], t->email_hash);
    set_str(&vals[FEAT_CARD_BIN], t->card_bin);

    double scale = 1;
    for (int e = currency_exponent(t->currency); e > 0; e--)
        scale *= 10;
    set_num(&vals[FEAT_AMOUNT], (double)t->amount_minor / scale);
    int64_t secs = event_ms / 1000;
    set_num(&vals[FEAT_HOUR_OF_DAY], (double)((secs / 3600) % 24));
    set_num(&vals[FEAT_DAY_OF_WEEK], (double)(((secs / 86400) + 3) % 7)); /* 1970-01-01 was a Thursday */
    /* the model cannot read strings, so channel also gets its enum number (the proto's, stable by contract) */
    if (t->channel >= VERDICT__V1__CHANNEL__CHANNEL_ECOM && t->channel <= VERDICT__V1__CHANNEL__CHANNEL_MOTO)
        set_num(&vals[FEAT_CHANNEL_CODE], (double)t->channel);
    const fval *mc = &vals[FEAT_MERCHANT_COUNTRY], *cc = &vals[FEAT_CARD_COUNTRY], *ic = &vals[FEAT_IP_COUNTRY];
    if (mc->present && cc->present)
        set_bool(&vals[FEAT_CROSS_BORDER], both_differ(mc, cc));
    if (ic->present && cc->present)
        set_bool(&vals[FEAT_IP_COUNTRY_MISMATCH], both_differ(ic, cc));

    for (int i = FEAT_BUILTIN_COUNT; i < r->n; i++) {
        const feat_def *d = &r->defs[i];
        if (d->kind != FK_ATTR)
            continue;
        for (size_t k = 0; k < t->n_attributes; k++)
            if (t->attributes[k]->key && strcmp(t->attributes[k]->key, d->arg) == 0) {
                set_str(&vals[i], t->attributes[k]->value);
                break;
            }
    }
}

/* fuzz_profile.c - libFuzzer target: profile JSON (engine/replica.c), the values of the verdict_profiles
 * bucket that anyone with KV write rights can put. The parser is static, so this file includes replica.c and
 * drives a replica without a connection: the input's first part is an account id, the rest a JSON value;
 * the value is parsed as the watcher would (profile_parse), stored under the escaped account key
 * (table_put on the table readers see), read back through the public look-up (replica_profile_field) for
 * every field of the schema, and sometimes deleted. Oracle: a refused value leaves no profile; an accepted
 * one returns for each schema field exactly the JSON's value, typed by the schema (numbers finite or not as
 * jansson gives them, strings <= 64 bytes), and nothing for fields the JSON lacks or has as null. The pool of
 * interned strings only grows, as in a long-lived engine; the replica is recreated every 20,000 runs. */
#include "../../engine/replica.c"

#include "fdp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const schema[] = {"account_age_days", "home_country", "avg_amount_minor",
                                     "kyc_level",        "risk_tier",    "chargebacks_90d"};

static void fail(const char *what, const char *field)
{
    fprintf(stderr, "fuzz_profile: %s (field %s)\n", what, field ? field : "-");
    abort();
}

static replica *fresh(replica *old)
{
    if (old)
        replica_stop(old); /* no thread, no connection: frees the tables and the lock */
    replica *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->kind = REPLICA_PROFILES;
    str_copy(r->bucket, sizeof r->bucket, "fuzz_profiles");
    pthread_rwlock_init(&r->lock, NULL);
    atomic_store(&r->ready, true);
    return r;
}

/* What the JSON says about field f: 0 absent or null, 1 present (value in *out), -1 wrong type. */
static int expected(json_t *root, const char *f, feat_type t, fval *out)
{
    json_t *v = json_object_get(root, f);
    if (!v || json_is_null(v))
        return 0;
    out->present = true;
    out->type = (uint8_t)t;
    if (t == FT_NUM && json_is_number(v))
        out->num = json_number_value(v);
    else if (t == FT_BOOL && json_is_boolean(v))
        out->b = json_is_true(v);
    else if (t == FT_STR && json_is_string(v) && json_string_length(v) <= PROFILE_STR_MAX)
        out->str = (fstr){json_string_value(v), (uint32_t)json_string_length(v)};
    else
        return -1;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static replica *r;
    static unsigned runs;
    if (!r || ++runs % 20000 == 0) {
        log_set_level((log_level)(LOG_ERROR + 1)); /* refusals are expected here, not news */
        r = fresh(r);
    }
    fdp p = fdp_make(data, size);
    char account[160];
    size_t alen = fdp_string(&p, account, sizeof account, 150, fdp_bool(&p));
    bool del = fdp_range(&p, 0, 7) == 0;
    char key[REPLICA_VALUE_MAX + 1];
    size_t kn = replica_key_token(key, sizeof key, account, alen);
    if (kn == 0)
        return 0;
    const uint8_t *json;
    size_t jn = fdp_bytes(&p, p.size, &json);

    const char *why = NULL, *field = NULL;
    profile *pr = profile_parse(r, (const char *)json, jn, &why, &field);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)json, jn, 0, &jerr);
    bool object = root && json_is_object(root);
    bool any_bad = false;
    for (size_t i = 0; object && i < ARRAY_LEN(schema); i++) {
        bool known;
        feat_type t = featreg_profile_type(schema[i], strlen(schema[i]), &known);
        fval v = {0};
        any_bad |= expected(root, schema[i], t, &v) < 0;
    }
    if (!pr) {
        if (!why)
            fail("a refusal without a reason", NULL);
        if (object && !any_bad && strcmp(why, "profile string pool full") != 0)
            fail("a well-typed profile was refused", why);
        table_del(r, &r->cur, true, key, kn);
    } else {
        if (!object || any_bad)
            fail("a value that is not a well-typed JSON object was accepted", NULL);
        if (!table_put(r, &r->cur, true, key, kn, pr))
            abort();
    }
    for (size_t i = 0; i < ARRAY_LEN(schema); i++) {
        fval got;
        bool has = replica_profile_field(r, account, alen, schema[i], strlen(schema[i]), &got);
        if (has != (pr != NULL))
            fail("the look-up disagrees with what was stored", schema[i]);
        if (!pr)
            continue;
        bool known;
        feat_type t = featreg_profile_type(schema[i], strlen(schema[i]), &known);
        fval want = {.type = (uint8_t)t};
        expected(root, schema[i], t, &want);
        if (got.type != want.type || got.present != want.present)
            fail("a field's presence or type differs from the JSON", schema[i]);
        if (!got.present)
            continue;
        if ((t == FT_NUM && memcmp(&got.num, &want.num, sizeof got.num) != 0) || (t == FT_BOOL && got.b != want.b) ||
            (t == FT_STR && (got.str.len != want.str.len || memcmp(got.str.ptr, want.str.ptr, got.str.len) != 0)))
            fail("a field's value differs from the JSON", schema[i]);
    }
    json_decref(root);
    if (del)
        table_del(r, &r->cur, true, key, kn);
    return 0;
}

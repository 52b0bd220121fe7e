/* jsoncodec.c - proto3 JSON mapping over protobuf-c descriptors, and JSON on the decide endpoint (see
 * jsoncodec.h). Off the hot path: a JSON request or reply allocates (jansson, the message built here); a
 * protobuf request costs one header look-up and no allocation. */
#include "jsoncodec.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_DEPTH 8

/* protobuf's lowerCamelCase of a field name: "txn_id" -> "txnId" */
static void camel(const char *name, char *out, size_t cap)
{
    size_t o = 0;
    bool up = false;
    for (const char *p = name; *p && o + 1 < cap; p++) {
        if (*p == '_') {
            up = true;
            continue;
        }
        out[o++] = up ? (char)toupper((unsigned char)*p) : *p;
        up = false;
    }
    out[o] = 0;
}

/* A map<K,V> field: protoc-c makes it a repeated message "<Name>Entry" with fields key = 1 and value = 2. */
static bool is_map(const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return false;
    const ProtobufCMessageDescriptor *d = f->descriptor;
    size_t n = strlen(d->short_name);
    return n > 5 && strcmp(d->short_name + n - 5, "Entry") == 0 && d->n_fields == 2 &&
           strcmp(d->fields[0].name, "key") == 0 && strcmp(d->fields[1].name, "value") == 0;
}

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: return 4;
    case PROTOBUF_C_TYPE_FLOAT: return sizeof(float);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return 8;
    case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM: return sizeof(int);
    case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------- encoding */

static json_t *enc_msg(const ProtobufCMessage *m, int depth);

static json_t *enc_value(const ProtobufCFieldDescriptor *f, const void *p, int depth)
{
    char b[32];
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: return json_integer(*(const uint32_t *)p);
    /* 64-bit integers are strings: a JSON number is a double to most readers and loses digits past 2^53 */
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: snprintf(b, sizeof b, "%" PRId64, *(const int64_t *)p); return json_string(b);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: snprintf(b, sizeof b, "%" PRIu64, *(const uint64_t *)p); return json_string(b);
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE: {
        double v = f->type == PROTOBUF_C_TYPE_FLOAT ? *(const float *)p : *(const double *)p;
        if (isnan(v))
            return json_string("NaN");
        if (isinf(v))
            return json_string(v > 0 ? "Infinity" : "-Infinity");
        return json_real(v);
    }
    case PROTOBUF_C_TYPE_BOOL: return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, *(const int *)p);
        return ev ? json_string(ev->name) : json_integer(*(const int *)p);
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return json_string(s ? s : "");
    }
    case PROTOBUF_C_TYPE_BYTES: return NULL; /* no verdict.v1 message has bytes */
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
        return sub ? enc_msg(sub, depth + 1) : json_null();
    }
    }
    return NULL;
}

static json_t *enc_msg(const ProtobufCMessage *m, int depth)
{
    if (depth > MAX_DEPTH)
        return NULL;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    json_t *o = json_object();
    for (unsigned i = 0; o && i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m + f->offset;
        char name[128];
        camel(f->name, name, sizeof name);
        json_t *v = NULL;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            const char *arr = *(char *const *)base;
            if (is_map(f)) {
                v = json_object();
                const ProtobufCMessageDescriptor *ed = f->descriptor;
                for (size_t k = 0; v && k < n; k++) {
                    const ProtobufCMessage *ent = ((ProtobufCMessage *const *)arr)[k];
                    const char *key = *(char *const *)((const char *)ent + ed->fields[0].offset);
                    json_t *val = enc_value(&ed->fields[1], (const char *)ent + ed->fields[1].offset, depth);
                    if (!val || json_object_set_new(v, key ? key : "", val) != 0) {
                        json_decref(v);
                        v = NULL;
                    }
                }
            } else {
                v = json_array();
                for (size_t k = 0; v && k < n; k++) {
                    json_t *e = enc_value(f, arr + k * elem_size(f->type), depth);
                    if (!e || json_array_append_new(v, e) != 0) {
                        json_decref(v);
                        v = NULL;
                    }
                }
            }
        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset && f->type != PROTOBUF_C_TYPE_STRING &&
                   f->type != PROTOBUF_C_TYPE_MESSAGE &&
                   !*(const protobuf_c_boolean *)((const char *)m + f->quantifier_offset)) {
            continue; /* an absent optional scalar */
        } else {
            v = enc_value(f, base, depth);
        }
        if (!v || json_object_set_new(o, name, v) != 0) {
            json_decref(o);
            o = NULL;
        }
    }
    return o;
}

json_t *pbjson_encode(const ProtobufCMessage *m) { return enc_msg(m, 0); }

char *pbjson_decision_text(const void *pb, size_t len)
{
    Decision *d = verdict__v1__decision__unpack(NULL, len, pb);
    if (!d)
        return NULL;
    json_t *j = pbjson_encode(&d->base);
    verdict__v1__decision__free_unpacked(d, NULL);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

/* ------------------------------------------------------------------------------------------- decoding */

static const char *jtype(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* An integer given as a JSON number or a decimal string, within [lo, hi] (hi as unsigned for uint64). */
static bool dec_int(const json_t *v, bool is_unsigned, int64_t lo, uint64_t hi, uint64_t *out, const char *field,
                    verror *e)
{
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if ((is_unsigned && x < 0) || (!is_unsigned && (x < lo || (x > 0 && (uint64_t)x > hi))) ||
            (is_unsigned && (uint64_t)x > hi)) {
            verror_set(e, V_EINVAL, "field '%s': %lld is out of range", field, (long long)x);
            return false;
        }
        *out = (uint64_t)x;
        return true;
    }
    if (json_is_real(v)) {
        /* 1e3 is an integer too; 1.5 is not; past 2^53 a double no longer holds every integer */
        double x = json_real_value(v);
        if (x != floor(x) || fabs(x) > 9007199254740992.0 || (is_unsigned && x < 0) ||
            (!is_unsigned && (x < (double)lo || (x > 0 && x > (double)hi))) || (is_unsigned && x > (double)hi)) {
            verror_set(e, V_EINVAL, "field '%s': %g is not an integer in range", field, x);
            return false;
        }
        *out = (uint64_t)(int64_t)x;
        return true;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end = NULL;
        errno = 0;
        bool ok = s[0] && !isspace((unsigned char)s[0]) && s[0] != '+';
        if (ok && is_unsigned) {
            ok = s[0] != '-';
            unsigned long long x = strtoull(s, &end, 10);
            ok = ok && errno == 0 && *end == 0 && x <= hi;
            *out = x;
        } else if (ok) {
            long long x = strtoll(s, &end, 10);
            ok = errno == 0 && *end == 0 && x >= lo && (x <= 0 || (uint64_t)x <= hi);
            *out = (uint64_t)x;
        }
        if (!ok)
            verror_set(e, V_EINVAL, "field '%s': \"%.40s\" is not a decimal integer in range", field, s);
        return ok;
    }
    verror_set(e, V_EINVAL, "field '%s': expected an integer (a number or a decimal string), got %s", field, jtype(v));
    return false;
}

static bool dec_msg(const ProtobufCMessageDescriptor *d, const json_t *obj, ProtobufCMessage *m, int depth, verror *e);

/* Sets the value at p (a field of type f->type) from v. Strings and sub-messages are malloc'd: the message is
 * freed with protobuf_c_message_free_unpacked, which frees exactly those. */
static bool dec_value(const ProtobufCFieldDescriptor *f, const json_t *v, void *p, const char *field, int depth,
                      verror *e)
{
    uint64_t x = 0;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if (!dec_int(v, false, INT32_MIN, INT32_MAX, &x, field, e))
            return false;
        *(int32_t *)p = (int32_t)(int64_t)x;
        return true;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (!dec_int(v, true, 0, UINT32_MAX, &x, field, e))
            return false;
        *(uint32_t *)p = (uint32_t)x;
        return true;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if (!dec_int(v, false, INT64_MIN, INT64_MAX, &x, field, e))
            return false;
        *(int64_t *)p = (int64_t)x;
        return true;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if (!dec_int(v, true, 0, UINT64_MAX, &x, field, e))
            return false;
        *(uint64_t *)p = x;
        return true;
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE: {
        double d;
        if (json_is_number(v)) {
            d = json_number_value(v);
        } else if (json_is_string(v)) {
            const char *s = json_string_value(v);
            char *end = NULL;
            if (strcmp(s, "NaN") == 0)
                d = NAN;
            else if (strcmp(s, "Infinity") == 0)
                d = INFINITY;
            else if (strcmp(s, "-Infinity") == 0)
                d = -INFINITY;
            else if (!s[0] || isspace((unsigned char)s[0]) || ((d = strtod(s, &end)), *end != 0) || isinf(d) ||
                     isnan(d))
                return verror_set(e, V_EINVAL, "field '%s': \"%.40s\" is not a number", field, s), false;
        } else {
            return verror_set(e, V_EINVAL, "field '%s': expected a number, got %s", field, jtype(v)), false;
        }
        if (f->type == PROTOBUF_C_TYPE_FLOAT)
            *(float *)p = (float)d;
        else
            *(double *)p = d;
        return true;
    }
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v))
            return verror_set(e, V_EINVAL, "field '%s': expected true or false, got %s", field, jtype(v)), false;
        *(protobuf_c_boolean *)p = json_is_true(v);
        return true;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        const ProtobufCEnumValue *ev = NULL;
        if (json_is_string(v)) {
            ev = protobuf_c_enum_descriptor_get_value_by_name(ed, json_string_value(v));
        } else if (json_is_integer(v)) {
            json_int_t n = json_integer_value(v);
            ev = n >= INT32_MIN && n <= INT32_MAX ? protobuf_c_enum_descriptor_get_value(ed, (int)n) : NULL;
        } else {
            return verror_set(e, V_EINVAL, "field '%s': expected a %s name, got %s", field, ed->short_name, jtype(v)),
                   false;
        }
        if (!ev) {
            char names[256] = "";
            size_t o = 0;
            for (unsigned i = 0; i < ed->n_values && o < sizeof names; i++)
                o += (size_t)snprintf(names + o, sizeof names - o, "%s%s", i ? ", " : "", ed->values[i].name);
            if (json_is_string(v))
                return verror_set(e, V_EINVAL, "field '%s': unknown %s '%.40s' (one of %s)", field, ed->short_name,
                                  json_string_value(v), names),
                       false;
            return verror_set(e, V_EINVAL, "field '%s': unknown %s %lld (one of %s)", field, ed->short_name,
                              (long long)json_integer_value(v), names),
                   false;
        }
        *(int *)p = ev->value;
        return true;
    }
    case PROTOBUF_C_TYPE_STRING: {
        if (!json_is_string(v))
            return verror_set(e, V_EINVAL, "field '%s': expected a string, got %s", field, jtype(v)), false;
        char *s = strdup(json_string_value(v));
        if (!s)
            return verror_set(e, V_ENOMEM, "out of memory"), false;
        *(char **)p = s;
        return true;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessageDescriptor *sd = f->descriptor;
        if (!json_is_object(v))
            return verror_set(e, V_EINVAL, "field '%s': expected an object, got %s", field, jtype(v)), false;
        ProtobufCMessage *sub = calloc(1, sd->sizeof_message);
        if (!sub)
            return verror_set(e, V_ENOMEM, "out of memory"), false;
        sd->message_init(sub);
        *(ProtobufCMessage **)p = sub; /* owned by the parent from here, even if what follows fails */
        return dec_msg(sd, v, sub, depth + 1, e);
    }
    case PROTOBUF_C_TYPE_BYTES: break;
    }
    return verror_set(e, V_EINVAL, "field '%s': bytes fields are not supported", field), false;
}

static bool dec_map(const ProtobufCFieldDescriptor *f, const json_t *v, ProtobufCMessage *m, const char *field,
                    int depth, verror *e)
{
    if (!json_is_object(v))
        return verror_set(e, V_EINVAL, "field '%s': expected an object (a map), got %s", field, jtype(v)), false;
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    if (ed->fields[0].type != PROTOBUF_C_TYPE_STRING)
        return verror_set(e, V_EINVAL, "field '%s': only maps with string keys are supported", field), false;
    size_t n = json_object_size(v);
    ProtobufCMessage **arr = n ? calloc(n, sizeof *arr) : NULL;
    if (n && !arr)
        return verror_set(e, V_ENOMEM, "out of memory"), false;
    *(ProtobufCMessage ***)((char *)m + f->offset) = arr;
    size_t *count = (size_t *)((char *)m + f->quantifier_offset);
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val)
    {
        ProtobufCMessage *ent = calloc(1, ed->sizeof_message);
        if (!ent)
            return verror_set(e, V_ENOMEM, "out of memory"), false;
        ed->message_init(ent);
        arr[(*count)++] = ent;
        char *k = strdup(key);
        if (!k)
            return verror_set(e, V_ENOMEM, "out of memory"), false;
        *(char **)((char *)ent + ed->fields[0].offset) = k;
        char where[160];
        snprintf(where, sizeof where, "%s.%.60s", field, key);
        if (json_is_null(val))
            return verror_set(e, V_EINVAL, "field '%s': a map value cannot be null", where), false;
        if (!dec_value(&ed->fields[1], val, (char *)ent + ed->fields[1].offset, where, depth, e))
            return false;
    }
    return true;
}

static bool dec_repeated(const ProtobufCFieldDescriptor *f, const json_t *v, ProtobufCMessage *m, const char *field,
                         int depth, verror *e)
{
    if (!json_is_array(v))
        return verror_set(e, V_EINVAL, "field '%s': expected an array, got %s", field, jtype(v)), false;
    size_t n = json_array_size(v), es = elem_size(f->type);
    char *arr = n ? calloc(n, es) : NULL;
    if (n && !arr)
        return verror_set(e, V_ENOMEM, "out of memory"), false;
    *(char **)((char *)m + f->offset) = arr;
    size_t *count = (size_t *)((char *)m + f->quantifier_offset);
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(v, i);
        if (json_is_null(x))
            return verror_set(e, V_EINVAL, "field '%s': an array element cannot be null", field), false;
        /* counted first: a half-built string or message is freed with the rest */
        (*count)++;
        if (!dec_value(f, x, arr + i * es, field, depth, e))
            return false;
    }
    return true;
}

static bool dec_msg(const ProtobufCMessageDescriptor *d, const json_t *obj, ProtobufCMessage *m, int depth, verror *e)
{
    if (depth > MAX_DEPTH)
        return verror_set(e, V_EINVAL, "nested too deeply"), false;
    unsigned char seen[64] = {0};
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        const ProtobufCFieldDescriptor *f = NULL;
        unsigned fi = 0;
        for (unsigned i = 0; i < d->n_fields && !f; i++) {
            char c[128];
            camel(d->fields[i].name, c, sizeof c);
            if (strcmp(key, d->fields[i].name) == 0 || strcmp(key, c) == 0) {
                f = &d->fields[i];
                fi = i;
            }
        }
        if (!f)
            return verror_set(e, V_EINVAL, "unknown field '%.60s' in %s (names as in the .proto, or lowerCamelCase)",
                              key, d->name),
                   false;
        if (fi < sizeof seen && seen[fi]++)
            return verror_set(e, V_EINVAL, "field '%s' of %s given twice", f->name, d->name), false;
        if (json_is_null(v))
            continue; /* null is the default value */
        void *p = (char *)m + f->offset;
        bool ok;
        if (is_map(f))
            ok = dec_map(f, v, m, f->name, depth, e);
        else if (f->label == PROTOBUF_C_LABEL_REPEATED)
            ok = dec_repeated(f, v, m, f->name, depth, e);
        else
            ok = dec_value(f, v, p, f->name, depth, e);
        if (!ok)
            return false;
        if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset && f->type != PROTOBUF_C_TYPE_STRING &&
            f->type != PROTOBUF_C_TYPE_MESSAGE)
            *(protobuf_c_boolean *)((char *)m + f->quantifier_offset) = 1;
    }
    return true;
}

vstatus pbjson_decode(const ProtobufCMessageDescriptor *d, const char *json, size_t len, ProtobufCMessage **out,
                      verror *e)
{
    *out = NULL;
    json_error_t je;
    /* strict: duplicate keys are refused; NUL inside strings is refused by jansson unless asked for */
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return verror_set(e, V_EINVAL, "not JSON: %s at line %d column %d", je.text, je.line, je.column);
    if (!json_is_object(root)) {
        vstatus rc = verror_set(e, V_EINVAL, "a %s must be a JSON object, not %s", d->name, jtype(root));
        json_decref(root);
        return rc;
    }
    ProtobufCMessage *m = calloc(1, d->sizeof_message);
    if (!m) {
        json_decref(root);
        return verror_set(e, V_ENOMEM, "out of memory");
    }
    d->message_init(m);
    bool ok = dec_msg(d, root, m, 0, e);
    json_decref(root);
    if (!ok) {
        protobuf_c_message_free_unpacked(m, NULL);
        return e && e->code ? e->code : V_EINVAL;
    }
    *out = m;
    return V_OK;
}

vstatus pbjson_txn_to_pb(const char *json, size_t len, unsigned char **out, size_t *out_len, verror *e)
{
    *out = NULL;
    *out_len = 0;
    ProtobufCMessage *m = NULL;
    vstatus rc = pbjson_decode(&verdict__v1__transaction__descriptor, json, len, &m, e);
    if (rc != V_OK)
        return rc;
    size_t n = protobuf_c_message_get_packed_size(m);
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf) {
        protobuf_c_message_free_unpacked(m, NULL);
        return verror_set(e, V_ENOMEM, "out of memory");
    }
    *out_len = protobuf_c_message_pack(m, buf);
    *out = buf;
    protobuf_c_message_free_unpacked(m, NULL);
    return V_OK;
}

/* ------------------------------------------------------------------------------------- the decide endpoint */

enum media { MEDIA_NONE, MEDIA_JSON, MEDIA_PROTOBUF, MEDIA_OTHER };

/* The media type of one entry of a Content-Type or Accept value ("application/json; charset=utf-8"). */
static enum media media_of(const char *s, size_t n)
{
    while (n && isspace((unsigned char)*s))
        s++, n--;
    size_t k = 0;
    while (k < n && s[k] != ';' && !isspace((unsigned char)s[k]))
        k++;
    if (k == 0)
        return MEDIA_NONE;
    static const char *const pb[] = {"application/protobuf", "application/x-protobuf",
                                     "application/vnd.google.protobuf", "application/octet-stream"};
    if (k == 16 && strncasecmp(s, "application/json", 16) == 0)
        return MEDIA_JSON;
    for (size_t i = 0; i < ARRAY_LEN(pb); i++)
        if (k == strlen(pb[i]) && strncasecmp(s, pb[i], k) == 0)
            return MEDIA_PROTOBUF;
    return MEDIA_OTHER;
}

/* The first entry of an Accept list that names a format we speak; MEDIA_NONE for anything else (then the
 * reply takes the request's format). */
static enum media accept_of(const char *v)
{
    while (v && *v) {
        const char *c = strchr(v, ',');
        size_t n = c ? (size_t)(c - v) : strlen(v);
        enum media m = media_of(v, n);
        if (m == MEDIA_JSON || m == MEDIA_PROTOBUF)
            return m;
        v = c ? c + 1 : NULL;
    }
    return MEDIA_NONE;
}

/* A header value quoted back to the requester: printable ASCII only, and short. */
static void printable(const char *v, char *out, size_t cap)
{
    size_t o = 0;
    for (; *v && o + 1 < cap; v++)
        out[o++] = *v >= 0x20 && *v < 0x7f ? *v : '?';
    out[o] = 0;
}

vstatus json_request_read(natsMsg *req, json_request *r, verror *e)
{
    memset(r, 0, sizeof *r);
    r->data = natsMsg_GetData(req);
    r->len = natsMsg_GetDataLength(req);
    const char *ct = NULL, *acc = NULL;
    /* a request without headers costs nothing here: nats.c answers "not found" without parsing */
    natsMsgHeader_Get(req, "Content-Type", &ct);
    natsMsgHeader_Get(req, "Accept", &acc);
    enum media in = ct ? media_of(ct, strlen(ct)) : MEDIA_NONE;
    if (in == MEDIA_OTHER) {
        char q[48];
        printable(ct, q, sizeof q);
        r->code = 415;
        return verror_set(e, V_EINVAL, "unsupported Content-Type '%s': send application/json or a protobuf Transaction",
                          q);
    }
    bool json = in == MEDIA_JSON || (in == MEDIA_NONE && r->len > 0 && ((const char *)r->data)[0] == '{');
    enum media want = acc ? accept_of(acc) : MEDIA_NONE;
    r->reply_json = want == MEDIA_JSON || (want == MEDIA_NONE && json);
    if (!json)
        return V_OK;
    size_t n = 0;
    verror je = {0};
    if (pbjson_txn_to_pb(r->data, (size_t)(r->len > 0 ? r->len : 0), &r->buf, &n, &je) != V_OK) {
        r->code = 400;
        return verror_set(e, V_EINVAL, "JSON request refused: %s", je.msg);
    }
    r->data = r->buf;
    r->len = (int)n;
    return V_OK;
}

void json_request_done(json_request *r)
{
    free(r->buf);
    r->buf = NULL;
}

natsStatus json_reply_create(natsMsg **out, const char *reply_to, natsMsg *decision, natsMsg *in)
{
    const char *fmt = NULL;
    if (in && natsMsgHeader_Get(in, JSON_REPLY_HEADER, &fmt) == NATS_OK && fmt && strcmp(fmt, "json") == 0) {
        char *j = pbjson_decision_text(natsMsg_GetData(decision), (size_t)natsMsg_GetDataLength(decision));
        if (j) {
            natsStatus s = natsMsg_Create(out, reply_to, NULL, j, (int)strlen(j));
            free(j);
            if (s == NATS_OK)
                s = natsMsgHeader_Set(*out, "Content-Type", "application/json");
            return s;
        }
        /* cannot happen for a decision the engine stored; the protobuf answer is better than none */
    }
    return natsMsg_Create(out, reply_to, NULL, natsMsg_GetData(decision), natsMsg_GetDataLength(decision));
}

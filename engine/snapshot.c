/* snapshot.c - velocity checkpoints as Object Store objects on a JetStream stream (see snapshot.h; ADR-20 for
 * the layout; docs/state.md, "Checkpoints", for the design). */
#include "snapshot.h"

#include "broker.h"
#include "log.h"
#include "streamread.h"

#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define NAME_PREFIX "velocity/"
#define READ_STALL_MS 5000

typedef struct names {
    char bucket[NAME_MAX_LEN], stream[NAME_MAX_LEN + 8];
    char meta_all[NAME_MAX_LEN + 16], chunk_all[NAME_MAX_LEN + 16];
    char scope[NAME_MAX_LEN + 16]; /* object name prefix of this consumer: velocity/<consumer>/ */
} names;

void snapshot_bucket(const config *c, char *out, size_t cap)
{
    config_name(c, NAME_BUCKET, "verdict_state", out, cap);
}

static void names_of(const config *c, names *n)
{
    snapshot_bucket(c, n->bucket, sizeof n->bucket);
    snprintf(n->stream, sizeof n->stream, "OBJ_%s", n->bucket);
    snprintf(n->meta_all, sizeof n->meta_all, "$O.%s.M.>", n->bucket);
    snprintf(n->chunk_all, sizeof n->chunk_all, "$O.%s.C.>", n->bucket);
    snprintf(n->scope, sizeof n->scope, NAME_PREFIX "%s/", c->consumer);
}

/* --- encodings ------------------------------------------------------------------------------------------ */

/* base64url with padding, as ADR-20's clients encode object names and digests. */
static void b64url(const unsigned char *in, size_t n, char *out, size_t cap)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < cap; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = al[v >> 18 & 63];
        out[o++] = al[v >> 12 & 63];
        out[o++] = i + 1 < n ? al[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? al[v & 63] : '=';
    }
    out[o] = 0;
}

static void meta_subject(const names *n, const char *name, char *out, size_t cap)
{
    char enc[264]; /* base64 of a name of at most 191 bytes */
    b64url((const unsigned char *)name, strlen(name), enc, sizeof enc);
    snprintf(out, cap, "$O.%s.M.%s", n->bucket, enc);
}

static void chunk_subject(const names *n, const char *nuid, char *out, size_t cap)
{
    snprintf(out, cap, "$O.%s.C.%s", n->bucket, nuid);
}

static vstatus sha256_digest(const unsigned char *buf, size_t len, char *out, size_t cap, verror *e)
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (EVP_Digest(buf, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return verror_set(e, V_EIO, "SHA-256 failed");
    char enc[64];
    b64url(md, 32, enc, sizeof enc);
    snprintf(out, cap, "SHA-256=%s", enc);
    return V_OK;
}

/* A fresh object id: 22 characters of base62 from the kernel's random source, like a NUID. */
static vstatus new_nuid(char *out, verror *e)
{
    static const char al[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    unsigned char r[22];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        return verror_set(e, V_EIO, "no random bytes for an object id");
    for (int i = 0; i < 22; i++)
        out[i] = al[r[i] % 62];
    out[22] = 0;
    return V_OK;
}

/* --- the bucket ----------------------------------------------------------------------------------------- */

static bool has_subject(const jsStreamConfig *cfg, const char *subj)
{
    for (int i = 0; i < cfg->SubjectsLen; i++)
        if (strcmp(cfg->Subjects[i], subj) == 0)
            return true;
    return false;
}

/* Creates the bucket's stream as ADR-20 does (discard new, rollups, direct gets), or verifies the one there. */
static vstatus ensure_bucket(jsCtx *js, const config *c, const names *n, verror *e)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, js, n->stream, NULL, &jerr);
    if (s == NATS_OK) {
        vstatus rc = V_OK;
        if (!has_subject(si->Config, n->meta_all) || !has_subject(si->Config, n->chunk_all) || !si->Config->AllowRollup)
            rc = verror_set(e, V_ECONFLICT,
                            "stream %s exists but is not an object store bucket (subjects %s and %s, rollups "
                            "allowed); remove it or choose another --prefix",
                            n->stream, n->meta_all, n->chunk_all);
        jsStreamInfo_Destroy(si);
        return rc;
    }
    if (s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr)
        return broker_err(e, s, jerr, "cannot look up the snapshot bucket");
    const char *subjects[2] = {n->chunk_all, n->meta_all};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = n->stream;
    cfg.Description = "Verdict velocity state checkpoints";
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 2;
    cfg.Storage = js_FileStorage;
    cfg.Replicas = c->replicas > 0 ? c->replicas : 1;
    cfg.Discard = js_DiscardNew;
    cfg.AllowRollup = true;
    cfg.AllowDirect = true;
    s = js_AddStream(&si, js, &cfg, NULL, &jerr);
    if (s != NATS_OK && jerr != JSStreamNameExistErr)
        return broker_err(e, s, jerr, "cannot create the snapshot bucket");
    jsStreamInfo_Destroy(si);
    if (s == NATS_OK)
        log_info("snapshot bucket created", "\"stream\":\"%s\"", log_esc(n->stream));
    return V_OK;
}

static vstatus purge_subject(jsCtx *js, const names *n, const char *subject, verror *e)
{
    jsOptions o;
    jsOptions_Init(&o);
    o.Stream.Purge.Subject = subject;
    jsErrCode jerr = 0;
    natsStatus s = js_PurgeStream(js, n->stream, &o, &jerr);
    return s == NATS_OK ? V_OK : broker_err(e, s, jerr, "cannot purge a snapshot subject");
}

/* The subjects of the bucket matching filter, with their message counts (caller destroys si). NULL list when
 * the stream does not exist (*missing set). */
static vstatus subjects_of(jsCtx *js, const names *n, const char *filter, jsStreamInfo **si, bool *missing, verror *e)
{
    *si = NULL;
    *missing = false;
    jsOptions o;
    jsOptions_Init(&o);
    o.Stream.Info.SubjectsFilter = filter;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(si, js, n->stream, &o, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
        *missing = true;
        return V_OK;
    }
    return s == NATS_OK ? V_OK : broker_err(e, s, jerr, "cannot list the snapshot bucket");
}

static uint64_t subject_count(const jsStreamInfo *si, const char *subject)
{
    if (!si || !si->State.Subjects)
        return 0;
    for (int i = 0; i < si->State.Subjects->Count; i++)
        if (strcmp(si->State.Subjects->List[i].Subject, subject) == 0)
            return si->State.Subjects->List[i].Msgs;
    return 0;
}

/* --- descriptions --------------------------------------------------------------------------------------- */

typedef struct meta {
    snapshot_info info;
    char digest[80];
    bool deleted, ours; /* ours: a snapshot of this consumer with a position header */
} meta;

static bool parse_meta(natsMsg *m, const names *n, meta *out)
{
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *root = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, &jerr);
    if (!root)
        return false;
    const char *name = json_string_value(json_object_get(root, "name"));
    const char *nuid = json_string_value(json_object_get(root, "nuid"));
    const char *digest = json_string_value(json_object_get(root, "digest"));
    json_t *size = json_object_get(root, "size"), *chunks = json_object_get(root, "chunks");
    json_t *pos = json_array_get(json_object_get(json_object_get(root, "headers"), "Verdict-Position"), 0);
    /* a name too long for info.name (not one of ours) still counts for its nuid: the sweep must see it */
    bool ok = name && nuid && strlen(nuid) < sizeof out->info.nuid;
    if (ok) {
        bool fits = str_copy(out->info.name, sizeof out->info.name, name);
        str_copy(out->info.nuid, sizeof out->info.nuid, nuid);
        str_copy(out->digest, sizeof out->digest, digest ? digest : "");
        out->deleted = json_is_true(json_object_get(root, "deleted"));
        out->info.size = json_is_integer(size) ? (uint64_t)json_integer_value(size) : 0;
        out->info.chunks = json_is_integer(chunks) ? (uint32_t)json_integer_value(chunks) : 0;
        out->info.mtime_ns = natsMsg_GetTime(m);
        char *end = NULL;
        const char *ps = json_string_value(pos);
        unsigned long long p = ps ? strtoull(ps, &end, 10) : 0;
        out->info.position = p;
        out->ours = fits && ps && end && *end == 0 && strncmp(name, n->scope, strlen(n->scope)) == 0;
    }
    json_decref(root);
    return ok;
}

/* Every live description in the bucket (deleted ones left out), in no order; *unreadable (may be NULL) counts
 * the descriptions that do not parse (another tool's, or damaged): nobody can tell which chunks they name. */
static vstatus list_all(jsCtx *js, const names *n, meta **out, int *count, int *unreadable, verror *e)
{
    *out = NULL;
    *count = 0;
    if (unreadable)
        *unreadable = 0;
    jsStreamInfo *si = NULL;
    bool missing;
    vstatus rc = subjects_of(js, n, n->meta_all, &si, &missing, e);
    if (rc != V_OK || missing)
        return rc;
    int cap = si->State.Subjects ? si->State.Subjects->Count : 0;
    meta *list = calloc(cap > 0 ? (size_t)cap : 1, sizeof *list);
    if (!list) {
        jsStreamInfo_Destroy(si);
        return verror_set(e, V_ENOMEM, "out of memory");
    }
    for (int i = 0; i < cap && rc == V_OK; i++) {
        natsMsg *m = NULL;
        jsErrCode jerr = 0;
        natsStatus s = js_GetLastMsg(&m, js, n->stream, si->State.Subjects->List[i].Subject, NULL, &jerr);
        if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr)
            continue; /* purged since the listing */
        if (s != NATS_OK) {
            rc = broker_err(e, s, jerr, "cannot read a snapshot description");
            break;
        }
        if (!parse_meta(m, n, &list[*count])) {
            if (unreadable)
                (*unreadable)++;
        } else if (!list[*count].deleted)
            (*count)++;
        natsMsg_Destroy(m);
    }
    jsStreamInfo_Destroy(si);
    if (rc != V_OK) {
        free(list);
        *count = 0;
        return rc;
    }
    *out = list;
    return V_OK;
}

static int by_position_desc(const void *a, const void *b)
{
    const meta *x = a, *y = b;
    if (x->info.position != y->info.position)
        return x->info.position < y->info.position ? 1 : -1;
    return x->info.mtime_ns < y->info.mtime_ns ? 1 : x->info.mtime_ns > y->info.mtime_ns ? -1 : 0;
}

/* This consumer's snapshots, newest first. */
static vstatus list_ours(jsCtx *js, const names *n, meta **out, int *count, verror *e)
{
    meta *all = NULL;
    int na = 0;
    vstatus rc = list_all(js, n, &all, &na, NULL, e);
    if (rc != V_OK)
        return rc;
    int k = 0;
    for (int i = 0; i < na; i++)
        if (all[i].ours)
            all[k++] = all[i];
    if (k > 1)
        qsort(all, (size_t)k, sizeof *all, by_position_desc);
    *out = all;
    *count = k;
    return V_OK;
}

vstatus snapshot_list(jsCtx *js, const config *c, snapshot_info **list, int *n, verror *e)
{
    names nm;
    names_of(c, &nm);
    meta *ours = NULL;
    int k = 0;
    *list = NULL;
    *n = 0;
    vstatus rc = list_ours(js, &nm, &ours, &k, e);
    if (rc != V_OK)
        return rc;
    snapshot_info *out = calloc(k > 0 ? (size_t)k : 1, sizeof *out);
    if (!out) {
        free(ours);
        return verror_set(e, V_ENOMEM, "out of memory");
    }
    for (int i = 0; i < k; i++)
        out[i] = ours[i].info;
    free(ours);
    *list = out;
    *n = k;
    return V_OK;
}

/* --- save ----------------------------------------------------------------------------------------------- */

static vstatus publish_meta(jsCtx *js, const names *n, const char *subject, const char *json, verror *e)
{
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, json, (int)strlen(json));
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Nats-Rollup", "sub");
    if (s != NATS_OK) {
        natsMsg_Destroy(m);
        return broker_err(e, s, 0, "cannot build the snapshot description");
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.ExpectStream = n->stream;
    po.MaxWait = 10000;
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    s = js_PublishMsg(&pa, js, m, &po, &jerr);
    natsMsg_Destroy(m);
    jsPubAck_Destroy(pa);
    return s == NATS_OK ? V_OK : broker_err(e, s, jerr, "cannot store the snapshot description");
}

vstatus snapshot_save(jsCtx *js, const config *c, const unsigned char *buf, size_t len, uint64_t position, verror *e)
{
    int64_t t0 = mono_ns();
    names n;
    names_of(c, &n);
    vstatus rc = ensure_bucket(js, c, &n, e);
    if (rc != V_OK)
        return rc;
    char name[192], msubj[512], csubj[256], nuid[40], digest[80];
    snprintf(name, sizeof name, "%s%020" PRIu64, n.scope, position);
    meta_subject(&n, name, msubj, sizeof msubj);
    if ((rc = new_nuid(nuid, e)) != V_OK || (rc = sha256_digest(buf, len, digest, sizeof digest, e)) != V_OK)
        return rc;
    chunk_subject(&n, nuid, csubj, sizeof csubj);

    /* an object of the same name (a save at the same position): its chunks go once the new one is complete */
    char old_nuid[40] = "";
    natsMsg *old = NULL;
    jsErrCode jerr = 0;
    if (js_GetLastMsg(&old, js, n.stream, msubj, NULL, &jerr) == NATS_OK) {
        meta om;
        if (parse_meta(old, &n, &om) && !om.deleted)
            str_copy(old_nuid, sizeof old_nuid, om.info.nuid);
        natsMsg_Destroy(old);
    }

    /* chunks first: until the description is stored, nothing names them */
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.ExpectStream = n.stream;
    po.MaxWait = 10000;
    uint32_t chunks = 0;
    for (size_t off = 0; off < len; off += SNAPSHOT_CHUNK, chunks++) {
        size_t k = len - off < SNAPSHOT_CHUNK ? len - off : SNAPSHOT_CHUNK;
        jsPubAck *pa = NULL;
        natsStatus s = js_Publish(&pa, js, csubj, buf + off, (int)k, &po, &jerr);
        jsPubAck_Destroy(pa);
        if (s != NATS_OK) {
            rc = broker_err(e, s, jerr, "cannot store a snapshot chunk");
            verror ignore;
            purge_subject(js, &n, csubj, &ignore); /* best effort: the orphan sweep removes them otherwise */
            return rc;
        }
    }
    if (strcmp(c->fault, "crash_in_snapshot") == 0) {
        /* tests: die with the chunks stored and the description not */
        log_warn("test fault: killing the process in the middle of a snapshot", NULL);
        raise(SIGKILL);
    }
    json_t *j = json_pack("{s:s, s:s, s:{s:[s], s:[s]}, s:{s:i}, s:s, s:s, s:I, s:i, s:s}", "name", name, "description",
                          "Verdict velocity state", "headers", "Verdict-Position", "", "Verdict-Format", "1", "options",
                          "max_chunk_size", SNAPSHOT_CHUNK, "bucket", n.bucket, "nuid", nuid, "size", (json_int_t)len,
                          "chunks", (int)chunks, "digest", digest);
    char posbuf[24];
    snprintf(posbuf, sizeof posbuf, "%" PRIu64, position);
    if (j)
        json_array_set_new(json_object_get(json_object_get(j, "headers"), "Verdict-Position"), 0, json_string(posbuf));
    char *json = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!json) {
        verror ignore;
        purge_subject(js, &n, csubj, &ignore);
        return verror_set(e, V_ENOMEM, "cannot build the snapshot description");
    }
    rc = publish_meta(js, &n, msubj, json, e);
    free(json);
    if (rc != V_OK) {
        verror ignore;
        purge_subject(js, &n, csubj, &ignore);
        return rc;
    }
    if (old_nuid[0]) {
        char osubj[256];
        chunk_subject(&n, old_nuid, osubj, sizeof osubj);
        verror ignore;
        purge_subject(js, &n, osubj, &ignore);
    }
    log_info("snapshot saved",
             "\"object\":\"%s\",\"bucket\":\"%s\",\"position\":%" PRIu64 ",\"bytes\":%zu,\"chunks\":%u,\"ms\":%.1f",
             log_esc(name), log_esc(n.bucket), position, len, chunks, (double)(mono_ns() - t0) / 1e6);
    return V_OK;
}

/* --- load ----------------------------------------------------------------------------------------------- */

/* Reads the object's chunks into *buf (malloc'd, m->info.size bytes) and checks them against the description.
 * V_EINVAL with the reason when the object is not whole. */
static vstatus fetch_object(jsCtx *js, const names *n, const meta *m, unsigned char **buf, verror *e)
{
    *buf = NULL;
    char csubj[256];
    chunk_subject(n, m->info.nuid, csubj, sizeof csubj);
    jsStreamInfo *si = NULL;
    bool missing;
    vstatus rc = subjects_of(js, n, csubj, &si, &missing, e);
    if (rc != V_OK)
        return rc;
    uint64_t have = subject_count(si, csubj);
    jsStreamInfo_Destroy(si);
    if (have != m->info.chunks)
        return verror_set(e, V_EINVAL, "chunks missing: %" PRIu64 " of %u stored", have, m->info.chunks);
    if (m->info.size == 0 || m->info.size > ((uint64_t)1 << 40) ||
        m->info.chunks != (m->info.size + SNAPSHOT_CHUNK - 1) / SNAPSHOT_CHUNK)
        return verror_set(e, V_EINVAL, "description is malformed (size %" PRIu64 ", %u chunks)", m->info.size,
                          m->info.chunks);
    unsigned char *b = malloc((size_t)m->info.size);
    if (!b)
        return verror_set(e, V_ENOMEM, "no memory for a snapshot of %" PRIu64 " bytes", m->info.size);
    stream_reader *r = NULL;
    if ((rc = stream_reader_open(js, n->stream, csubj, 0, 0, &r, e)) != V_OK) {
        free(b);
        return rc;
    }
    uint64_t got = 0, nmsg = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
        rc = verror_set(e, V_EIO, "SHA-256 failed");
    while (rc == V_OK) {
        natsMsg *msg = NULL;
        uint64_t seq;
        int64_t ts;
        vstatus s = stream_reader_next(r, &msg, &seq, &ts, READ_STALL_MS, e);
        if (s == V_ENOTFOUND)
            break;
        if (s != V_OK) {
            rc = s;
            break;
        }
        size_t k = (size_t)natsMsg_GetDataLength(msg);
        if (k > m->info.size - got)
            rc = verror_set(e, V_EINVAL, "chunks hold more than the %" PRIu64 " bytes described", m->info.size);
        else {
            memcpy(b + got, natsMsg_GetData(msg), k);
            EVP_DigestUpdate(md, natsMsg_GetData(msg), k);
            got += k;
            nmsg++;
        }
        natsMsg_Destroy(msg);
    }
    stream_reader_close(r);
    if (rc == V_OK && (got != m->info.size || nmsg != m->info.chunks))
        rc = verror_set(e, V_EINVAL, "chunks hold %" PRIu64 " bytes in %" PRIu64 " chunks, described %" PRIu64 " in %u",
                        got, nmsg, m->info.size, m->info.chunks);
    if (rc == V_OK) {
        unsigned char d[32];
        unsigned int dl = 0;
        char enc[64], want[80];
        EVP_DigestFinal_ex(md, d, &dl);
        b64url(d, 32, enc, sizeof enc);
        snprintf(want, sizeof want, "SHA-256=%s", enc);
        if (strcmp(want, m->digest) != 0)
            rc = verror_set(e, V_EINVAL, "chunks do not match the SHA-256 digest (corrupt)");
    }
    EVP_MD_CTX_free(md);
    if (rc != V_OK) {
        free(b);
        return rc;
    }
    *buf = b;
    return V_OK;
}

vstatus snapshot_load_newest(jsCtx *js, const config *c, const velocity_plan *pl, const velocity_cfg *cfg,
                             velocity **out, uint64_t *position, unsigned char **extra, size_t *extra_len, verror *e)
{
    *out = NULL;
    if (extra) {
        *extra = NULL;
        *extra_len = 0;
    }
    names n;
    names_of(c, &n);
    meta *list = NULL;
    int count = 0;
    vstatus rc = list_ours(js, &n, &list, &count, e);
    if (rc != V_OK)
        return rc;
    if (count == 0) {
        free(list);
        log_info("no velocity snapshot", "\"bucket\":\"%s\",\"consumer\":\"%s\"", log_esc(n.bucket),
                 log_esc(c->consumer));
        return verror_set(e, V_ENOTFOUND, "no velocity snapshot in %s for consumer %s", n.bucket, c->consumer);
    }
    char last[sizeof e->msg] = "";
    for (int i = 0; i < count; i++) {
        const meta *m = &list[i];
        int64_t t0 = mono_ns();
        verror why = {0};
        unsigned char *buf = NULL;
        velocity *v = NULL;
        uint64_t pos = 0;
        vstatus s = fetch_object(js, &n, m, &buf, &why);
        if (s == V_OK) {
            /* the state's bytes, then whatever the engine stored after them (returned as extra) */
            size_t vlen = velocity_snapshot_length(buf, (size_t)m->info.size);
            s = velocity_snapshot_read(pl, cfg, buf, vlen ? vlen : (size_t)m->info.size, &v, &pos, NULL, &why);
            if (s == V_OK && extra) {
                *extra_len = (size_t)m->info.size - vlen;
                *extra = malloc(*extra_len ? *extra_len : 1);
                if (!*extra) {
                    velocity_free(v);
                    v = NULL;
                    s = verror_set(&why, V_ENOMEM, "out of memory");
                } else {
                    memcpy(*extra, buf + vlen, *extra_len);
                }
            }
            free(buf);
        }
        if (s == V_OK && pos != m->info.position) {
            velocity_free(v);
            v = NULL;
            s = verror_set(&why, V_EINVAL, "its bytes are for position %" PRIu64 ", its description says %" PRIu64, pos,
                           m->info.position);
        }
        if (s == V_OK) {
            log_info("velocity snapshot loaded",
                     "\"object\":\"%s\",\"position\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"ms\":%.1f,\"skipped\":%d",
                     log_esc(m->info.name), pos, m->info.size, (double)(mono_ns() - t0) / 1e6, i);
            *out = v;
            if (position)
                *position = pos;
            free(list);
            return V_OK;
        }
        log_warn("velocity snapshot skipped", "\"object\":\"%s\",\"position\":%" PRIu64 ",\"reason\":\"%s\"",
                 log_esc(m->info.name), m->info.position, log_esc(why.msg));
        str_copy(last, sizeof last, why.msg);
    }
    free(list);
    return verror_set(e, V_ENOTFOUND, "no usable velocity snapshot (%d refused; the newest refused: %.900s)", count,
                      last);
}

/* --- prune ---------------------------------------------------------------------------------------------- */

vstatus snapshot_prune_orphans(jsCtx *js, const config *c, int64_t older_than_ms, verror *e)
{
    names n;
    names_of(c, &n);
    meta *all = NULL;
    int na = 0, unreadable = 0;
    vstatus rc = list_all(js, &n, &all, &na, &unreadable, e);
    if (rc != V_OK)
        return rc;
    if (unreadable) {
        free(all);
        log_warn("snapshot chunk sweep skipped: a description in the bucket does not parse",
                 "\"bucket\":\"%s\",\"unreadable\":%d", log_esc(n.bucket), unreadable);
        return V_OK;
    }
    jsStreamInfo *si = NULL;
    bool missing;
    if ((rc = subjects_of(js, &n, n.chunk_all, &si, &missing, e)) != V_OK || missing) {
        free(all);
        return rc;
    }
    size_t plen = strlen(n.chunk_all) - 1; /* "$O.<bucket>.C." */
    int64_t now_ns = now_ms() * 1000000LL;
    int removed = 0;
    for (int i = 0; si->State.Subjects && i < si->State.Subjects->Count && rc == V_OK; i++) {
        const char *subj = si->State.Subjects->List[i].Subject;
        const char *nuid = strlen(subj) > plen ? subj + plen : "";
        bool named = false;
        for (int k = 0; k < na && !named; k++)
            named = strcmp(all[k].info.nuid, nuid) == 0;
        if (named)
            continue;
        /* the newest chunk's age: a save in progress (here or in another engine) writes chunks every moment */
        natsMsg *m = NULL;
        jsErrCode jerr = 0;
        if (js_GetLastMsg(&m, js, n.stream, subj, NULL, &jerr) != NATS_OK)
            continue;
        int64_t age_ms = (now_ns - natsMsg_GetTime(m)) / 1000000LL;
        natsMsg_Destroy(m);
        if (age_ms < older_than_ms)
            continue;
        if ((rc = purge_subject(js, &n, subj, e)) == V_OK)
            removed++;
    }
    jsStreamInfo_Destroy(si);
    free(all);
    if (removed)
        log_info("snapshot chunks without a description removed", "\"bucket\":\"%s\",\"objects\":%d", log_esc(n.bucket),
                 removed);
    return rc;
}

vstatus snapshot_prune(jsCtx *js, const config *c, int keep, verror *e)
{
    names n;
    names_of(c, &n);
    meta *list = NULL;
    int count = 0;
    vstatus rc = list_ours(js, &n, &list, &count, e);
    if (rc != V_OK)
        return rc;
    for (int i = keep > 0 ? keep : 0; i < count && rc == V_OK; i++) {
        char msubj[512], csubj[256];
        meta_subject(&n, list[i].info.name, msubj, sizeof msubj);
        chunk_subject(&n, list[i].info.nuid, csubj, sizeof csubj);
        /* the description first: from then on nothing names the chunks, whatever happens next */
        if ((rc = purge_subject(js, &n, msubj, e)) == V_OK)
            rc = purge_subject(js, &n, csubj, e);
        if (rc == V_OK)
            log_info("velocity snapshot pruned", "\"object\":\"%s\"", log_esc(list[i].info.name));
    }
    free(list);
    if (rc != V_OK)
        return rc;
    return snapshot_prune_orphans(js, c, SNAPSHOT_ORPHAN_AGE_MS, e);
}

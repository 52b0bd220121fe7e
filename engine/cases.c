/* cases.c - review cases in KV (create once, CAS transitions) and the labels resolutions publish (see cases.h). */
#include "cases.h"

#include "broker.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* CAS attempts before an action gives up: each failed attempt means another write landed in between, so a
 * handful covers any realistic burst of clicks on one case. */
#define CAS_TRIES 8
/* Labels are few and precious: the dedup window is long, so a repeated publish within a day stays one label. */
#define LABELS_DUP_WINDOW_NS (24LL * 3600 * 1000000000LL)
#define CASES_HISTORY 16

struct cases {
    jsCtx *js;
    kvStore *kv;
    cases_names names;
    int replicas;
};

void cases_names_of(const config *c, cases_names *n)
{
    config_name(c, NAME_BUCKET, "verdict_cases", n->bucket, sizeof n->bucket);
    config_name(c, NAME_STREAM, "LABELS", n->labels_stream, sizeof n->labels_stream);
    config_name(c, NAME_SUBJECT, "label", n->label_prefix, sizeof n->label_prefix);
    config_name(c, NAME_BUCKET, "verdict_desk", n->consumer, sizeof n->consumer);
    snprintf(n->review_filter, sizeof n->review_filter, "%s.review.>", c->decision_prefix);
}

bool cases_analyst_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CASES_ANALYST_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              c == '.' || c == '@'))
            return false;
    }
    return true;
}

static vstatus labels_stream_ensure(cases *cs, verror *e)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, cs->js, cs->names.labels_stream, NULL, &jerr);
    if (s == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return V_OK;
    }
    char subj[NAME_MAX_LEN + 4];
    snprintf(subj, sizeof subj, "%s.>", cs->names.label_prefix);
    const char *subjects[] = {subj};
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = cs->names.labels_stream;
    sc.Description = "Verdict labels: outcomes of transactions (desk resolutions, chargebacks), label.<txn_id>";
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Duplicates = LABELS_DUP_WINDOW_NS;
    sc.Replicas = cs->replicas > 0 ? cs->replicas : 1;
    s = js_AddStream(&si, cs->js, &sc, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    if (s != NATS_OK && js_GetStreamInfo(&si, cs->js, cs->names.labels_stream, NULL, NULL) == NATS_OK) {
        jsStreamInfo_Destroy(si); /* another desk created it meanwhile */
        return V_OK;
    }
    return s == NATS_OK ? V_OK : broker_err(e, s, jerr, "cannot create the labels stream");
}

vstatus cases_open(jsCtx *js, const config *c, cases **out, verror *e)
{
    *out = NULL;
    cases *cs = calloc(1, sizeof *cs);
    if (!cs)
        return verror_set(e, V_ENOMEM, "out of memory");
    cs->js = js;
    cs->replicas = c->replicas;
    cases_names_of(c, &cs->names);
    natsStatus s = js_KeyValue(&cs->kv, js, cs->names.bucket);
    if (s == NATS_NOT_FOUND) {
        kvConfig kc;
        kvConfig_Init(&kc);
        kc.Bucket = cs->names.bucket;
        kc.Description = "Verdict review cases, key = txn_id (docs/desk.md)";
        kc.History = CASES_HISTORY; /* the revisions are the case's audit trail too */
        kc.Replicas = c->replicas > 0 ? c->replicas : 1;
        s = js_CreateKeyValue(&cs->kv, js, &kc);
        if (s != NATS_OK)
            s = js_KeyValue(&cs->kv, js, cs->names.bucket);
    }
    if (s != NATS_OK) {
        free(cs);
        return broker_err(e, s, 0, "cannot open the cases bucket");
    }
    vstatus st = labels_stream_ensure(cs, e);
    if (st != V_OK) {
        cases_close(cs);
        return st;
    }
    *out = cs;
    return V_OK;
}

void cases_close(cases *cs)
{
    if (!cs)
        return;
    kvStore_Destroy(cs->kv);
    free(cs);
}

const cases_names *cases_get_names(const cases *cs) { return &cs->names; }
kvStore *cases_kv(cases *cs) { return cs->kv; }

static vstatus put_json(cases *cs, const char *key, json_t *o, uint64_t rev, uint64_t *new_rev, natsStatus *ns)
{
    char *s = json_dumps(o, JSON_COMPACT);
    if (!s)
        return V_ENOMEM;
    *ns = rev ? kvStore_Update(new_rev, cs->kv, key, s, (int)strlen(s), rev)
              : kvStore_Create(new_rev, cs->kv, key, s, (int)strlen(s));
    free(s);
    return *ns == NATS_OK ? V_OK : V_ENATS;
}

vstatus cases_create(cases *cs, const Decision *d, uint64_t decision_seq, bool *created, verror *e)
{
    *created = false;
    if (!txn_id_valid(d->txn_id))
        return verror_set(e, V_EINVAL, "decision seq %llu: not a valid txn_id", (unsigned long long)decision_seq);
    json_t *reasons = json_array();
    for (size_t i = 0; reasons && i < d->n_reasons; i++)
        json_array_append_new(reasons,
                              json_pack("{s:s, s:s}", "rule_id", d->reasons[i]->rule_id ? d->reasons[i]->rule_id : "",
                                        "text", d->reasons[i]->text ? d->reasons[i]->text : ""));
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:f, s:o, s:s, s:s, s:I, s:I, s:I, s:s, s:b, s:b, s:[{s:s, s:s, s:I}]}", "txn_id", d->txn_id,
        "state", "open", "outcome", outcome_str(d->outcome), "score", d->score, "reasons",
        reasons ? reasons : json_array(), "rules_version", d->rules_version ? d->rules_version : "", "model_version",
        d->model_version ? d->model_version : "", "decided_at_ms", (json_int_t)d->decided_at_ms, "created_at_ms",
        (json_int_t)d->decided_at_ms, "decision_seq", (json_int_t)decision_seq, "engine_id",
        d->engine_id ? d->engine_id : "", "degraded", d->degraded, "budget_exceeded", d->budget_exceeded, "history",
        "action", "created", "by", "desk", "at_ms", (json_int_t)now_ms());
    if (!o)
        return verror_set(e, V_ENOMEM, "out of memory");
    uint64_t rev = 0;
    natsStatus ns = NATS_OK;
    vstatus st = put_json(cs, d->txn_id, o, 0, &rev, &ns);
    json_decref(o);
    if (st == V_OK) {
        *created = true;
        return V_OK;
    }
    if (st == V_ENOMEM)
        return verror_set(e, V_ENOMEM, "out of memory");
    /* Create fails when the key exists (the dedup) and on any broker failure: tell them apart by reading */
    kvEntry *ent = NULL;
    natsStatus gs = kvStore_Get(&ent, cs->kv, d->txn_id);
    kvEntry_Destroy(ent);
    if (gs == NATS_OK)
        return V_OK;
    return broker_err(e, ns, 0, "cannot create the case");
}

vstatus cases_get(cases *cs, const char *txn_id, json_t **out, verror *e)
{
    *out = NULL;
    if (!txn_id_valid(txn_id))
        return verror_set(e, V_EINVAL, "not a transaction id");
    kvEntry *ent = NULL;
    natsStatus s = kvStore_Get(&ent, cs->kv, txn_id);
    if (s == NATS_NOT_FOUND)
        return verror_set(e, V_ENOTFOUND, "no case for %s", txn_id);
    if (s != NATS_OK)
        return broker_err(e, s, 0, "cannot read the case");
    json_t *o = json_loadb(kvEntry_Value(ent), (size_t)kvEntry_ValueLen(ent), 0, NULL);
    if (o && json_is_object(o))
        json_object_set_new(o, "rev", json_integer((json_int_t)kvEntry_Revision(ent)));
    kvEntry_Destroy(ent);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return verror_set(e, V_EINVAL, "the case of %s is not a JSON object", txn_id);
    }
    *out = o;
    return V_OK;
}

static const char *str_of(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* A transition: decides on the current case c (rev not included) whether to write (return 1, c changed), that
 * nothing needs writing (0), or refuses (V_ECONFLICT / V_EINVAL with e set). arg: the step's own argument. */
typedef int (*case_step)(json_t *c, const char *analyst, const void *arg, int64_t at_ms, verror *e);

static void add_history(json_t *c, const char *action, const char *analyst, int64_t at_ms)
{
    json_t *h = json_object_get(c, "history");
    if (!json_is_array(h)) {
        h = json_array();
        json_object_set_new(c, "history", h);
    }
    json_array_append_new(h, json_pack("{s:s, s:s, s:I}", "action", action, "by", analyst, "at_ms", (json_int_t)at_ms));
}

/* The answer to any action on a resolved case: who resolved it, and how. */
static int refuse_resolved(const json_t *c, verror *e)
{
    return verror_set(e, V_ECONFLICT, "already resolved by %s as %s", str_of(c, "resolved_by"),
                      str_of(c, "resolution"));
}

static int step_claim(json_t *c, const char *analyst, const void *arg, int64_t at_ms, verror *e)
{
    (void)arg;
    const char *st = str_of(c, "state");
    if (strcmp(st, "resolved") == 0)
        return refuse_resolved(c, e);
    if (strcmp(st, "claimed") == 0)
        return strcmp(str_of(c, "claimed_by"), analyst) == 0
                   ? 0
                   : verror_set(e, V_ECONFLICT, "claimed by %s", str_of(c, "claimed_by"));
    json_object_set_new(c, "state", json_string("claimed"));
    json_object_set_new(c, "claimed_by", json_string(analyst));
    json_object_set_new(c, "claimed_at_ms", json_integer((json_int_t)at_ms));
    add_history(c, "claim", analyst, at_ms);
    return 1;
}

static int step_release(json_t *c, const char *analyst, const void *arg, int64_t at_ms, verror *e)
{
    (void)arg;
    const char *st = str_of(c, "state");
    if (strcmp(st, "resolved") == 0)
        return refuse_resolved(c, e);
    if (strcmp(st, "open") == 0)
        return 0;
    if (strcmp(str_of(c, "claimed_by"), analyst) != 0)
        return verror_set(e, V_ECONFLICT, "claimed by %s; only they can release it", str_of(c, "claimed_by"));
    json_object_set_new(c, "state", json_string("open"));
    json_object_del(c, "claimed_by");
    json_object_del(c, "claimed_at_ms");
    add_history(c, "release", analyst, at_ms);
    return 1;
}

static int step_resolve(json_t *c, const char *analyst, const void *arg, int64_t at_ms, verror *e)
{
    const char *resolution = arg;
    const char *st = str_of(c, "state");
    if (strcmp(st, "resolved") == 0) {
        /* our own write whose answer was lost comes back as this: the same resolution by the same analyst */
        if (strcmp(str_of(c, "resolved_by"), analyst) == 0 && strcmp(str_of(c, "resolution"), resolution) == 0)
            return 0;
        return refuse_resolved(c, e);
    }
    if (strcmp(st, "claimed") == 0 && strcmp(str_of(c, "claimed_by"), analyst) != 0)
        return verror_set(e, V_ECONFLICT, "claimed by %s", str_of(c, "claimed_by"));
    json_object_set_new(c, "state", json_string("resolved"));
    json_object_set_new(c, "resolution", json_string(resolution));
    json_object_set_new(c, "resolved_by", json_string(analyst));
    json_object_set_new(c, "resolved_at_ms", json_integer((json_int_t)at_ms));
    add_history(c, resolution, analyst, at_ms);
    return 1;
}

/* Records label_seq (*(const uint64_t *)arg) in the case; nothing else changes. */
static int step_label(json_t *c, const char *analyst, const void *arg, int64_t at_ms, verror *e)
{
    (void)analyst;
    (void)at_ms;
    (void)e;
    json_object_set_new(c, "label_seq", json_integer((json_int_t) * (const uint64_t *)arg));
    return 1;
}

/* The compare-and-set every change to a case goes through: reads the case, lets step judge it, and updates it at
 * the revision read; another write landing in between (or a broker failure) means read again and judge afresh, up
 * to CAS_TRIES times (then e says `fail`). V_OK: *out (if out) is released and replaced by the case after it, with
 * "rev"; on an error *out is left as it was. */
static vstatus case_cas(cases *cs, const char *txn_id, const char *analyst, const void *arg, case_step step,
                        json_t **out, bool *wrote, const char *fail, verror *e)
{
    *wrote = false;
    natsStatus last = NATS_OK;
    for (int attempt = 0; attempt < CAS_TRIES; attempt++) {
        json_t *c = NULL;
        vstatus st = cases_get(cs, txn_id, &c, e);
        if (st != V_OK)
            return st;
        uint64_t rev = (uint64_t)json_integer_value(json_object_get(c, "rev"));
        json_object_del(c, "rev");
        int r = step(c, analyst, arg, now_ms(), e);
        if (r < 0) {
            json_decref(c);
            return (vstatus)r;
        }
        if (r > 0) {
            st = put_json(cs, txn_id, c, rev, &rev, &last); /* rev becomes the new revision */
            if (st != V_OK) {
                json_decref(c);
                if (st == V_ENOMEM)
                    return verror_set(e, V_ENOMEM, "out of memory");
                continue;
            }
            *wrote = true;
        }
        json_object_set_new(c, "rev", json_integer((json_int_t)rev));
        if (out) {
            json_decref(*out);
            *out = c;
        } else {
            json_decref(c);
        }
        return V_OK;
    }
    return broker_err(e, last, 0, fail);
}

/* An analyst's action on a case (the analyst's name checked first). */
static vstatus transition(cases *cs, const char *txn_id, const char *analyst, const char *arg, case_step step,
                          json_t **out, bool *wrote, verror *e)
{
    if (out)
        *out = NULL;
    *wrote = false;
    if (!cases_analyst_valid(analyst))
        return verror_set(e, V_EINVAL, "analyst name must be 1-%d of [A-Za-z0-9_.@-]", CASES_ANALYST_MAX);
    return case_cas(cs, txn_id, analyst, arg, step, out, wrote, "the case keeps changing or cannot be written", e);
}

static void audit(const char *action, const char *txn_id, const char *analyst, const char *detail)
{
    log_info("case action", "\"audit\":true,\"action\":\"%s\",\"txn_id\":\"%s\",\"analyst\":\"%s\"%s%s%s", action,
             txn_id, analyst, detail ? ",\"detail\":\"" : "", detail ? log_esc(detail) : "", detail ? "\"" : "");
}

vstatus cases_claim(cases *cs, const char *txn_id, const char *analyst, json_t **out, verror *e)
{
    bool wrote;
    vstatus st = transition(cs, txn_id, analyst, NULL, step_claim, out, &wrote, e);
    if (st == V_OK && wrote)
        audit("claim", txn_id, analyst, NULL);
    return st;
}

vstatus cases_release(cases *cs, const char *txn_id, const char *analyst, json_t **out, verror *e)
{
    bool wrote;
    vstatus st = transition(cs, txn_id, analyst, NULL, step_release, out, &wrote, e);
    if (st == V_OK && wrote)
        audit("release", txn_id, analyst, NULL);
    return st;
}

vstatus cases_publish_label(cases *cs, const char *txn_id, const char *label, const char *source, const char *by,
                            uint64_t *seq, verror *e)
{
    *seq = 0;
    char subj[NAME_MAX_LEN + 80], id[160], body[512];
    snprintf(subj, sizeof subj, "%s.%s", cs->names.label_prefix, txn_id);
    snprintf(id, sizeof id, "%s-%s", source, txn_id);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I}", "txn_id", txn_id, "label", label, "source", source, "by", by,
                          "at_ms", (json_int_t)now_ms());
    int n = o ? json_dumpb(o, body, sizeof body, JSON_COMPACT) : 0;
    json_decref(o);
    if (n <= 0 || (size_t)n >= sizeof body)
        return verror_set(e, V_ENOMEM, "cannot encode the label");
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subj, NULL, body, n);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Nats-Msg-Id", id);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Content-Type", "application/json");
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    if (s == NATS_OK)
        s = js_PublishMsg(&pa, cs->js, m, NULL, &jerr);
    natsMsg_Destroy(m);
    if (s == NATS_OK)
        *seq = pa->Sequence;
    jsPubAck_Destroy(pa);
    return s == NATS_OK ? V_OK : broker_err(e, s, jerr, "cannot publish the label");
}

static const char *label_of(const char *resolution) { return strcmp(resolution, "fraud") == 0 ? "fraud" : "legit"; }

/* Records label_seq in the case; *out (if out) becomes the case after it. */
static vstatus mark_label(cases *cs, const char *txn_id, uint64_t seq, json_t **out, verror *e)
{
    bool wrote;
    return case_cas(cs, txn_id, "desk", &seq, step_label, out, &wrote, "cannot record the label in the case", e);
}

vstatus cases_resolve(cases *cs, const char *txn_id, const char *analyst, const char *resolution, json_t **out,
                      verror *e)
{
    if (out)
        *out = NULL;
    if (!resolution || (strcmp(resolution, "fraud") != 0 && strcmp(resolution, "legitimate") != 0))
        return verror_set(e, V_EINVAL, "resolution must be fraud or legitimate");
    bool wrote;
    json_t *c = NULL;
    vstatus st = transition(cs, txn_id, analyst, resolution, step_resolve, &c, &wrote, e);
    if (st != V_OK)
        return st;
    if (wrote)
        audit("resolve", txn_id, analyst, resolution);
    if (!json_is_integer(json_object_get(c, "label_seq"))) {
        /* the winner (or the same analyst repeating) publishes; the msg id keeps it one label */
        uint64_t seq = 0;
        verror le = {0};
        if (cases_publish_label(cs, txn_id, label_of(resolution), "desk", analyst, &seq, &le) != V_OK ||
            mark_label(cs, txn_id, seq, &c, &le) != V_OK)
            log_warn("label not recorded yet; the desk publishes it at its next repair pass",
                     "\"txn_id\":\"%s\",\"error\":\"%s\"", txn_id, log_esc(le.msg));
    }
    if (out)
        *out = c;
    else
        json_decref(c);
    return V_OK;
}

vstatus cases_repair_label(cases *cs, const char *txn_id, bool *done, verror *e)
{
    *done = false;
    json_t *c = NULL;
    vstatus st = cases_get(cs, txn_id, &c, e);
    if (st != V_OK)
        return st;
    if (strcmp(str_of(c, "state"), "resolved") != 0 || json_is_integer(json_object_get(c, "label_seq"))) {
        json_decref(c);
        return V_OK;
    }
    char by[CASES_ANALYST_MAX + 1];
    str_copy(by, sizeof by, str_of(c, "resolved_by"));
    const char *label = label_of(str_of(c, "resolution"));
    uint64_t seq = 0;
    st = cases_publish_label(cs, txn_id, label, "desk", by, &seq, e);
    json_decref(c);
    if (st == V_OK)
        st = mark_label(cs, txn_id, seq, NULL, e);
    *done = st == V_OK;
    return st;
}

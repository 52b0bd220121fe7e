/* status_cli.c - `verdict status [--json] [--wait MS]`: one look at a deployment without the nats CLI. The
 * streams (messages, bytes, first and last, replicas, leader), the engines' durable consumer and the DLQ
 * worker's (pending, ack pending, redelivered, waiting pulls, ack floor) and every engine that answers
 * $SRV.STATS.verdict (id, version, rules and model versions, uptime, decisions, requests, errors). Read-only: stream
 * and consumer info and one service request; nothing is created. One JSON model is built and printed as a table or as
 * JSON. */
#include "cases.h"
#include "cli.h"
#include "cliconn.h"
#include "lease.h"
#include "partition.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WAIT_DEFAULT_MS 500
/* the review queue's summary reads every case (a watcher to the end of the bucket); beyond this many it stops */
#define CASES_READ_MAX 200000

static const char *nz(const char *s) { return s ? s : ""; }

static void status_help(void)
{
    printf("usage: verdict status [--json] [--wait MS]\n\n"
           "Prints the streams (TXN, DECISIONS, DLQ, VERDICT_ADVISORIES: messages, bytes, first and last sequence\n"
           "and time, replicas, leader), the engines' consumer on TXN and the DLQ worker's on VERDICT_ADVISORIES\n"
           "(pending, ack pending, redelivered, waiting pulls, ack floor), and every engine that answers\n"
           "$SRV.STATS.verdict within --wait (default %d ms, 50-10000): id, version, rules and model versions,\n"
           "uptime, decisions, requests and errors; and the review queue (verdict_cases): open, claimed and resolved\n"
           "cases and the age of the oldest unresolved one (docs/desk.md).\n"
           "--json prints one JSON object instead. Creates nothing.\n"
           "Exit status: 0 read (a missing stream or consumer is reported, not an error), 1 the server cannot be\n"
           "reached, 2 usage errors.\n\n"
           "options (flag, then its environment variable):\n",
           WAIT_DEFAULT_MS);
    config_print_help(stdout, "names");
}

static json_t *peers_json(const jsClusterInfo *ci)
{
    json_t *a = json_array();
    for (int i = 0; ci && a && i < ci->ReplicasLen; i++) {
        const jsPeerInfo *p = ci->Replicas[i];
        json_array_append_new(a, json_pack("{s:s, s:b, s:b, s:I}", "name", p->Name ? p->Name : "", "current",
                                           p->Current, "offline", p->Offline, "lag", (json_int_t)p->Lag));
    }
    return a;
}

static json_t *stream_json(cliconn *c, const char *name)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, c->js, name, NULL, &jerr);
    if (s != NATS_OK)
        return json_pack("{s:s, s:b, s:s}", "name", name, "exists", false, "error",
                         s == NATS_NOT_FOUND ? "not found" : natsStatus_GetText(s));
    char ft[40], lt[40];
    cliconn_time_ns(si->State.FirstTime, ft, sizeof ft);
    cliconn_time_ns(si->State.LastTime, lt, sizeof lt);
    json_t *o = json_pack("{s:s, s:b, s:I, s:I, s:I, s:s, s:I, s:s, s:I, s:i, s:s?, s:o}", "name", name, "exists", true,
                          "messages", (json_int_t)si->State.Msgs, "bytes", (json_int_t)si->State.Bytes, "first_seq",
                          (json_int_t)si->State.FirstSeq, "first_time", ft, "last_seq", (json_int_t)si->State.LastSeq,
                          "last_time", lt, "deleted", (json_int_t)si->State.NumDeleted, "replicas",
                          si->Config ? (int)si->Config->Replicas : 0, "leader",
                          si->Cluster ? si->Cluster->Leader : NULL, "peers", peers_json(si->Cluster));
    jsStreamInfo_Destroy(si);
    return o;
}

static json_t *consumer_json(cliconn *c, const char *stream, const char *name)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, c->js, stream, name, NULL, &jerr);
    if (s != NATS_OK)
        return json_pack("{s:s, s:s, s:b, s:s}", "stream", stream, "name", name, "exists", false, "error",
                         s == NATS_NOT_FOUND ? "not found" : natsStatus_GetText(s));
    char last[40];
    cliconn_time_ns(ci->Delivered.Last, last, sizeof last);
    json_t *o = json_pack("{s:s, s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:s?}", "stream", stream, "name", name,
                          "exists", true, "pending", (json_int_t)ci->NumPending, "ack_pending",
                          (json_int_t)ci->NumAckPending, "redelivered", (json_int_t)ci->NumRedelivered, "waiting_pulls",
                          (json_int_t)ci->NumWaiting, "delivered_stream_seq", (json_int_t)ci->Delivered.Stream,
                          "ack_floor_stream_seq", (json_int_t)ci->AckFloor.Stream, "last_delivered", last, "leader",
                          ci->Cluster ? ci->Cluster->Leader : NULL);
    jsConsumerInfo_Destroy(ci);
    return o;
}

/* RFC 3339 "2026-11-30T10:00:00Z" (what the engines send as `started`) to seconds since the epoch; -1 if not. */
static int64_t rfc3339_s(const char *s)
{
    struct tm tm = {0};
    const char *end = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    if (!end)
        return -1;
    return (int64_t)timegm(&tm);
}

/* One engine from its $SRV.STATS reply (micro stats_response; engine/observe.c writes it). */
static json_t *engine_json(const json_t *r)
{
    const json_t *md = json_object_get(r, "metadata");
    const json_t *ep = json_array_get(json_object_get(r, "endpoints"), 0);
    const json_t *data = json_object_get(ep, "data");
    const char *started = json_string_value(json_object_get(r, "started"));
    int64_t st = rfc3339_s(started);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:s, s:I}", "id",
                     nz(json_string_value(json_object_get(r, "id"))), "version",
                     nz(json_string_value(json_object_get(r, "version"))), "rules_version",
                     nz(json_string_value(json_object_get(md, "rules_version"))), "model_version",
                     nz(json_string_value(json_object_get(md, "model_version"))), "started", nz(started), "uptime_s",
                     (json_int_t)(st > 0 ? now_ms() / 1000 - st : -1), "decisions",
                     (json_int_t)json_integer_value(json_object_get(data, "decisions")), "requests",
                     (json_int_t)json_integer_value(json_object_get(ep, "num_requests")), "errors",
                     (json_int_t)json_integer_value(json_object_get(ep, "num_errors")), "dead_letters",
                     (json_int_t)json_integer_value(json_object_get(data, "dead_letters")), "last_error",
                     nz(json_string_value(json_object_get(ep, "last_error"))), "partitions",
                     (json_int_t)json_integer_value(json_object_get(data, "partitions")));
}

/* Why a NATS call failed, for an operator: the status's text and the library's last error when it says more. */
static void nats_reason(natsStatus s, char *out, size_t cap)
{
    const char *last = nats_GetLastError(NULL);
    if (last && last[0] && strcmp(last, natsStatus_GetText(s)) != 0)
        snprintf(out, cap, "%s: %s", natsStatus_GetText(s), last);
    else
        snprintf(out, cap, "%s", natsStatus_GetText(s));
}

/* The consumer's lease (--lease-ttl; lease.h): who owns the consumer; or "exists":false when there is no lease
 * entry (no engine uses a lease); or, when it could not be read, "exists" as far as known and "error" saying
 * why. An unreadable lease is not "none": engines may be deciding under one. */
static json_t *lease_json_named(cliconn *c, const char *name)
{
    char bucket[96], why[256];
    lease_bucket(&c->cfg, bucket, sizeof bucket);
    kvStore *kv = NULL;
    natsStatus s = js_KeyValue(&kv, c->js, bucket);
    if (s == NATS_NOT_FOUND)
        return json_pack("{s:s, s:b}", "name", name, "exists", 0);
    if (s != NATS_OK) {
        nats_reason(s, why, sizeof why);
        char err[768];
        snprintf(err, sizeof err, "cannot open the bucket %s: %s", bucket, why);
        return json_pack("{s:s, s:b, s:s}", "name", name, "exists", 0, "error", err);
    }
    kvEntry *e = NULL;
    json_t *out = NULL;
    s = kvStore_Get(&e, kv, name);
    if (s == NATS_NOT_FOUND) {
        out = json_pack("{s:s, s:b}", "name", name, "exists", 0);
    } else if (s != NATS_OK) {
        nats_reason(s, why, sizeof why);
        char err[768];
        snprintf(err, sizeof err, "cannot read %s/%s: %s", bucket, name, why);
        out = json_pack("{s:s, s:b, s:s}", "name", name, "exists", 0, "error", err);
    } else {
        json_error_t je;
        json_t *v = json_loadb(kvEntry_Value(e), (size_t)(kvEntry_ValueLen(e) > 0 ? kvEntry_ValueLen(e) : 0), 0, &je);
        json_t *owner = json_object_get(v, "owner"), *epoch = json_object_get(v, "epoch"),
               *ttl = json_object_get(v, "ttl_ms");
        int64_t age_ms = (now_ms() * 1000000LL - kvEntry_Created(e)) / 1000000LL;
        if (!json_is_string(owner) || !json_is_integer(epoch) || !json_is_integer(ttl)) {
            /* not what lease.c writes: engines treat it as a foreign owner and take it over after a TTL */
            out = json_pack("{s:s, s:b, s:s, s:I}", "name", name, "exists", 1, "error",
                            "the entry is not a lease ({\"owner\",\"epoch\",\"ttl_ms\"})", "revision",
                            (json_int_t)kvEntry_Revision(e));
        } else {
            out = json_pack("{s:s, s:b, s:s, s:I, s:I, s:I, s:I}", "name", name, "exists", 1, "owner",
                            json_string_value(owner), "epoch", (json_int_t)json_integer_value(epoch), "ttl_ms",
                            (json_int_t)json_integer_value(ttl), "renewed_ms_ago",
                            (json_int_t)(age_ms > 0 ? age_ms : 0), "revision", (json_int_t)kvEntry_Revision(e));
        }
        json_decref(v);
        kvEntry_Destroy(e);
    }
    kvStore_Destroy(kv);
    return out ? out : json_pack("{s:s, s:b, s:s}", "name", name, "exists", 0, "error", "out of memory");
}

static json_t *lease_json(cliconn *c)
{
    return lease_json_named(c, c->cfg.consumer);
}

/* Partitioned (--partitions N): per partition, its consumer's counts and its lease's owner. */
static json_t *partitions_json(cliconn *c)
{
    json_t *arr = json_array();
    for (int p = 0; arr && p < c->cfg.partitions; p++) {
        char name[NAME_MAX_LEN + 16];
        partition_consumer(&c->cfg, (unsigned)p, name, sizeof name);
        json_array_append_new(arr, json_pack("{s:i, s:o, s:o}", "partition", p, "consumer",
                                             consumer_json(c, c->cfg.txn_stream, name), "lease",
                                             lease_json_named(c, name)));
    }
    return arr ? arr : json_array();
}

static int by_id(const void *a, const void *b)
{
    const char *x = json_string_value(json_object_get(*(json_t *const *)a, "id"));
    const char *y = json_string_value(json_object_get(*(json_t *const *)b, "id"));
    return strcmp(x ? x : "", y ? y : "");
}

static json_t *engines_json(cliconn *c, int wait_ms)
{
    json_t *replies = cliconn_collect_json(c, "$SRV.STATS.verdict", wait_ms);
    size_t n = json_array_size(replies);
    json_t **v = n ? calloc(n, sizeof *v) : NULL;
    size_t k = 0;
    for (size_t i = 0; v && i < n; i++) {
        json_t *r = json_array_get(replies, i);
        if (strcmp(nz(json_string_value(json_object_get(r, "type"))), "io.nats.micro.v1.stats_response") == 0)
            v[k++] = engine_json(r);
    }
    if (k > 1)
        qsort(v, k, sizeof *v, by_id);
    json_t *out = json_array();
    for (size_t i = 0; i < k; i++)
        json_array_append_new(out, v[i]);
    free(v);
    json_decref(replies);
    return out;
}

static void human_bytes(json_int_t b, char *out, size_t cap)
{
    static const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double x = (double)b;
    int i = 0;
    while (x >= 1024 && i < 4) {
        x /= 1024;
        i++;
    }
    snprintf(out, cap, i ? "%.1f %s" : "%.0f %s", x, u[i]);
}

static void human_uptime(json_int_t s, char *out, size_t cap)
{
    if (s < 0)
        snprintf(out, cap, "?");
    else if (s < 3600)
        snprintf(out, cap, "%lldm%02llds", (long long)s / 60, (long long)s % 60);
    else if (s < 86400)
        snprintf(out, cap, "%lldh%02lldm", (long long)s / 3600, (long long)s % 3600 / 60);
    else
        snprintf(out, cap, "%lldd%02lldh", (long long)s / 86400, (long long)s % 86400 / 3600);
}

/* The review queue (docs/desk.md): cases by state and the age of the oldest unresolved one, read from the cases
 * bucket without creating it. */
static json_t *cases_json(cliconn *c)
{
    cases_names nm;
    cases_names_of(&c->cfg, &nm);
    kvStore *kv = NULL;
    natsStatus s = js_KeyValue(&kv, c->js, nm.bucket);
    if (s != NATS_OK)
        return json_pack("{s:s, s:b, s:s}", "bucket", nm.bucket, "exists", false, "error",
                         s == NATS_NOT_FOUND ? "not found" : natsStatus_GetText(s));
    kvWatchOptions wo;
    kvWatchOptions_Init(&wo);
    wo.IgnoreDeletes = true;
    kvWatcher *w = NULL;
    long long open = 0, claimed = 0, resolved = 0, n = 0;
    int64_t oldest = 0;
    bool complete = false;
    if (kvStore_WatchAll(&w, kv, &wo) == NATS_OK) {
        for (kvEntry *e = NULL; n < CASES_READ_MAX && kvWatcher_Next(&e, w, 5000) == NATS_OK; n++) {
            if (!e) {
                complete = true;
                break;
            }
            json_t *o = json_loadb(kvEntry_Value(e), (size_t)kvEntry_ValueLen(e), 0, NULL);
            const char *st = json_string_value(json_object_get(o, "state"));
            int64_t at = (int64_t)json_integer_value(json_object_get(o, "created_at_ms"));
            bool unresolved = st && (strcmp(st, "open") == 0 || strcmp(st, "claimed") == 0);
            open += st && strcmp(st, "open") == 0;
            claimed += st && strcmp(st, "claimed") == 0;
            resolved += st && strcmp(st, "resolved") == 0;
            if (unresolved && at > 0 && (!oldest || at < oldest))
                oldest = at;
            json_decref(o);
            kvEntry_Destroy(e);
        }
        kvWatcher_Destroy(w);
    }
    kvStore_Destroy(kv);
    return json_pack("{s:s, s:b, s:b, s:I, s:I, s:I, s:I}", "bucket", nm.bucket, "exists", true, "complete", complete,
                     "open", (json_int_t)open, "claimed", (json_int_t)claimed, "resolved", (json_int_t)resolved,
                     "oldest_unresolved_age_s", (json_int_t)(oldest ? (now_ms() - oldest) / 1000 : 0));
}

#define I(o, k) ((long long)json_integer_value(json_object_get((o), (k))))
#define S(o, k) (nz(json_string_value(json_object_get((o), (k)))))

static void print_text(const json_t *st, int wait_ms)
{
    printf("STREAM               MESSAGES      BYTES  FIRST                               LAST                    "
           "            R  LEADER\n");
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(st, "streams"), i, s)
    {
        if (!json_is_true(json_object_get(s, "exists"))) {
            printf("%-18s   (%s)\n", S(s, "name"), S(s, "error"));
            continue;
        }
        char b[32], f[64], l[64];
        human_bytes(I(s, "bytes"), b, sizeof b);
        if (I(s, "last_seq") == 0) { /* never written to */
            snprintf(f, sizeof f, "-");
            snprintf(l, sizeof l, "-");
        } else {
            snprintf(f, sizeof f, "%lld %s", I(s, "first_seq"), S(s, "first_time"));
            snprintf(l, sizeof l, "%lld %s", I(s, "last_seq"), S(s, "last_time"));
        }
        printf("%-18s %10lld %10s  %-34s  %-34s  %lld  %s\n", S(s, "name"), I(s, "messages"), b, f, l, I(s, "replicas"),
               json_is_string(json_object_get(s, "leader")) ? S(s, "leader") : "-");
    }
    const json_t *parts = json_object_get(st, "partitions");
    if (json_is_array(parts)) {
        printf("\nPARTITIONS (%zu: a durable consumer on TXN and a lease each)\n", json_array_size(parts));
        printf("  %-4s %-22s %9s %11s  %s\n", "P", "CONSUMER", "PENDING", "ACK PENDING", "OWNER (EPOCH, RENEWED)");
        json_array_foreach(parts, i, s)
        {
            const json_t *pc = json_object_get(s, "consumer"), *pl = json_object_get(s, "lease");
            char owner[256];
            if (json_is_string(json_object_get(pl, "error")))
                snprintf(owner, sizeof owner, "unreadable: %s", S(pl, "error"));
            else if (!json_is_true(json_object_get(pl, "exists")))
                snprintf(owner, sizeof owner, "none (no engine has taken it)");
            else if (!S(pl, "owner")[0])
                snprintf(owner, sizeof owner, "released (epoch %lld)", I(pl, "epoch"));
            else
                snprintf(owner, sizeof owner, "%s (%lld, %lld ms ago%s)", S(pl, "owner"), I(pl, "epoch"),
                         I(pl, "renewed_ms_ago"), I(pl, "renewed_ms_ago") > I(pl, "ttl_ms") ? ", lapsed" : "");
            if (json_is_true(json_object_get(pc, "exists")))
                printf("  %-4lld %-22s %9lld %11lld  %s\n", I(s, "partition"), S(pc, "name"), I(pc, "pending"),
                       I(pc, "ack_pending"), owner);
            else
                printf("  %-4lld %-22s %9s %11s  %s\n", I(s, "partition"), S(pc, "name"), "-", "-", owner);
        }
    }
    static const char *const which[] = {"consumer", "dlq_consumer"};
    static const char *const what[] = {"the engines' work", "the DLQ worker's advisories"};
    for (size_t k = 0; k < 2; k++) {
        const json_t *c = json_object_get(st, which[k]);
        if (!c)
            continue; /* partitioned: the partitions above */
        printf("\nCONSUMER %s/%s (%s)", S(c, "stream"), S(c, "name"), what[k]);
        if (!json_is_true(json_object_get(c, "exists"))) {
            printf("  %s: no engine has started with these names\n", S(c, "error"));
            continue;
        }
        printf("\n  pending %lld   ack pending %lld   redelivered %lld   waiting pulls %lld\n"
               "  delivered up to stream seq %lld (last %s), acked up to %lld\n",
               I(c, "pending"), I(c, "ack_pending"), I(c, "redelivered"), I(c, "waiting_pulls"),
               I(c, "delivered_stream_seq"), S(c, "last_delivered"), I(c, "ack_floor_stream_seq"));
    }
    const json_t *ls = json_object_get(st, "lease");
    if (!ls)
        ; /* partitioned: a lease per partition, above */
    else if (json_is_string(json_object_get(ls, "error")))
        printf("\nLEASE %s: unreadable: %s\n", S(ls, "name"), S(ls, "error"));
    else if (!json_is_true(json_object_get(ls, "exists")))
        printf("\nLEASE %s: none (engines run without --lease-ttl, or none has started with it)\n", S(ls, "name"));
    else if (!S(ls, "owner")[0])
        printf("\nLEASE %s: released (epoch %lld); a standby takes it on its next poll\n", S(ls, "name"),
               I(ls, "epoch"));
    else
        printf("\nLEASE %s: owned by %s, epoch %lld, TTL %lld ms, renewed %lld ms ago%s\n", S(ls, "name"),
               S(ls, "owner"), I(ls, "epoch"), I(ls, "ttl_ms"), I(ls, "renewed_ms_ago"),
               I(ls, "renewed_ms_ago") > I(ls, "ttl_ms") ? " (lapsed: a standby takes it over)" : "");
    const json_t *cs = json_object_get(st, "cases");
    if (!json_is_true(json_object_get(cs, "exists"))) {
        printf("\nCASES %s: %s (no `verdict desk` has run)\n", S(cs, "bucket"), S(cs, "error"));
    } else {
        char age[32];
        human_uptime(I(cs, "oldest_unresolved_age_s"), age, sizeof age);
        printf("\nCASES %s%s\n  open %lld   claimed %lld   resolved %lld   oldest unresolved %s\n", S(cs, "bucket"),
               json_is_true(json_object_get(cs, "complete")) ? "" : " (not all read)", I(cs, "open"), I(cs, "claimed"),
               I(cs, "resolved"), I(cs, "open") + I(cs, "claimed") ? age : "-");
    }
    const json_t *en = json_object_get(st, "engines");
    printf("\nENGINES (%zu answered $SRV.STATS.verdict within %d ms)\n", json_array_size(en), wait_ms);
    if (json_array_size(en) == 0)
        return;
    bool parted = json_is_array(json_object_get(st, "partitions"));
    printf("  %-20s %-8s %-16s %-16s %-8s %10s %9s %7s%s\n", "ID", "VERSION", "RULES", "MODEL", "UP", "DECISIONS",
           "REQUESTS", "ERRORS", parted ? "  PARTITIONS" : "");
    json_array_foreach(en, i, s)
    {
        char up[32], parts[24] = "";
        human_uptime(I(s, "uptime_s"), up, sizeof up);
        if (parted)
            snprintf(parts, sizeof parts, "  %10lld", I(s, "partitions"));
        printf("  %-20s %-8s %-16s %-16s %-8s %10lld %9lld %7lld%s\n", S(s, "id"), S(s, "version"),
               S(s, "rules_version"), S(s, "model_version")[0] ? S(s, "model_version") : "none", up, I(s, "decisions"),
               I(s, "requests"), I(s, "errors"), parts);
        if (S(s, "last_error")[0])
            printf("  %-20s last error: %s\n", "", S(s, "last_error"));
    }
}

int cmd_status(int argc, char **argv)
{
    int rest[64], nrest = 0;
    if (argc > 64) {
        fprintf(stderr, "verdict status: too many arguments\n");
        return 2;
    }
    cliconn c = {0};
    int rc = cliconn_parse(&c, argc, argv, rest, &nrest, "status", status_help);
    if (rc)
        return rc < 0 ? 0 : rc;
    bool json = false;
    int wait_ms = WAIT_DEFAULT_MS;
    for (int k = 0; k < nrest; k++) {
        const char *a = argv[rest[k]];
        if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "--wait") == 0) {
            char *end = NULL;
            long v = k + 1 < nrest ? strtol(argv[rest[k + 1]], &end, 10) : -1;
            if (!end || *end || v < 50 || v > 10000) {
                fprintf(stderr, "verdict status: --wait takes milliseconds, 50-10000\n");
                return 2;
            }
            wait_ms = (int)v;
            k++;
        } else {
            fprintf(stderr, "verdict status: unknown %s '%s' (see --help)\n", a[0] == '-' ? "option" : "argument", a);
            return 2;
        }
    }
    rc = cliconn_connect(&c, "status");
    if (rc)
        return rc;
    const char *names[] = {c.cfg.txn_stream, c.cfg.decisions_stream, c.cfg.dlq_stream, c.cfg.adv_stream};
    json_t *streams = json_array();
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        json_array_append_new(streams, stream_json(&c, names[i]));
    /* the DLQ worker's durable is the engines' name with _dlq (engine/dlq.c) */
    char dlq_consumer[NAME_MAX_LEN + 8];
    snprintf(dlq_consumer, sizeof dlq_consumer, "%s_dlq", c.cfg.consumer);
    json_t *st = c.cfg.partitions > 0
                     ? json_pack("{s:o, s:o, s:o, s:o, s:o}", "streams", streams, "partitions", partitions_json(&c),
                                 "dlq_consumer", consumer_json(&c, c.cfg.adv_stream, dlq_consumer), "cases",
                                 cases_json(&c), "engines", engines_json(&c, wait_ms))
                     : json_pack("{s:o, s:o, s:o, s:o, s:o, s:o}", "streams", streams, "consumer",
                                 consumer_json(&c, c.cfg.txn_stream, c.cfg.consumer), "dlq_consumer",
                                 consumer_json(&c, c.cfg.adv_stream, dlq_consumer), "lease", lease_json(&c), "cases",
                                 cases_json(&c), "engines", engines_json(&c, wait_ms));
    if (!st) {
        fprintf(stderr, "verdict status: out of memory\n");
        cliconn_close(&c);
        return 1;
    }
    if (json) {
        char *s = json_dumps(st, JSON_COMPACT);
        if (s)
            puts(s);
        free(s);
    } else {
        print_text(st, wait_ms);
    }
    json_decref(st);
    cliconn_close(&c);
    return 0;
}

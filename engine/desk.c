/* desk.c - `verdict desk`: review cases from review decisions, and the analysts' web page (see desk.h).
 *
 * Two threads of its own besides libmicrohttpd's pool: the case maker (a pull loop on the durable consumer
 * verdict_desk, filtered on decision.review.>: decode, kvStore_Create the case, then ack; a crash before the ack
 * redelivers and the Create finds the key, so a case is made once), which also runs the label repair (once the
 * index is loaded, and every REPAIR_EVERY_MS: a resolved case without label_seq gets its label) and the retention
 * sweep (--case-retention: resolved, labelled cases older than that are purged; LABELS keeps the outcome), and the
 * index (a watcher on the cases bucket: every case's summary in memory, so the queue page and the age metric cost
 * no broker round trip).
 * The engine's hot path is untouched: the desk reads what the engine already stores.
 *
 * Access: users from VERDICT_DESK_USERS ("name:secret,...") or --users-file (lines name:secret). A login gives a
 * session cookie (HttpOnly, SameSite=Strict); every API call needs it (or `Authorization: Bearer <session>`).
 * Failed logins are throttled per user name and per client address (a fixed table; 429 with Retry-After while
 * blocked, the secret not checked).
 * Without users the desk starts only on a loopback address, and then any analyst name logs in without a secret.
 * /metrics and /healthz are open (no case data in them). Card data is shown masked and never logged. */
#include "desk.h"

#include "broker.h"
#include "cases.h"
#include "cli.h"
#include "cliconn.h"
#include "codec.h"
#include "featreg.h"
#include "gbdt.h"
#include "history.h"
#include "log.h"
#include "replica.h"
#include "streamread.h"
#include "velocity.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DESK_LISTEN_DEFAULT "127.0.0.1:8490"
#define USERS_MAX 64
#define SESSIONS_MAX 256
#define SESSION_TTL_MS (12LL * 3600 * 1000)
#define BODY_MAX 4096
#define REPAIR_EVERY_MS 10000
#define CARD_HISTORY_MAX 20
#define CARD_SCAN_MAX 200000
#define DETAIL_CACHE 64
#define REASONS_MAX 200
/* login throttling: a fixed table of recently failing user names and client addresses (docs/desk.md, "Access") */
#define LOGIN_TRACK_MAX 1024
#define LOGIN_KEY_MAX 72
#define LOGIN_MAX_FAILURES_DEFAULT 5
#define LOGIN_WINDOW_DEFAULT_MS (5LL * 60 * 1000)
#define LOGIN_BACKOFF_DEFAULT_MS (30LL * 1000)
#define LOGIN_BACKOFF_MAX_DEFAULT_MS (15LL * 60 * 1000)
/* resolved cases are removed from the bucket this long after their resolution (their labels stay in LABELS) */
#define CASE_RETENTION_DEFAULT_MS (30LL * 24 * 3600 * 1000)

/* ---- the index -------------------------------------------------------------------------------------------- */

typedef struct ixe {
    char txn_id[72];
    char state[12];
    char reasons[REASONS_MAX]; /* rule ids, comma-separated */
    char claimed_by[CASES_ANALYST_MAX + 1];
    char resolved_by[CASES_ANALYST_MAX + 1];
    char resolution[16];
    double score;
    int64_t created_at_ms, resolved_at_ms;
    uint64_t rev;
    bool present;
    bool labelled;
} ixe;

/* the transaction values an action may add to a list: kept in memory only, never sent or logged */
typedef struct detail {
    char txn_id[72];
    char card_id[160], device_id[160], ip[160];
    char *json; /* the detail's JSON without the case (the case is read fresh each time) */
} detail;

typedef struct user {
    char name[CASES_ANALYST_MAX + 1];
    char secret[256];
} user;

typedef struct session {
    char id[65];
    char name[CASES_ANALYST_MAX + 1];
    int64_t expires_ms;
} session;

/* Failed logins of one user name ('u') or one client address ('a'). failures count within the window that began
 * at window_start_ms; reaching the limit blocks the key until blocked_until_ms, for backoff_ms, which doubles with
 * every block up to the cap and returns to the base once the key has been quiet for a cap. */
typedef struct login_slot {
    char key[LOGIN_KEY_MAX]; /* "u:<name>" or "a:<address>"; empty: free */
    int failures;
    int64_t window_start_ms, blocked_until_ms, backoff_ms, last_ms;
} login_slot;

typedef struct login_limits {
    int max_failures; /* 0: no limit */
    int64_t window_ms, backoff_ms, backoff_max_ms;
} login_limits;

typedef struct desk {
    cliconn c;
    cases *cs;
    kvStore *lists_kv;
    char listen[128];
    int64_t ack_wait_ms;
    int64_t retention_ms; /* --case-retention: resolved cases older than this are purged; 0 keeps them */
    bool start_new; /* --start new: the consumer, when this desk creates it, begins after the stored reviews */
    atomic_bool stopping;
    /* case maker */
    natsSubscription *sub;
    pthread_t maker;
    bool maker_running;
    atomic_llong created, existed, failed, labels_repaired, purged;
    /* index */
    kvWatcher *watcher;
    pthread_t indexer;
    bool indexer_running;
    atomic_bool loaded;
    pthread_mutex_t mu;
    ixe *items;
    size_t n, cap;
    uint32_t *slots; /* 1 + index into items, 0 empty */
    size_t nslots;
    /* auth */
    user users[USERS_MAX];
    int nusers;
    session sessions[SESSIONS_MAX];
    login_limits lim;
    pthread_mutex_t login_mu; /* MHD's pool runs logins on several threads */
    login_slot logins[LOGIN_TRACK_MAX];
    /* detail (features, card history): one at a time, cached */
    pthread_mutex_t detail_mu;
    featreg *reg;
    velocity_plan *vp;
    int ids[FEAT_MAX];
    int nf;
    replica *lists, *profiles;
    detail cache[DETAIL_CACHE];
    int cache_next;
    struct MHD_Daemon *httpd;
} desk;

static void help(void)
{
    printf("usage: verdict desk [--listen HOST:PORT] [--users-file FILE] [--ack-wait DUR] [--start all|new]\n"
           "                    [--login-max-failures N] [--login-window DUR] [--login-backoff DUR]\n"
           "                    [--login-backoff-max DUR] [--case-retention DUR|0] [connection options]\n\n"
           "The analysts' desk (docs/desk.md). Makes a case in the KV bucket verdict_cases for every review\n"
           "decision (durable consumer verdict_desk on DECISIONS, subjects decision.review.>), and serves the\n"
           "review page on --listen (default %s, env VERDICT_DESK_LISTEN): open cases oldest first, one case\n"
           "with its score, reasons, features and the card's recent decisions, and the actions fraud / legitimate\n"
           "(optionally adding the card, device or IP to a list). A resolution publishes a label to\n"
           "label.<txn_id> in the stream LABELS, which `verdict features --labels-stream LABELS` joins.\n\n"
           "Login: analysts and their secrets from VERDICT_DESK_USERS (\"alice:secret,bob:secret\") or\n"
           "--users-file (env VERDICT_DESK_USERS_FILE; lines name:secret). Without users the desk refuses to\n"
           "listen beyond loopback; on loopback any name logs in. Metrics: /metrics (open cases, oldest open age).\n"
           "--ack-wait: the case maker's AckWait when it creates its consumer (default 30s). --start: where that\n"
           "consumer begins when this desk creates it: all (default: every review decision DECISIONS still holds\n"
           "becomes a case) or new (only decisions stored from now on).\n"
           "--login-max-failures (default %d; 0: no limit): that many failed logins for one user name, or from one\n"
           "client address, within --login-window (default %llds) block further logins of that name or address\n"
           "(429 with Retry-After, the secret not checked) for --login-backoff (default %llds), doubling with every\n"
           "block up to --login-backoff-max (default %llds); a successful login clears the user's failures.\n"
           "--case-retention (default %lldd; 0: forever): resolved cases whose label is published are purged from\n"
           "the bucket that long after their resolution; the labels in LABELS are the lasting record.\n"
           "Features are computed as `verdict features` does: --model (VERDICT_MODEL) names the columns.\n\n"
           "options (flag, then its environment variable):\n",
           DESK_LISTEN_DEFAULT, LOGIN_MAX_FAILURES_DEFAULT, LOGIN_WINDOW_DEFAULT_MS / 1000,
           LOGIN_BACKOFF_DEFAULT_MS / 1000, LOGIN_BACKOFF_MAX_DEFAULT_MS / 1000,
           CASE_RETENTION_DEFAULT_MS / (24LL * 3600 * 1000));
    config_print_help(stdout, "names");
}

static uint32_t ix_hash(const char *s) { return (uint32_t)hash64_str(s); }

static bool ix_grow(desk *d)
{
    size_t ns = d->nslots ? d->nslots * 2 : 1024;
    uint32_t *slots = calloc(ns, sizeof *slots);
    if (!slots)
        return false;
    for (size_t i = 0; i < d->n; i++) {
        size_t h = ix_hash(d->items[i].txn_id) & (ns - 1);
        while (slots[h])
            h = (h + 1) & (ns - 1);
        slots[h] = (uint32_t)i + 1;
    }
    free(d->slots);
    d->slots = slots;
    d->nslots = ns;
    return true;
}

/* The entry of txn_id, created when absent (under mu); NULL when out of memory. */
static ixe *ix_get(desk *d, const char *txn_id, bool create)
{
    if (d->nslots) {
        size_t h = ix_hash(txn_id) & (d->nslots - 1);
        while (d->slots[h]) {
            ixe *e = &d->items[d->slots[h] - 1];
            if (strcmp(e->txn_id, txn_id) == 0)
                return e;
            h = (h + 1) & (d->nslots - 1);
        }
    }
    if (!create)
        return NULL;
    if ((d->n + 1) * 2 > d->nslots && !ix_grow(d))
        return NULL;
    if (d->n == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 1024;
        ixe *ni = realloc(d->items, nc * sizeof *ni);
        if (!ni)
            return NULL;
        d->items = ni;
        d->cap = nc;
    }
    ixe *e = &d->items[d->n];
    memset(e, 0, sizeof *e);
    str_copy(e->txn_id, sizeof e->txn_id, txn_id);
    size_t h = ix_hash(txn_id) & (d->nslots - 1);
    while (d->slots[h])
        h = (h + 1) & (d->nslots - 1);
    d->slots[h] = (uint32_t)d->n + 1;
    d->n++;
    return e;
}

static const char *jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static void ix_apply(desk *d, kvEntry *ent)
{
    const char *key = kvEntry_Key(ent);
    kvOperation op = kvEntry_Operation(ent);
    json_t *o = op == kvOp_Put ? json_loadb(kvEntry_Value(ent), (size_t)kvEntry_ValueLen(ent), 0, NULL) : NULL;
    pthread_mutex_lock(&d->mu);
    ixe *e = ix_get(d, key, o != NULL);
    if (e && !o) {
        e->present = false;
    } else if (e) {
        e->present = true;
        e->rev = kvEntry_Revision(ent);
        str_copy(e->state, sizeof e->state, jstr(o, "state"));
        str_copy(e->claimed_by, sizeof e->claimed_by, jstr(o, "claimed_by"));
        str_copy(e->resolved_by, sizeof e->resolved_by, jstr(o, "resolved_by"));
        str_copy(e->resolution, sizeof e->resolution, jstr(o, "resolution"));
        e->score = json_number_value(json_object_get(o, "score"));
        e->created_at_ms = (int64_t)json_integer_value(json_object_get(o, "created_at_ms"));
        e->resolved_at_ms = (int64_t)json_integer_value(json_object_get(o, "resolved_at_ms"));
        e->labelled = json_is_integer(json_object_get(o, "label_seq"));
        e->reasons[0] = 0;
        size_t i, len = 0;
        json_t *r;
        json_array_foreach(json_object_get(o, "reasons"), i, r)
        {
            int w = snprintf(e->reasons + len, sizeof e->reasons - len, "%s%s", len ? "," : "", jstr(r, "rule_id"));
            if (w < 0 || (size_t)w >= sizeof e->reasons - len)
                break;
            len += (size_t)w;
        }
    }
    pthread_mutex_unlock(&d->mu);
    json_decref(o);
}

static void *indexer_main(void *arg)
{
    desk *d = arg;
    while (!atomic_load(&d->stopping)) {
        kvEntry *ent = NULL;
        natsStatus s = kvWatcher_Next(&ent, d->watcher, 1000);
        if (s == NATS_TIMEOUT)
            continue;
        if (s != NATS_OK) {
            if (atomic_load(&d->stopping))
                break;
            struct timespec ts = {0, 200000000};
            nanosleep(&ts, NULL);
            continue;
        }
        if (!ent) { /* the end of the initial values */
            atomic_store(&d->loaded, true);
            continue;
        }
        ix_apply(d, ent);
        kvEntry_Destroy(ent);
    }
    return NULL;
}

/* ---- the case maker --------------------------------------------------------------------------------------- */

static void repair_labels(desk *d)
{
    char ids[64][72];
    int n = 0;
    int64_t now = now_ms();
    pthread_mutex_lock(&d->mu);
    for (size_t i = 0; i < d->n && n < 64; i++) {
        ixe *e = &d->items[i];
        /* a resolution a moment old is still publishing its own label */
        if (e->present && !e->labelled && strcmp(e->state, "resolved") == 0 && now - e->resolved_at_ms > 5000)
            str_copy(ids[n++], sizeof ids[0], e->txn_id);
    }
    pthread_mutex_unlock(&d->mu);
    for (int i = 0; i < n; i++) {
        bool done = false;
        verror e = {0};
        if (cases_repair_label(d->cs, ids[i], &done, &e) != V_OK)
            log_warn("label repair failed; retried later", "\"txn_id\":\"%s\",\"error\":\"%s\"", ids[i],
                     log_esc(e.msg));
        else if (done) {
            atomic_fetch_add(&d->labels_repaired, 1);
            log_info("label published by repair", "\"txn_id\":\"%s\"", ids[i]);
        }
    }
}

static void handle_decision(desk *d, natsMsg *m, arena *a)
{
    arena_reset(a);
    Decision *dec = decision_decode(a, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    jsMsgMetaData *md = NULL;
    uint64_t seq = 0;
    uint64_t deliveries = 1;
    if (natsMsg_GetMetaData(&md, m) == NATS_OK) {
        seq = md->Sequence.Stream;
        deliveries = md->NumDelivered;
    }
    jsMsgMetaData_Destroy(md);
    if (!dec || !txn_id_valid(dec->txn_id)) {
        /* not a decision: nothing can ever make a case of it */
        log_warn("not a decision, skipped", "\"stream_seq\":%llu", (unsigned long long)seq);
        natsMsg_Term(m, NULL);
        return;
    }
    bool created = false;
    verror e = {0};
    if (cases_create(d->cs, dec, seq, &created, &e) != V_OK) {
        atomic_fetch_add(&d->failed, 1);
        log_warn("case not created; will retry", "\"txn_id\":\"%s\",\"error\":\"%s\"", dec->txn_id, log_esc(e.msg));
        natsMsg_NakWithDelay(m, 2000, NULL);
        return;
    }
    atomic_fetch_add(created ? &d->created : &d->existed, 1);
    if (created)
        log_info("case created", "\"txn_id\":\"%s\",\"stream_seq\":%llu", dec->txn_id, (unsigned long long)seq);
    else
        log_info("review decision delivered again; its case exists", "\"txn_id\":\"%s\",\"deliveries\":%llu",
                 dec->txn_id, (unsigned long long)deliveries);
    /* test fault: leave the first delivery unacknowledged, so the redelivery path is exercised */
    if (strcmp(d->c.cfg.fault, "desk_noack_first") == 0 && deliveries == 1)
        return;
    if (natsMsg_AckSync(m, NULL, NULL) != NATS_OK)
        log_warn("ack failed; the redelivery finds the case made", "\"txn_id\":\"%s\"", dec->txn_id);
}

/* Drops the index's entries of removed cases (under mu) once they are most of it: the watcher reports a purge as
 * an entry with present false, and without this a long-running desk would keep a summary of every case it ever
 * saw. */
static void ix_compact(desk *d)
{
    size_t keep = 0;
    for (size_t i = 0; i < d->n; i++)
        if (d->items[i].present)
            d->items[keep++] = d->items[i];
    if (keep == d->n)
        return;
    d->n = keep;
    memset(d->slots, 0, d->nslots * sizeof *d->slots);
    for (size_t i = 0; i < d->n; i++) {
        size_t h = ix_hash(d->items[i].txn_id) & (d->nslots - 1);
        while (d->slots[h])
            h = (h + 1) & (d->nslots - 1);
        d->slots[h] = (uint32_t)i + 1;
    }
}

/* The retention sweep (--case-retention): purges resolved cases whose label is published (label_seq set: the
 * label in LABELS is the lasting record) and whose resolution is older than the retention. Open and claimed cases
 * are never touched, nor a resolved one still waiting for its label. A resolved case never changes again, so the
 * purge needs no revision check. kvStore_Purge leaves one small marker per key (the watchers, this desk's index
 * among them, see it as a removal); the markers themselves are removed by kvStore_PurgeDeletes, at most hourly. */
static void sweep_resolved(desk *d, int64_t *next_markers_ms)
{
    enum { BATCH = 256 };
    static char ids[BATCH][72]; /* the maker thread's alone */
    int n = 0;
    size_t removed = 0;
    int64_t now = now_ms();
    pthread_mutex_lock(&d->mu);
    for (size_t i = 0; i < d->n; i++) {
        const ixe *e = &d->items[i];
        removed += !e->present;
        if (n < BATCH && e->present && e->labelled && e->resolved_at_ms > 0 && strcmp(e->state, "resolved") == 0 &&
            now - e->resolved_at_ms > d->retention_ms)
            str_copy(ids[n++], sizeof ids[0], e->txn_id);
    }
    if (removed > 1024 && removed * 2 > d->n)
        ix_compact(d);
    pthread_mutex_unlock(&d->mu);
    for (int i = 0; i < n; i++) {
        natsStatus s = kvStore_Purge(cases_kv(d->cs), ids[i], NULL);
        if (s != NATS_OK) {
            log_warn("resolved case not purged; retried later", "\"txn_id\":\"%s\",\"error\":\"%s\"", ids[i],
                     natsStatus_GetText(s));
            break;
        }
        atomic_fetch_add(&d->purged, 1);
        log_info("resolved case purged", "\"audit\":true,\"txn_id\":\"%s\",\"retention_s\":%lld", ids[i],
                 (long long)(d->retention_ms / 1000));
    }
    int64_t mono = mono_ns() / 1000000;
    if (n > 0 && *next_markers_ms == 0)
        *next_markers_ms = mono + 3600 * 1000; /* markers of this sweep's purges, once they are old enough */
    if (*next_markers_ms && mono >= *next_markers_ms) {
        /* the default keeps markers younger than 30 minutes, so that other watchers see the removal first */
        natsStatus s = kvStore_PurgeDeletes(cases_kv(d->cs), NULL);
        if (s != NATS_OK)
            log_warn("purge markers of removed cases not cleared; retried later", "\"error\":\"%s\"",
                     natsStatus_GetText(s));
        *next_markers_ms = s == NATS_OK ? 0 : mono + 600 * 1000;
    }
}

/* The sweep at start once the index is loaded, then every retention/2 (0.5 s to REPAIR_EVERY_MS). */
static void maybe_sweep(desk *d, int64_t *next_ms, int64_t *next_markers_ms)
{
    if (d->retention_ms <= 0 || !atomic_load(&d->loaded) || mono_ns() / 1000000 < *next_ms)
        return;
    sweep_resolved(d, next_markers_ms);
    int64_t every = d->retention_ms / 2;
    every = every < 500 ? 500 : every > REPAIR_EVERY_MS ? REPAIR_EVERY_MS : every;
    *next_ms = mono_ns() / 1000000 + every;
}

static vstatus bind_maker(desk *d, verror *e);

/* The repair pass once the index is loaded, then every REPAIR_EVERY_MS. */
static void maybe_repair(desk *d, int64_t *next_ms)
{
    if (!atomic_load(&d->loaded) || mono_ns() / 1000000 < *next_ms)
        return;
    repair_labels(d);
    *next_ms = mono_ns() / 1000000 + REPAIR_EVERY_MS;
}

static void *maker_main(void *arg)
{
    desk *d = arg;
    arena a = {0};
    if (arena_init(&a, 1 << 16) != V_OK) {
        log_error("case maker: out of memory", NULL);
        return NULL;
    }
    int64_t next_repair = 0, next_sweep = 0, next_markers = 0;
    /* the decisions stream is the engine's: until it exists (a desk started first) the page still serves */
    for (int tries = 0; !d->sub && !atomic_load(&d->stopping); tries++) {
        verror e = {0};
        if (bind_maker(d, &e) == V_OK)
            break;
        if (tries == 0)
            log_warn("no case maker yet; retrying every 2 s", "\"error\":\"%s\"", log_esc(e.msg));
        maybe_repair(d, &next_repair);
        maybe_sweep(d, &next_sweep, &next_markers);
        for (int i = 0; i < 20 && !atomic_load(&d->stopping); i++) {
            struct timespec ts = {0, 100000000};
            nanosleep(&ts, NULL);
        }
    }
    while (!atomic_load(&d->stopping)) {
        maybe_repair(d, &next_repair);
        maybe_sweep(d, &next_sweep, &next_markers);
        natsMsgList list = {0};
        natsStatus s = broker_fetch(d->sub, &list, 32, 500, NULL);
        if (s == NATS_TIMEOUT)
            continue;
        if (s != NATS_OK) {
            natsMsgList_Destroy(&list);
            struct timespec ts = {0, 200000000};
            nanosleep(&ts, NULL);
            continue;
        }
        for (int i = 0; i < list.Count; i++)
            handle_decision(d, list.Msgs[i], &a);
        natsMsgList_Destroy(&list);
    }
    arena_free(&a);
    return NULL;
}

/* Creates (when absent) and binds the desk's durable on DECISIONS. */
static vstatus bind_maker(desk *d, verror *e)
{
    const cases_names *nm = cases_get_names(d->cs);
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, d->c.js, d->c.cfg.decisions_stream, nm->consumer, NULL, &jerr);
    if (s != NATS_OK) {
        jsConsumerConfig cc;
        jsConsumerConfig_Init(&cc);
        cc.Durable = nm->consumer;
        cc.Description = "Verdict desk: a case for every review decision";
        cc.FilterSubject = nm->review_filter;
        cc.AckPolicy = js_AckExplicit;
        /* by default a first start makes cases of the reviews already stored (DECISIONS' max age bounds them) */
        cc.DeliverPolicy = d->start_new ? js_DeliverNew : js_DeliverAll;
        cc.AckWait = d->ack_wait_ms * 1000000LL;
        cc.MaxDeliver = -1; /* a review must never be dropped: failures are naked and retried */
        cc.MaxAckPending = 1000;
        s = js_AddConsumer(&ci, d->c.js, d->c.cfg.decisions_stream, &cc, NULL, &jerr);
    }
    jsConsumerInfo_Destroy(ci);
    if (s != NATS_OK)
        return broker_err(e, s, jerr, "cannot create the desk's consumer on the decisions stream");
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = d->c.cfg.decisions_stream;
    so.Consumer = nm->consumer;
    so.ManualAck = true;
    s = js_PullSubscribe(&d->sub, d->c.js, "", nm->consumer, NULL, &so, &jerr);
    if (s != NATS_OK)
        return broker_err(e, s, jerr, "cannot bind the desk's consumer");
    log_info("case maker bound", "\"stream\":\"%s\",\"consumer\":\"%s\",\"filter\":\"%s\"", d->c.cfg.decisions_stream,
             nm->consumer, nm->review_filter);
    return V_OK;
}

static vstatus start_maker(desk *d, verror *e)
{
    if (pthread_create(&d->maker, NULL, maker_main, d) != 0)
        return verror_set(e, V_ENOMEM, "cannot start the case maker");
    d->maker_running = true;
    return V_OK;
}

/* ---- auth ------------------------------------------------------------------------------------------------- */

static bool secret_eq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char x = (unsigned char)(la != lb);
    for (size_t i = 0; i < la; i++)
        x |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return x == 0;
}

static bool add_user(desk *d, const char *entry, size_t len, char *why, size_t cap)
{
    const char *colon = memchr(entry, ':', len);
    if (!colon) {
        snprintf(why, cap, "a user is name:secret");
        return false;
    }
    if (d->nusers == USERS_MAX) {
        snprintf(why, cap, "more than %d users", USERS_MAX);
        return false;
    }
    user *u = &d->users[d->nusers];
    size_t nl = (size_t)(colon - entry), sl = len - nl - 1;
    if (nl >= sizeof u->name || sl >= sizeof u->secret || sl == 0) {
        snprintf(why, cap, "a user's name is 1-%d characters and the secret 1-255", CASES_ANALYST_MAX);
        return false;
    }
    memcpy(u->name, entry, nl);
    u->name[nl] = 0;
    memcpy(u->secret, colon + 1, sl);
    u->secret[sl] = 0;
    if (!cases_analyst_valid(u->name)) {
        snprintf(why, cap, "user name '%s' is not 1-%d of [A-Za-z0-9_.@-]", u->name, CASES_ANALYST_MAX);
        return false;
    }
    d->nusers++;
    return true;
}

static bool load_users(desk *d, const char *env, const char *file, char *why, size_t cap)
{
    for (const char *p = env; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len && !add_user(d, p, len, why, cap))
            return false;
        p = comma ? comma + 1 : p + len;
    }
    if (file && file[0]) {
        FILE *f = fopen(file, "r");
        if (!f) {
            snprintf(why, cap, "cannot open the users file: %s", strerror(errno));
            return false;
        }
        char line[400];
        while (fgets(line, sizeof line, f)) {
            size_t len = strlen(line);
            while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                line[--len] = 0;
            if (len == 0 || line[0] == '#')
                continue;
            if (!add_user(d, line, len, why, cap)) {
                fclose(f);
                return false;
            }
        }
        fclose(f);
    }
    return true;
}

static bool random_hex(char *out, size_t bytes)
{
    unsigned char b[32];
    if (bytes > sizeof b)
        return false;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool ok = read(fd, b, bytes) == (ssize_t)bytes;
    close(fd);
    for (size_t i = 0; ok && i < bytes; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
    return ok;
}

/* A new session for name (under mu); false when none can be made. */
static bool session_new(desk *d, const char *name, char *id_out)
{
    int64_t now = now_ms();
    int slot = 0;
    for (int i = 0; i < SESSIONS_MAX; i++) {
        if (d->sessions[i].expires_ms < now) {
            slot = i;
            break;
        }
        if (d->sessions[i].expires_ms < d->sessions[slot].expires_ms)
            slot = i; /* all live: the oldest makes room */
    }
    session *s = &d->sessions[slot];
    if (!random_hex(s->id, 32))
        return false;
    str_copy(s->name, sizeof s->name, name);
    s->expires_ms = now + SESSION_TTL_MS;
    memcpy(id_out, s->id, sizeof s->id);
    return true;
}

/* The analyst of the request's session, copied into name; false when it has none. */
static bool session_of(desk *d, struct MHD_Connection *c, char *name, size_t cap)
{
    const char *id = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, "verdict_desk");
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!id && auth && strncmp(auth, "Bearer ", 7) == 0)
        id = auth + 7;
    if (!id || strlen(id) != 64)
        return false;
    bool ok = false;
    int64_t now = now_ms();
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < SESSIONS_MAX && !ok; i++)
        if (d->sessions[i].expires_ms > now && secret_eq(d->sessions[i].id, id)) {
            ok = str_copy(name, cap, d->sessions[i].name);
        }
    pthread_mutex_unlock(&d->mu);
    return ok;
}

static void session_end(desk *d, const char *name, struct MHD_Connection *c)
{
    const char *id = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, "verdict_desk");
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < SESSIONS_MAX; i++)
        if (id && strcmp(d->sessions[i].id, id) == 0 && strcmp(d->sessions[i].name, name) == 0)
            d->sessions[i].expires_ms = 0;
    pthread_mutex_unlock(&d->mu);
}

/* ---- login throttling --------------------------------------------------------------------------------------- */

/* The slot of key (under login_mu); NULL when absent and !create. A new key takes a free slot, else the least
 * recently failing one that is not blocked, else the one whose block ends first: the table stays bounded, and a
 * flood of other names evicts blocked keys last. */
static login_slot *login_slot_of(desk *d, const char *key, bool create, int64_t now)
{
    login_slot *free_slot = NULL, *idle = NULL, *soonest = NULL;
    for (int i = 0; i < LOGIN_TRACK_MAX; i++) {
        login_slot *s = &d->logins[i];
        if (!s->key[0]) {
            if (!free_slot)
                free_slot = s;
        } else if (strcmp(s->key, key) == 0) {
            return s;
        } else if (s->blocked_until_ms <= now) {
            if (!idle || s->last_ms < idle->last_ms)
                idle = s;
        } else if (!soonest || s->blocked_until_ms < soonest->blocked_until_ms) {
            soonest = s;
        }
    }
    if (!create)
        return NULL;
    login_slot *s = free_slot ? free_slot : idle ? idle : soonest;
    memset(s, 0, sizeof *s);
    str_copy(s->key, sizeof s->key, key);
    return s;
}

/* How long key is still blocked, in ms (under login_mu); 0: not blocked. */
static int64_t login_wait_ms(desk *d, const char *key, int64_t now)
{
    login_slot *s = key[0] ? login_slot_of(d, key, false, now) : NULL;
    return s && s->blocked_until_ms > now ? s->blocked_until_ms - now : 0;
}

/* Counts a failed login against key (under login_mu); the block it starts, in ms, or 0. */
static int64_t login_failed(desk *d, const char *key, int64_t now)
{
    if (!key[0])
        return 0;
    login_slot *s = login_slot_of(d, key, true, now);
    int64_t quiet_since = s->last_ms > s->blocked_until_ms ? s->last_ms : s->blocked_until_ms;
    if (s->backoff_ms == 0 || now - quiet_since >= d->lim.backoff_max_ms)
        s->backoff_ms = d->lim.backoff_ms;
    if (now - s->window_start_ms >= d->lim.window_ms) {
        s->window_start_ms = now;
        s->failures = 0;
    }
    s->last_ms = now;
    if (++s->failures < d->lim.max_failures)
        return 0;
    int64_t block = s->backoff_ms;
    s->blocked_until_ms = now + block;
    s->backoff_ms = block * 2 < d->lim.backoff_max_ms ? block * 2 : d->lim.backoff_max_ms;
    s->failures = 0;
    s->window_start_ms = now;
    return block;
}

/* The request's client address as text ("?" when MHD does not say). Behind a reverse proxy this is the proxy's:
 * X-Forwarded-For is not trusted, as any client can send it. */
static void client_address(struct MHD_Connection *c, char *out, size_t cap)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    const char *r = NULL;
    if (sa && sa->sa_family == AF_INET)
        r = inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out, (socklen_t)cap);
    else if (sa && sa->sa_family == AF_INET6)
        r = inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out, (socklen_t)cap);
    if (!r)
        str_copy(out, cap, "?");
}

/* ---- HTTP ------------------------------------------------------------------------------------------------- */

typedef struct req {
    char body[BODY_MAX + 1];
    size_t len;
    bool too_big;
} req;

/* A response with the desk's security headers and one more header (hname: hvalue) when hname is not NULL. */
static enum MHD_Result reply_hdr(struct MHD_Connection *c, unsigned code, const char *type, const char *body,
                                 size_t len, const char *hname, const char *hvalue)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
    if (hname)
        MHD_add_response_header(r, hname, hvalue);
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const char *type, const char *body, size_t len,
                             const char *cookie)
{
    return reply_hdr(c, code, type, body, len, cookie ? "Set-Cookie" : NULL, cookie);
}

static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned code, json_t *o, const char *cookie)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s)
        return reply(c, 500, "application/json", "{\"error\":\"out of memory\"}", 25, NULL);
    enum MHD_Result r = reply(c, code, "application/json; charset=utf-8", s, strlen(s), cookie);
    free(s);
    return r;
}

static enum MHD_Result reply_err(struct MHD_Connection *c, unsigned code, const char *msg)
{
    return reply_json(c, code, json_pack("{s:s}", "error", msg), NULL);
}

static size_t metrics(desk *d, char *buf, size_t cap)
{
    long long open = 0, claimed = 0, resolved = 0;
    int64_t oldest = 0, now = now_ms();
    pthread_mutex_lock(&d->mu);
    for (size_t i = 0; i < d->n; i++) {
        const ixe *e = &d->items[i];
        if (!e->present)
            continue;
        bool o = strcmp(e->state, "open") == 0, cl = strcmp(e->state, "claimed") == 0;
        open += o;
        claimed += cl;
        resolved += strcmp(e->state, "resolved") == 0;
        if ((o || cl) && e->created_at_ms > 0 && (oldest == 0 || e->created_at_ms < oldest))
            oldest = e->created_at_ms;
    }
    pthread_mutex_unlock(&d->mu);
    int n = snprintf(
        buf, cap,
        "# HELP verdict_desk_cases Cases in the verdict_cases bucket by state.\n# TYPE verdict_desk_cases gauge\n"
        "verdict_desk_cases{state=\"open\"} %lld\nverdict_desk_cases{state=\"claimed\"} %lld\n"
        "verdict_desk_cases{state=\"resolved\"} %lld\n"
        "# HELP verdict_desk_oldest_unresolved_age_seconds Age of the oldest open or claimed case (since its "
        "decision).\n"
        "# TYPE verdict_desk_oldest_unresolved_age_seconds gauge\nverdict_desk_oldest_unresolved_age_seconds %.3f\n"
        "# HELP verdict_desk_cases_created_total Cases this desk created.\n# TYPE verdict_desk_cases_created_total "
        "counter\n"
        "verdict_desk_cases_created_total %lld\n"
        "# HELP verdict_desk_decisions_already_cases_total Review decisions delivered again whose case existed.\n"
        "# TYPE verdict_desk_decisions_already_cases_total counter\nverdict_desk_decisions_already_cases_total %lld\n"
        "# HELP verdict_desk_case_failures_total Case creations that failed and were retried.\n"
        "# TYPE verdict_desk_case_failures_total counter\nverdict_desk_case_failures_total %lld\n"
        "# HELP verdict_desk_labels_repaired_total Labels published by the repair pass.\n"
        "# TYPE verdict_desk_labels_repaired_total counter\nverdict_desk_labels_repaired_total %lld\n"
        "# HELP verdict_desk_cases_purged_total Resolved cases this desk purged after --case-retention.\n"
        "# TYPE verdict_desk_cases_purged_total counter\nverdict_desk_cases_purged_total %lld\n"
        "# HELP verdict_desk_index_loaded 1 once the case index holds every case.\n# TYPE verdict_desk_index_loaded "
        "gauge\n"
        "verdict_desk_index_loaded %d\n",
        open, claimed, resolved, oldest ? (double)(now - oldest) / 1000.0 : 0.0, (long long)atomic_load(&d->created),
        (long long)atomic_load(&d->existed), (long long)atomic_load(&d->failed),
        (long long)atomic_load(&d->labels_repaired), (long long)atomic_load(&d->purged),
        atomic_load(&d->loaded) ? 1 : 0);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static int cmp_created(const void *a, const void *b)
{
    const ixe *x = a, *y = b;
    if (x->created_at_ms != y->created_at_ms)
        return x->created_at_ms < y->created_at_ms ? -1 : 1;
    return strcmp(x->txn_id, y->txn_id);
}

static bool has_reason(const char *list, const char *want)
{
    size_t wl = strlen(want);
    for (const char *p = list; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == wl && memcmp(p, want, wl) == 0)
            return true;
        p += len + (comma ? 1 : 0);
    }
    return false;
}

static enum MHD_Result api_list(desk *d, struct MHD_Connection *c)
{
    const char *state = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "state");
    const char *reason = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "reason");
    const char *min = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "min_score");
    const char *lim = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
    double min_score = min && *min ? strtod(min, NULL) : 0;
    long limit = lim && *lim ? strtol(lim, NULL, 10) : 500;
    if (limit < 1 || limit > 5000)
        limit = 500;
    bool unresolved = !state || !*state || strcmp(state, "unresolved") == 0;
    bool all = state && strcmp(state, "all") == 0;
    pthread_mutex_lock(&d->mu);
    ixe *sel = d->n ? malloc(d->n * sizeof *sel) : NULL;
    size_t n = 0;
    long long counts[3] = {0, 0, 0};
    for (size_t i = 0; sel && i < d->n; i++) {
        const ixe *e = &d->items[i];
        if (!e->present)
            continue;
        counts[strcmp(e->state, "open") == 0 ? 0 : strcmp(e->state, "claimed") == 0 ? 1 : 2]++;
        bool st_ok = all || (unresolved ? strcmp(e->state, "resolved") != 0 : strcmp(e->state, state) == 0);
        if (st_ok && e->score >= min_score && (!reason || !*reason || has_reason(e->reasons, reason)))
            sel[n++] = *e;
    }
    pthread_mutex_unlock(&d->mu);
    if (d->n && !sel)
        return reply_err(c, 500, "out of memory");
    if (n > 1)
        qsort(sel, n, sizeof *sel, cmp_created);
    json_t *arr = json_array();
    int64_t now = now_ms();
    for (size_t i = 0; arr && i < n && (long)i < limit; i++) {
        const ixe *e = &sel[i];
        json_array_append_new(
            arr, json_pack("{s:s, s:s, s:f, s:s, s:I, s:I, s:s, s:s, s:s, s:I}", "txn_id", e->txn_id, "state", e->state,
                           "score", e->score, "reasons", e->reasons, "created_at_ms", (json_int_t)e->created_at_ms,
                           "age_s", (json_int_t)((now - e->created_at_ms) / 1000), "claimed_by", e->claimed_by,
                           "resolution", e->resolution, "resolved_by", e->resolved_by, "rev", (json_int_t)e->rev));
    }
    free(sel);
    return reply_json(c, 200,
                      json_pack("{s:o, s:I, s:{s:I, s:I, s:I}, s:b}", "cases", arr ? arr : json_array(), "matched",
                                (json_int_t)n, "counts", "open", (json_int_t)counts[0], "claimed",
                                (json_int_t)counts[1], "resolved", (json_int_t)counts[2], "loaded",
                                atomic_load(&d->loaded)),
                      NULL);
}

/* ---- one case's detail: the transaction (masked), the features serving computed, the card's decisions ---- */

typedef struct feat_ctx {
    desk *d;
    velocity *v;
    uint64_t seq;
    fval vals[FEAT_MAX];
    bool got;
} feat_ctx;

/* The serving step for one transaction (decide_run's feature stages; `verdict features` does the same), with
 * the state history_run warmed: the range is the case's transaction alone. */
static bool feat_row(void *ctx, const Transaction *t, uint64_t seq, int64_t event_ms)
{
    feat_ctx *f = ctx;
    desk *d = f->d;
    features_from_txn(d->reg, t, event_ms, f->vals);
    if (d->lists || d->profiles)
        replica_fill(d->lists, d->profiles, d->reg, f->vals);
    if (f->v)
        velocity_features_and_add(f->v, d->vp, f->vals, event_ms);
    f->got = seq == f->seq;
    return !f->got;
}

/* [{name, value}] in the columns' order (value null when missing), or NULL with why. */
static json_t *features_json(desk *d, uint64_t seq, char *why, size_t cap)
{
    verror e = {0};
    feat_ctx *f = calloc(1, sizeof *f);
    if (!f) {
        snprintf(why, cap, "out of memory");
        return NULL;
    }
    f->d = d;
    f->seq = seq;
    if (d->vp->n > 0) {
        velocity_cfg vc = {.max_keys = (size_t)d->c.cfg.max_keys};
        if (velocity_new(d->vp, &vc, &f->v, &e) != V_OK) {
            snprintf(why, cap, "%.300s", e.msg);
            free(f);
            return NULL;
        }
    }
    history_range range = {.from_seq = seq, .to_seq = seq};
    history_stats hs;
    json_t *arr = NULL;
    if (history_run(d->c.js, &d->c.cfg, f->v ? d->vp : NULL, f->v, &range, "desk", feat_row, f, &hs, &e) != V_OK) {
        snprintf(why, cap, "%.300s", e.msg);
    } else if (!f->got) {
        snprintf(why, cap, "the transaction at %s seq %llu does not decode", d->c.cfg.txn_stream,
                 (unsigned long long)seq);
    } else {
        arr = json_array();
        for (int i = 0; arr && i < d->nf; i++) {
            const fval *v = &f->vals[d->ids[i]];
            json_t *val = !v->present ? json_null() : v->type == FT_BOOL ? json_boolean(v->b) : json_real(v->num);
            json_array_append_new(arr, json_pack("{s:s, s:o}", "name", d->reg->defs[d->ids[i]].name, "value", val));
        }
        if (hs.warm_truncated)
            snprintf(why, cap,
                     "TXN no longer holds the whole window before this transaction: velocity features "
                     "may read low");
    }
    velocity_free(f->v);
    free(f);
    return arr;
}

static const char *channel_name(int v)
{
    switch (v) {
    case VERDICT__V1__CHANNEL__CHANNEL_ECOM: return "ecom";
    case VERDICT__V1__CHANNEL__CHANNEL_POS: return "pos";
    case VERDICT__V1__CHANNEL__CHANNEL_ATM: return "atm";
    case VERDICT__V1__CHANNEL__CHANNEL_MOTO: return "moto";
    default: return "unspecified";
    }
}

typedef struct hist_row {
    char txn_id[72];
    int64_t created_at_ms, amount_minor;
    char currency[8];
} hist_row;

/* The card's transactions in TXN from a day before the case's to the stream's end (at most CARD_SCAN_MAX
 * read, the last CARD_HISTORY_MAX kept), each with its decision. TXN is not indexed by card: this is a scan. */
static json_t *card_history(desk *d, const char *card_id, int64_t from_ns, char *note, size_t cap)
{
    json_t *arr = json_array();
    if (!arr || !card_id[0])
        return arr;
    stream_reader *r = NULL;
    verror e = {0};
    if (stream_reader_open(d->c.js, d->c.cfg.txn_stream, NULL, 0, from_ns, &r, &e) != V_OK) {
        snprintf(note, cap, "cannot read %s: %.150s", d->c.cfg.txn_stream, e.msg);
        return arr;
    }
    arena a = {0};
    hist_row *rows = calloc(CARD_HISTORY_MAX, sizeof *rows);
    if (!rows || arena_init(&a, txn_arena_size((size_t)d->c.cfg.max_msg_size)) != V_OK) {
        free(rows);
        stream_reader_close(r);
        return arr;
    }
    uint64_t read = 0, found = 0;
    for (;;) {
        natsMsg *m = NULL;
        uint64_t seq;
        int64_t ts;
        vstatus st = stream_reader_next(r, &m, &seq, &ts, 5000, &e);
        if (st != V_OK) {
            if (st != V_ENOTFOUND)
                snprintf(note, cap, "reading %s stopped: %.150s", d->c.cfg.txn_stream, e.msg);
            break;
        }
        if (++read > CARD_SCAN_MAX) {
            natsMsg_Destroy(m);
            snprintf(note, cap, "only the first %d transactions after a day before this one were searched",
                     CARD_SCAN_MAX);
            break;
        }
        arena_reset(&a);
        Transaction *t = NULL;
        poison_reason pr;
        if (txn_decode(&a, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), (size_t)d->c.cfg.max_msg_size, &t, &pr,
                       NULL) == V_OK &&
            strcmp(t->card_id, card_id) == 0) {
            hist_row *h = &rows[found++ % CARD_HISTORY_MAX];
            str_copy(h->txn_id, sizeof h->txn_id, t->txn_id);
            h->created_at_ms = t->created_at_ms;
            h->amount_minor = t->amount_minor;
            str_copy(h->currency, sizeof h->currency, t->currency);
        }
        natsMsg_Destroy(m);
    }
    stream_reader_close(r);
    arena_free(&a);
    uint64_t kept = found < CARD_HISTORY_MAX ? found : CARD_HISTORY_MAX;
    arena da = {0};
    if (arena_init(&da, 1 << 16) != V_OK) {
        free(rows);
        return arr;
    }
    for (uint64_t k = 0; k < kept; k++) { /* newest first */
        const hist_row *h = &rows[(found - 1 - k) % CARD_HISTORY_MAX];
        natsMsg *m = NULL;
        const char *outcome = "undecided";
        double score = 0;
        char reasons[REASONS_MAX] = "";
        if (decision_lookup(&d->c, h->txn_id, &m) == NATS_OK) {
            arena_reset(&da);
            Decision *dec = decision_decode(&da, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
            if (dec) {
                outcome = outcome_str(dec->outcome);
                score = dec->score;
                size_t len = 0;
                for (size_t i = 0; i < dec->n_reasons; i++) {
                    int w =
                        snprintf(reasons + len, sizeof reasons - len, "%s%s", len ? "," : "", dec->reasons[i]->rule_id);
                    if (w < 0 || (size_t)w >= sizeof reasons - len)
                        break;
                    len += (size_t)w;
                }
            }
        }
        json_array_append_new(arr, json_pack("{s:s, s:I, s:I, s:s, s:s, s:f, s:s}", "txn_id", h->txn_id,
                                             "created_at_ms", (json_int_t)h->created_at_ms, "amount_minor",
                                             (json_int_t)h->amount_minor, "currency", h->currency, "outcome", outcome,
                                             "score", score, "reasons", reasons));
        natsMsg_Destroy(m);
    }
    arena_free(&da);
    free(rows);
    return arr;
}

/* Computes (or finds in the cache) the detail of txn_id; under detail_mu. NULL with why. */
static detail *detail_get(desk *d, const char *txn_id, char *why, size_t cap)
{
    for (int i = 0; i < DETAIL_CACHE; i++)
        if (d->cache[i].json && strcmp(d->cache[i].txn_id, txn_id) == 0)
            return &d->cache[i];
    natsMsg *dm = NULL;
    natsStatus s = decision_lookup(&d->c, txn_id, &dm);
    if (s != NATS_OK) {
        snprintf(why, cap, "no decision for %s in %s: %s", txn_id, d->c.cfg.decisions_stream, natsStatus_GetText(s));
        return NULL;
    }
    arena a = {0};
    Decision *dec = NULL;
    if (arena_init(&a, 1 << 16) == V_OK)
        dec = decision_decode(&a, natsMsg_GetData(dm), (size_t)natsMsg_GetDataLength(dm));
    natsMsg *tm = dec ? decision_find_txn(&d->c, dec) : NULL;
    Transaction *t = tm ? verdict__v1__transaction__unpack(NULL, (size_t)natsMsg_GetDataLength(tm),
                                                           (const uint8_t *)natsMsg_GetData(tm))
                        : NULL;
    detail *out = NULL;
    if (!t) {
        snprintf(why, cap, "the transaction of %s is no longer in %s", txn_id, d->c.cfg.txn_stream);
    } else {
        char card[64], ip[64], dev[64], email[64], fwhy[400] = "", cnote[300] = "";
        uint64_t seq = natsMsg_GetSequence(tm);
        int64_t store_ns = natsMsg_GetTime(tm);
        if (store_ns <= 0)
            store_ns = dec->decided_at_ms * 1000000LL;
        json_t *feats = features_json(d, seq, fwhy, sizeof fwhy);
        json_t *hist = card_history(d, t->card_id, store_ns - 24LL * 3600 * 1000000000LL, cnote, sizeof cnote);
        json_t *o = json_pack(
            "{s:{s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I}, s:o, s:s, "
            "s:o, s:s}",
            "transaction", "txn_id", t->txn_id, "created_at_ms", (json_int_t)t->created_at_ms, "amount_minor",
            (json_int_t)t->amount_minor, "currency", t->currency, "card_id", log_mask(t->card_id, card, sizeof card),
            "card_bin", t->card_bin, "account_id", t->account_id, "mcc", (int)t->mcc, "merchant_id", t->merchant_id,
            "merchant_country", t->merchant_country, "card_country", t->card_country, "ip",
            log_mask(t->ip, ip, sizeof ip), "ip_country", t->ip_country, "device_id",
            log_mask(t->device_id, dev, sizeof dev), "email_hash", log_mask(t->email_hash, email, sizeof email),
            "channel", channel_name((int)t->channel), "stream_seq", (json_int_t)seq, "features",
            feats ? feats : json_null(), "features_note", fwhy, "card_history", hist ? hist : json_array(),
            "card_history_note", cnote);
        char *js = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!js) {
            snprintf(why, cap, "out of memory");
        } else {
            detail *slot = &d->cache[d->cache_next];
            d->cache_next = (d->cache_next + 1) % DETAIL_CACHE;
            free(slot->json);
            memset(slot, 0, sizeof *slot);
            str_copy(slot->txn_id, sizeof slot->txn_id, txn_id);
            str_copy(slot->card_id, sizeof slot->card_id, t->card_id);
            str_copy(slot->device_id, sizeof slot->device_id, t->device_id);
            str_copy(slot->ip, sizeof slot->ip, t->ip);
            slot->json = js;
            out = slot;
        }
    }
    if (t)
        verdict__v1__transaction__free_unpacked(t, NULL);
    if (dec && !tm)
        snprintf(why, cap, "the transaction of %s is no longer in %s", txn_id, d->c.cfg.txn_stream);
    natsMsg_Destroy(tm);
    natsMsg_Destroy(dm);
    arena_free(&a);
    return out;
}

static enum MHD_Result api_case(desk *d, struct MHD_Connection *c, const char *txn_id)
{
    json_t *cs = NULL;
    verror e = {0};
    vstatus st = cases_get(d->cs, txn_id, &cs, &e);
    if (st != V_OK)
        return reply_err(c, st == V_ENOTFOUND ? 404 : st == V_EINVAL ? 400 : 502, e.msg);
    char why[512] = "";
    json_t *det = NULL;
    pthread_mutex_lock(&d->detail_mu);
    detail *dt = detail_get(d, txn_id, why, sizeof why);
    if (dt)
        det = json_loads(dt->json, 0, NULL);
    pthread_mutex_unlock(&d->detail_mu);
    return reply_json(
        c, 200, json_pack("{s:o, s:o, s:s}", "case", cs, "detail", det ? det : json_null(), "detail_note", why), NULL);
}

/* Adds the case's card, device or IP (what names a list in lists) to those lists; the values stay server-side. */
static void add_to_lists(desk *d, const char *txn_id, const char *analyst, json_t *lists, json_t *done)
{
    static const char *const kinds[] = {"card", "device", "ip"};
    pthread_mutex_lock(&d->detail_mu);
    char why[512] = "";
    detail *dt = detail_get(d, txn_id, why, sizeof why);
    for (size_t k = 0; k < 3; k++) {
        const char *list = json_string_value(json_object_get(lists, kinds[k]));
        if (!list || !list[0])
            continue;
        const char *v = !dt ? "" : k == 0 ? dt->card_id : k == 1 ? dt->device_id : dt->ip;
        char key[REPLICA_KEY_MAX + 1];
        natsStatus s = NATS_ERR;
        if (v[0] && d->lists_kv && replica_list_key(key, sizeof key, list, strlen(list), v, strlen(v)))
            s = kvStore_PutString(NULL, d->lists_kv, key, v);
        log_info("case action",
                 "\"audit\":true,\"action\":\"list_add\",\"txn_id\":\"%s\",\"analyst\":\"%s\",\"what\":\"%s\","
                 "\"list\":\"%s\",\"ok\":%s",
                 txn_id, analyst, kinds[k], log_esc(list), s == NATS_OK ? "true" : "false");
        json_array_append_new(done, json_pack("{s:s, s:s, s:b}", "what", kinds[k], "list", list, "ok", s == NATS_OK));
    }
    pthread_mutex_unlock(&d->detail_mu);
}

static enum MHD_Result api_action(desk *d, struct MHD_Connection *c, const char *txn_id, const char *action,
                                  const char *analyst, const req *rq)
{
    json_t *body = rq->len ? json_loadb(rq->body, rq->len, 0, NULL) : json_object();
    if (!body || !json_is_object(body)) {
        json_decref(body);
        return reply_err(c, 400, "the body must be a JSON object");
    }
    json_t *out = NULL;
    verror e = {0};
    vstatus st;
    json_t *lists_done = json_array();
    if (strcmp(action, "claim") == 0) {
        st = cases_claim(d->cs, txn_id, analyst, &out, &e);
    } else if (strcmp(action, "release") == 0) {
        st = cases_release(d->cs, txn_id, analyst, &out, &e);
    } else if (strcmp(action, "resolve") == 0) {
        st = cases_resolve(d->cs, txn_id, analyst, jstr(body, "resolution"), &out, &e);
        json_t *lists = json_object_get(body, "lists");
        /* only the analyst whose resolution stands changes lists */
        if (st == V_OK && json_is_object(lists) && strcmp(jstr(out, "resolved_by"), analyst) == 0)
            add_to_lists(d, txn_id, analyst, lists, lists_done);
    } else {
        json_decref(body);
        json_decref(lists_done);
        return reply_err(c, 404, "unknown action");
    }
    json_decref(body);
    if (st != V_OK) {
        json_decref(lists_done);
        unsigned code = st == V_ECONFLICT ? 409 : st == V_ENOTFOUND ? 404 : st == V_EINVAL ? 400 : 502;
        return reply_json(c, code,
                          json_pack("{s:s, s:s}", "error", e.msg, "conflict", st == V_ECONFLICT ? "yes" : "no"), NULL);
    }
    return reply_json(c, 200, json_pack("{s:o, s:o}", "case", out, "lists", lists_done), NULL);
}

static enum MHD_Result api_login(desk *d, struct MHD_Connection *c, const req *rq)
{
    json_t *b = json_loadb(rq->body, rq->len, 0, NULL);
    char user_name[CASES_ANALYST_MAX + 1] = "";
    bool named = b && str_copy(user_name, sizeof user_name, jstr(b, "user")) && cases_analyst_valid(user_name);
    const char *shown = named ? user_name : "(invalid name)";
    char client[64], ukey[LOGIN_KEY_MAX] = "", akey[LOGIN_KEY_MAX];
    client_address(c, client, sizeof client);
    if (named)
        snprintf(ukey, sizeof ukey, "u:%s", user_name);
    snprintf(akey, sizeof akey, "a:%s", client);
    bool limited = d->lim.max_failures > 0;
    /* monotonic: a step of the wall clock neither lifts nor stretches a block */
    int64_t now = mono_ns() / 1000000, wait = 0;
    if (limited) {
        pthread_mutex_lock(&d->login_mu);
        int64_t wu = login_wait_ms(d, ukey, now), wa = login_wait_ms(d, akey, now);
        pthread_mutex_unlock(&d->login_mu);
        wait = wu > wa ? wu : wa;
    }
    if (wait > 0) {
        /* refused before the secret is looked at: a blocked key learns nothing, right secret or wrong */
        json_decref(b);
        long long secs = (long long)((wait + 999) / 1000);
        char ra[24];
        snprintf(ra, sizeof ra, "%lld", secs);
        log_warn("login throttled", "\"audit\":true,\"user\":\"%s\",\"client\":\"%s\",\"retry_after_s\":%lld", shown,
                 client, secs);
        static const char body[] = "{\"error\":\"too many failed logins; try again later\"}";
        return reply_hdr(c, 429, "application/json; charset=utf-8", body, sizeof body - 1, "Retry-After", ra);
    }
    bool ok = false;
    if (named) {
        if (d->nusers == 0) {
            ok = true; /* loopback without users (checked at start) */
        } else {
            for (int i = 0; i < d->nusers; i++)
                ok |= (strcmp(d->users[i].name, user_name) == 0) & secret_eq(d->users[i].secret, jstr(b, "secret"));
        }
    }
    json_decref(b);
    if (!ok) {
        int64_t block = 0;
        if (limited) {
            pthread_mutex_lock(&d->login_mu);
            int64_t bu = login_failed(d, ukey, now), ba = login_failed(d, akey, now);
            pthread_mutex_unlock(&d->login_mu);
            block = bu > ba ? bu : ba;
        }
        log_warn("login refused", "\"audit\":true,\"user\":\"%s\",\"client\":\"%s\"", shown, client);
        if (block)
            log_warn("logins blocked after failures", "\"audit\":true,\"user\":\"%s\",\"client\":\"%s\",\"for_s\":%lld",
                     shown, client, (long long)((block + 999) / 1000));
        return reply_err(c, 401, "wrong user or secret");
    }
    if (limited) {
        pthread_mutex_lock(&d->login_mu);
        login_slot *s = login_slot_of(d, ukey, false, now);
        if (s)
            memset(s, 0, sizeof *s); /* a success forgets the user's failures (not the address's) */
        pthread_mutex_unlock(&d->login_mu);
    }
    char id[65], cookie[160];
    pthread_mutex_lock(&d->mu);
    bool made = session_new(d, user_name, id);
    pthread_mutex_unlock(&d->mu);
    if (!made)
        return reply_err(c, 500, "cannot make a session");
    snprintf(cookie, sizeof cookie, "verdict_desk=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%lld", id,
             (long long)(SESSION_TTL_MS / 1000));
    log_info("login", "\"audit\":true,\"analyst\":\"%s\"", user_name);
    return reply_json(c, 200, json_pack("{s:s, s:s}", "user", user_name, "session", id), cookie);
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t)
{
    (void)cls;
    (void)c;
    (void)t;
    free(*con_cls);
    *con_cls = NULL;
}

static enum MHD_Result on_http(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    desk *d = cls;
    bool post = strcmp(method, "POST") == 0;
    if (post) {
        if (!*con_cls) {
            req *rq = calloc(1, sizeof *rq);
            if (!rq)
                return MHD_NO;
            *con_cls = rq;
            return MHD_YES;
        }
        req *rq = *con_cls;
        if (*upload_size) {
            if (rq->len + *upload_size > BODY_MAX)
                rq->too_big = true;
            else {
                memcpy(rq->body + rq->len, upload, *upload_size);
                rq->len += *upload_size;
            }
            *upload_size = 0;
            return MHD_YES;
        }
        if (rq->too_big)
            return reply_err(c, 413, "body too large");
    } else if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        return reply_err(c, 405, "method not allowed");
    }
    if (!post && strcmp(url, "/") == 0)
        return reply(c, 200, "text/html; charset=utf-8", desk_page_html, strlen(desk_page_html), NULL);
    if (!post && strcmp(url, "/desk.css") == 0)
        return reply(c, 200, "text/css; charset=utf-8", desk_page_css, strlen(desk_page_css), NULL);
    if (!post && strcmp(url, "/desk.js") == 0)
        return reply(c, 200, "text/javascript; charset=utf-8", desk_page_js, strlen(desk_page_js), NULL);
    if (!post && strcmp(url, "/healthz") == 0)
        return reply(c, 200, "text/plain", "ok\n", 3, NULL);
    if (!post && strcmp(url, "/metrics") == 0) {
        char buf[4096];
        size_t n = metrics(d, buf, sizeof buf);
        return reply(c, 200, "text/plain; version=0.0.4; charset=utf-8", buf, n, NULL);
    }
    if (post && strcmp(url, "/api/login") == 0)
        return api_login(d, c, *con_cls);
    if (strncmp(url, "/api/", 5) != 0)
        return reply_err(c, 404, "not found");
    char analyst[CASES_ANALYST_MAX + 1];
    if (!session_of(d, c, analyst, sizeof analyst))
        return reply_err(c, 401, "log in first");
    /* a cross-site form cannot set this header: together with SameSite=Strict it keeps other pages out */
    const char *xr = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Verdict-Desk");
    if (post && (!xr || strcmp(xr, "1") != 0))
        return reply_err(c, 403, "missing X-Verdict-Desk header");
    if (!post && strcmp(url, "/api/me") == 0)
        return reply_json(
            c, 200, json_pack("{s:s, s:s}", "user", analyst, "labels_stream", cases_get_names(d->cs)->labels_stream),
            NULL);
    if (post && strcmp(url, "/api/logout") == 0) {
        session_end(d, analyst, c);
        log_info("logout", "\"audit\":true,\"analyst\":\"%s\"", analyst);
        return reply_json(c, 200, json_pack("{s:b}", "ok", true), "verdict_desk=; Path=/; Max-Age=0");
    }
    if (!post && strcmp(url, "/api/cases") == 0)
        return api_list(d, c);
    if (strncmp(url, "/api/cases/", 11) == 0) {
        char id[80];
        const char *p = url + 11, *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 0 || len >= sizeof id)
            return reply_err(c, 400, "not a transaction id");
        memcpy(id, p, len);
        id[len] = 0;
        if (!txn_id_valid(id))
            return reply_err(c, 400, "not a transaction id");
        if (!post && !slash)
            return api_case(d, c, id);
        if (post && slash)
            return api_action(d, c, id, slash + 1, analyst, *con_cls);
    }
    return reply_err(c, 404, "not found");
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    log_vwarn_line("desk http server", fmt, ap);
}

/* Resolves --listen into sa; *loopback says whether it is 127.0.0.0/8. */
static bool parse_listen(const char *addr, struct sockaddr_in *sa, bool *loopback, char *why, size_t cap)
{
    const char *colon = strrchr(addr, ':');
    char host[64] = "127.0.0.1";
    if (!colon) {
        snprintf(why, cap, "--listen '%s' is not HOST:PORT", addr);
        return false;
    }
    if (colon > addr) {
        size_t hl = (size_t)(colon - addr);
        if (hl >= sizeof host) {
            snprintf(why, cap, "--listen host too long");
            return false;
        }
        memcpy(host, addr, hl);
        host[hl] = 0;
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || port < 1 || port > 65535) {
        snprintf(why, cap, "--listen '%s': bad port", addr);
        return false;
    }
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gai = getaddrinfo(host, NULL, &hints, &ai);
    if (gai != 0 || !ai) {
        snprintf(why, cap, "--listen '%s': cannot resolve '%s' to an IPv4 address", addr, host);
        return false;
    }
    memcpy(sa, ai->ai_addr, sizeof *sa);
    freeaddrinfo(ai);
    sa->sin_port = htons((uint16_t)port);
    *loopback = (ntohl(sa->sin_addr.s_addr) >> 24) == 127;
    return true;
}

/* ---- the command ------------------------------------------------------------------------------------------ */

static int setup_columns(desk *d)
{
    d->reg = calloc(1, sizeof *d->reg);
    d->vp = calloc(1, sizeof *d->vp);
    if (!d->reg || !d->vp)
        return 1;
    featreg_init(d->reg);
    verror e = {0};
    if (d->c.cfg.model_file[0]) {
        gbdt *m = NULL;
        if (gbdt_load_file(d->c.cfg.model_file, d->reg, &m, &e) != V_OK) {
            fprintf(stderr, "verdict desk: %s\n", e.msg);
            return 2;
        }
        d->nf = gbdt_num_features(m);
        for (int i = 0; i < d->nf; i++)
            d->ids[i] = gbdt_feature_id(m, i);
        gbdt_free(m);
    } else {
        static char names[FEAT_MAX][FEAT_NAME_MAX];
        d->nf = features_split(features_default_list(), names, FEAT_MAX);
        for (int i = 0; i < d->nf; i++) {
            d->ids[i] = featreg_resolve(d->reg, names[i], strlen(names[i]), &e);
            if (d->ids[i] < 0) {
                fprintf(stderr, "verdict desk: %s\n", e.msg);
                return 2;
            }
        }
    }
    velocity_plan_init(d->vp, d->reg);
    return 0;
}

static void desk_free(desk *d)
{
    atomic_store(&d->stopping, true);
    if (d->httpd)
        MHD_stop_daemon(d->httpd);
    if (d->maker_running)
        pthread_join(d->maker, NULL);
    if (d->watcher)
        kvWatcher_Stop(d->watcher);
    if (d->indexer_running)
        pthread_join(d->indexer, NULL);
    kvWatcher_Destroy(d->watcher);
    natsSubscription_Destroy(d->sub);
    replica_stop(d->lists);
    replica_stop(d->profiles);
    kvStore_Destroy(d->lists_kv);
    cases_close(d->cs);
    for (int i = 0; i < DETAIL_CACHE; i++)
        free(d->cache[i].json);
    free(d->items);
    free(d->slots);
    free(d->reg);
    free(d->vp);
    if (d->c.nc)
        cliconn_close(&d->c);
    pthread_mutex_destroy(&d->mu);
    pthread_mutex_destroy(&d->detail_mu);
    pthread_mutex_destroy(&d->login_mu);
    free(d);
}

int cmd_desk(int argc, char **argv)
{
    desk *d = calloc(1, sizeof *d);
    int *rest = calloc((size_t)argc + 1, sizeof *rest), nrest = 0;
    if (!d || !rest) {
        free(d);
        free(rest);
        fprintf(stderr, "verdict desk: out of memory\n");
        return 1;
    }
    pthread_mutex_init(&d->mu, NULL);
    pthread_mutex_init(&d->detail_mu, NULL);
    pthread_mutex_init(&d->login_mu, NULL);
    int rc = cliconn_parse(&d->c, argc, argv, rest, &nrest, "desk", help);
    const char *env_listen = getenv("VERDICT_DESK_LISTEN"), *users_file = getenv("VERDICT_DESK_USERS_FILE");
    str_copy(d->listen, sizeof d->listen, env_listen && *env_listen ? env_listen : DESK_LISTEN_DEFAULT);
    d->ack_wait_ms = 30000;
    d->lim = (login_limits){LOGIN_MAX_FAILURES_DEFAULT, LOGIN_WINDOW_DEFAULT_MS, LOGIN_BACKOFF_DEFAULT_MS,
                            LOGIN_BACKOFF_MAX_DEFAULT_MS};
    d->retention_ms = CASE_RETENTION_DEFAULT_MS;
    static const char *const valued_opts[] = {"--listen",        "--users-file",         "--ack-wait",
                                              "--start",         "--login-max-failures", "--login-window",
                                              "--login-backoff", "--login-backoff-max",  "--case-retention"};
    for (int k = 0; rc == 0 && k < nrest; k++) {
        const char *a = argv[rest[k]];
        bool valued = false;
        for (size_t j = 0; j < sizeof valued_opts / sizeof *valued_opts; j++)
            valued |= strcmp(a, valued_opts[j]) == 0;
        if (!valued || k + 1 >= nrest || rest[k + 1] != rest[k] + 1) {
            fprintf(stderr,
                    valued ? "verdict desk: %s needs a value\n" : "verdict desk: unknown argument '%s' (see --help)\n",
                    a);
            rc = 2;
            break;
        }
        const char *v = argv[rest[++k]];
        int64_t *dur = strcmp(a, "--login-window") == 0        ? &d->lim.window_ms
                       : strcmp(a, "--login-backoff") == 0     ? &d->lim.backoff_ms
                       : strcmp(a, "--login-backoff-max") == 0 ? &d->lim.backoff_max_ms
                       : strcmp(a, "--case-retention") == 0    ? &d->retention_ms
                                                               : NULL;
        if (strcmp(a, "--listen") == 0)
            str_copy(d->listen, sizeof d->listen, v);
        else if (strcmp(a, "--users-file") == 0)
            users_file = v;
        else if (strcmp(a, "--start") == 0) {
            if (strcmp(v, "all") != 0 && strcmp(v, "new") != 0) {
                fprintf(stderr, "verdict desk: --start must be all or new, got '%s'\n", v);
                rc = 2;
            }
            d->start_new = strcmp(v, "new") == 0;
        } else if (strcmp(a, "--login-max-failures") == 0) {
            char *end;
            long n = strtol(v, &end, 10);
            if (!*v || *end || n < 0 || n > 1000) {
                fprintf(stderr, "verdict desk: --login-max-failures needs 0-1000 (0: no limit), got '%s'\n", v);
                rc = 2;
            }
            d->lim.max_failures = (int)n;
        } else if (dur) {
            /* 0 is allowed for the retention only: keep resolved cases forever */
            bool zero = strcmp(v, "0") == 0 && dur == &d->retention_ms;
            if (zero)
                *dur = 0;
            else if (!duration_parse_ms(v, strlen(v), dur) || *dur < 100) {
                fprintf(stderr, "verdict desk: %s needs a duration of 100ms or more%s, got '%s'\n", a,
                        dur == &d->retention_ms ? " (or 0)" : "", v);
                rc = 2;
            }
        } else if (!duration_parse_ms(v, strlen(v), &d->ack_wait_ms) || d->ack_wait_ms < 100) {
            fprintf(stderr, "verdict desk: --ack-wait needs a duration of 100ms or more, got '%s'\n", v);
            rc = 2;
        }
    }
    if (rc == 0 && d->lim.backoff_max_ms < d->lim.backoff_ms) {
        fprintf(stderr, "verdict desk: --login-backoff-max is shorter than --login-backoff\n");
        rc = 2;
    }
    free(rest);
    if (rc) {
        desk_free(d);
        return rc < 0 ? 0 : rc;
    }
    char why[300] = "";
    struct sockaddr_in sa;
    bool loopback = false;
    if (!parse_listen(d->listen, &sa, &loopback, why, sizeof why) ||
        !load_users(d, getenv("VERDICT_DESK_USERS"), users_file, why, sizeof why)) {
        fprintf(stderr, "verdict desk: %s\n", why);
        desk_free(d);
        return 2;
    }
    if (!loopback && d->nusers == 0) {
        fprintf(stderr,
                "verdict desk: refusing to listen on %s without a login: set VERDICT_DESK_USERS or "
                "--users-file (analyst:secret), or listen on 127.0.0.1\n",
                d->listen);
        desk_free(d);
        return 2;
    }
    if ((rc = setup_columns(d)) != 0) {
        desk_free(d);
        return rc;
    }
    cli_block_signals();
    log_set_component("desk");
    if ((rc = cliconn_connect(&d->c, "desk")) != 0) {
        desk_free(d);
        return rc;
    }
    log_set_quiet(0);
    verror e = {0};
    if (cases_open(d->c.js, &d->c.cfg, &d->cs, &e) != V_OK ||
        replica_bucket_open(d->c.js, d->c.cfg.lists_bucket, d->c.cfg.replicas, &d->lists_kv, &e) != V_OK ||
        history_open_replicas(d->c.nc, d->c.js, &d->c.cfg, d->reg, &d->lists, &d->profiles, &e) != V_OK) {
        fprintf(stderr, "verdict desk: %s\n", e.msg);
        desk_free(d);
        return 1;
    }
    natsStatus s = kvStore_WatchAll(&d->watcher, cases_kv(d->cs), NULL);
    if (s != NATS_OK || pthread_create(&d->indexer, NULL, indexer_main, d) != 0) {
        fprintf(stderr, "verdict desk: cannot watch the cases bucket: %s\n", natsStatus_GetText(s));
        desk_free(d);
        return 1;
    }
    d->indexer_running = true;
    if (start_maker(d, &e) != V_OK) {
        fprintf(stderr, "verdict desk: %s\n", e.msg);
        desk_free(d);
        return 1;
    }
    errno = 0;
    d->httpd =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, ntohs(sa.sin_port), NULL, NULL, on_http,
                         d, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                         MHD_OPTION_THREAD_POOL_SIZE, (unsigned)4, MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
    if (!d->httpd) {
        fprintf(stderr, "verdict desk: cannot listen on %s: %s\n", d->listen,
                errno == EADDRINUSE ? "the port is in use"
                : errno             ? strerror(errno)
                                    : "failed");
        desk_free(d);
        return 1;
    }
    if (d->nusers == 0)
        log_warn("no users configured: any analyst name logs in (loopback only)", "\"listen\":\"%s\"",
                 log_esc(d->listen));
    log_info("desk listening", "\"listen\":\"%s\",\"users\":%d,\"bucket\":\"%s\",\"labels_stream\":\"%s\"",
             log_esc(d->listen), d->nusers, cases_get_names(d->cs)->bucket, cases_get_names(d->cs)->labels_stream);
    int sig = cli_wait_signal();
    log_info("desk stopping", "\"signal\":%d", sig);
    desk_free(d);
    return 0;
}

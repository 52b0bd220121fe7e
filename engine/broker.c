/* broker.c - connection and idempotent JetStream set-up (see broker.h). */
#include "broker.h"

#include "partition.h"

#include "nkey.h"

#include "log.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NS_PER_MS 1000000LL

vstatus broker_err(verror *e, natsStatus s, jsErrCode jerr, const char *what)
{
    const char *last = nats_GetLastError(NULL);
    if (jerr)
        return verror_set(e, V_ENATS, "%s: %s (JetStream error %d%s%s)", what, natsStatus_GetText(s), (int)jerr,
                          last ? ": " : "", last ? last : "");
    return verror_set(e, V_ENATS, "%s: %s%s%s", what, natsStatus_GetText(s), last ? ": " : "", last ? last : "");
}

natsStatus broker_fetch(natsSubscription *sub, natsMsgList *list, int batch, int64_t timeout_ms, jsErrCode *jerr)
{
    int pending = 0;
    if (natsSubscription_GetPending(sub, &pending, NULL) != NATS_OK)
        pending = 0;
    return natsSubscription_Fetch(list, sub, pending > 0 ? 1 : batch, timeout_ms, jerr);
}

/* Why a connection to the URL list failed, in the operator's words: nats.c says "No server available" for a
 * malformed URL, a name that does not resolve and a closed port alike. Called on the error path only: each URL
 * is parsed, resolved and tried with a bounded TCP connect. User and password in a URL are never printed. */
/* u without its scheme (nats://, tls://, ws://, wss://, or none); NULL with why set when the scheme is another. */
static const char *url_after_scheme(const char *u, char *why, size_t cap)
{
    const char *sep = strstr(u, "://");
    if (!sep)
        return u;
    char scheme[16];
    size_t sl = (size_t)(sep - u);
    if (sl == 0 || sl >= sizeof scheme) {
        snprintf(why, cap, "'%.60s' is not a NATS URL (nats://HOST:PORT)", u);
        return NULL;
    }
    memcpy(scheme, u, sl);
    scheme[sl] = 0;
    if (strcmp(scheme, "nats") && strcmp(scheme, "tls") && strcmp(scheme, "ws") && strcmp(scheme, "wss")) {
        snprintf(why, cap, "'%.16s://' is not a NATS URL scheme (nats://, tls://, ws://, wss://)", scheme);
        return NULL;
    }
    return sep + 3;
}

/* A walk over a comma-separated URL list (a copy, cut at 1023 bytes), each URL trimmed of blanks. */
typedef struct url_walk {
    char list[1024];
    char *save;
} url_walk;

static char *url_next(url_walk *w, bool first)
{
    char *u = strtok_r(first ? w->list : NULL, ",", &w->save);
    if (!u)
        return NULL;
    while (*u == ' ' || *u == '\t')
        u++;
    size_t ul = strlen(u);
    while (ul && (u[ul - 1] == ' ' || u[ul - 1] == '\t'))
        u[--ul] = 0;
    return u;
}

static char *url_first(url_walk *w, const char *urls)
{
    if (!str_copy(w->list, sizeof w->list, urls))
        w->list[sizeof w->list - 1] = 0;
    w->save = NULL;
    return url_next(w, true);
}

/* Refuses, before any connection, a URL list with a scheme that is not NATS's: nats.c would connect to the host
 * and port of an http:// URL all the same, and whatever answers there would be the error shown. */
static bool urls_schemes_ok(const char *urls, char *why, size_t cap)
{
    url_walk w;
    for (char *u = url_first(&w, urls); u; u = url_next(&w, false)) {
        if (!url_after_scheme(u, why, cap))
            return false;
    }
    return true;
}

static void explain_connect_failure(const char *urls, natsStatus s, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = 0;
    url_walk w;
    for (char *u = url_first(&w, urls); u; u = url_next(&w, false)) {
        char why[1024];
        const char *hostport = url_after_scheme(u, why, sizeof why);
        if (!hostport)
            goto add;
        const char *at = strrchr(hostport, '@'); /* credentials: skipped, never shown */
        if (at)
            hostport = at + 1;
        char host[256], port[16] = "4222";
        const char *end = hostport + strcspn(hostport, "/?");
        const char *colon = NULL;
        const char *hs = hostport, *he;
        if (*hostport == '[') { /* [IPv6]:port */
            const char *rb = memchr(hostport, ']', (size_t)(end - hostport));
            if (!rb) {
                snprintf(why, sizeof why, "'%.60s' is not a NATS URL (unclosed '[')", hostport);
                goto add;
            }
            hs = hostport + 1;
            he = rb;
            colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
        } else {
            colon = memchr(hostport, ':', (size_t)(end - hostport));
            he = colon ? colon : end;
        }
        if (he == hs || (size_t)(he - hs) >= sizeof host) {
            snprintf(why, sizeof why, "'%.60s' has no host (nats://HOST:PORT)", u);
            goto add;
        }
        memcpy(host, hs, (size_t)(he - hs));
        host[he - hs] = 0;
        if (colon) {
            size_t pl = (size_t)(end - colon - 1);
            bool digits = pl > 0 && pl < 6;
            for (size_t i = 0; digits && i < pl; i++)
                digits = colon[1 + i] >= '0' && colon[1 + i] <= '9';
            if (!digits || atoi(colon + 1) < 1 || atoi(colon + 1) > 65535) {
                snprintf(why, sizeof why, "%s: the port '%.*s' is not a number 1-65535", host, (int)(pl > 16 ? 16 : pl),
                         colon + 1);
                goto add;
            }
            memcpy(port, colon + 1, pl);
            port[pl] = 0;
        }
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
        int gai = getaddrinfo(host, port, &hints, &ai);
        if (gai != 0 || !ai) {
            snprintf(why, sizeof why, "unknown host '%s' (%s)", host, gai_strerror(gai));
            goto add;
        }
        /* one bounded TCP connect to the first address: refused, unanswered or open */
        int err = ETIMEDOUT;
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd >= 0) {
            if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
                err = 0;
            } else if (errno == EINPROGRESS) {
                struct pollfd pfd = {.fd = fd, .events = POLLOUT};
                if (poll(&pfd, 1, 1000) == 1) {
                    socklen_t el = sizeof err;
                    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
                        err = errno;
                }
            } else {
                err = errno;
            }
            close(fd);
        }
        freeaddrinfo(ai);
        if (err == ECONNREFUSED)
            snprintf(why, sizeof why, "nothing listens on %s:%s (connection refused)", host, port);
        else if (err == ETIMEDOUT)
            snprintf(why, sizeof why, "%s:%s does not answer (timed out)", host, port);
        else if (err)
            snprintf(why, sizeof why, "%s:%s: %s", host, port, strerror(err));
        else
            snprintf(why, sizeof why, "%s:%s accepts connections, but the NATS handshake failed (%s: TLS, "
                     "credentials, or not a NATS server?)", host, port, natsStatus_GetText(s));
    add:;
        int w = snprintf(out + used, cap - used, "%s%s", used ? "; " : "", why);
        if (w < 0 || (size_t)w >= cap - used)
            break;
        used += (size_t)w;
    }
}

struct broker_link {
    atomic_bool up;
    struct broker_link *next;
};

/* Every link ever made, so that they stay reachable (see broker.h): two per engine start. */
static broker_link *all_links;
static pthread_mutex_t links_mu = PTHREAD_MUTEX_INITIALIZER;

static broker_link *link_new(void)
{
    broker_link *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    atomic_init(&l->up, false);
    pthread_mutex_lock(&links_mu);
    l->next = all_links;
    all_links = l;
    pthread_mutex_unlock(&links_mu);
    return l;
}

bool broker_link_up(const broker_link *link) { return link && atomic_load(&link->up); }

/* nats.c delivers connection events one at a time, in order, on its own thread: these only store and log. */
static void on_disconnected(natsConnection *nc, void *closure)
{
    if (closure)
        atomic_store(&((broker_link *)closure)->up, false);
    if (natsConnection_IsClosed(nc) || natsConnection_IsDraining(nc))
        return;
    log_warn("disconnected from NATS; reconnecting", NULL);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    if (closure)
        atomic_store(&((broker_link *)closure)->up, true);
    log_info("reconnected to NATS", NULL);
}

static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    if (closure)
        atomic_store(&((broker_link *)closure)->up, false);
}

static void on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)nc;
    (void)sub;
    (void)closure;
    log_warn("NATS asynchronous error", "\"error\":\"%s\"", log_esc(natsStatus_GetText(err)));
}

#define MAX_SERVERS 16

/* natsOptions_SetURL in nats.c 3.4.1 takes the whole string as one URL: "nats://a:4222,nats://b:4222" then fails
 * with "No server available" (only natsConnection_ConnectTo splits lists). A cluster's URL list is split here
 * and handed over with natsOptions_SetServers; a single URL goes through SetURL as before. */
natsStatus broker_set_servers(natsOptions *o, const char *list)
{
    if (!strchr(list, ','))
        return natsOptions_SetURL(o, list);
    char buf[sizeof ((config *)0)->nats_url];
    if (!str_copy(buf, sizeof buf, list))
        return NATS_INVALID_ARG;
    const char *urls[MAX_SERVERS];
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        char *end = tok + strlen(tok);
        while (end > tok && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = 0;
        if (!*tok)
            continue;
        if (n == MAX_SERVERS)
            return NATS_INVALID_ARG;
        urls[n++] = tok;
    }
    if (n == 0)
        return NATS_INVALID_ARG;
    return natsOptions_SetServers(o, urls, n); /* nats.c copies the strings */
}

/* A server that stops answering without closing the TCP connection (frozen, or a partition that drops packets)
 * is seen only by unanswered pings: nats.c's default (2 minutes, 2 outstanding) kept the engine attached to it,
 * and /readyz saying ready, for 4-6 minutes. nats.c declares the connection stale when a ping timer fires with
 * MAX_PINGS_OUT pings unanswered, i.e. 2-3 intervals after the last PONG: at 1 s that is 2-3 s, which leaves
 * room in the 5 s target (issue 21) for the reconnect to another node and the next fetch. A PING/PONG per
 * second per connection costs nothing; a server that cannot answer a PING for 2 s is not deciding anything.
 * (With 5 s pings the engine noticed a black-holed node after 12 s in tests/test_partition.c.) */
#define PING_INTERVAL_MS 1000
#define MAX_PINGS_OUT 2
/* The longest one socket write may block. Without it the socket is blocking: against a black-holed node, once
 * the kernel's send queue is full (1.2 MB seen), send() blocks inside natsConn_bufferFlush while holding the
 * connection's lock until TCP gives up (about 15 minutes), and every thread touching the connection waits with
 * it, the ping timer included, so the stale-connection check above never runs either. With a deadline nats.c
 * sets the socket non-blocking, fails the write at the deadline and shuts the socket down, which starts the
 * reconnect; what was buffered is lost, as in any disconnect, and every publish of ours waits for its PubAck
 * and is retried. A write only waits when the send queue (hundreds of KB) is full, i.e. the server has read
 * nothing for a while; 1 s of that on a LAN is a dead server, and it bounds how long a lock is held. */
#define WRITE_DEADLINE_MS 1000
/* connection attempts when an nkey or credentials handshake is refused (nats.c 3.4.1, connect_with) */
#define AUTH_TRIES 4

static vstatus connect_with(const config *c, const char *name, bool send_asap, broker_link *link,
                            natsConnection **nc, verror *e)
{
    char bad[1024];
    if (!urls_schemes_ok(c->nats_url, bad, sizeof bad))
        return verror_set(e, V_EINVAL, "cannot connect to NATS at --nats-url: %s", bad);
    natsOptions *o = NULL;
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK)
        s = broker_set_servers(o, c->nats_url);
    if (s == NATS_OK)
        s = natsOptions_SetName(o, name);
    if (s == NATS_OK)
        s = natsOptions_SetSendAsap(o, send_asap);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(o, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(o, 250);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(o, BROKER_CONNECT_TIMEOUT_MS);
    if (s == NATS_OK)
        s = natsOptions_SetPingInterval(o, PING_INTERVAL_MS);
    if (s == NATS_OK)
        s = natsOptions_SetMaxPingsOut(o, MAX_PINGS_OUT);
    if (s == NATS_OK)
        s = natsOptions_SetWriteDeadline(o, WRITE_DEADLINE_MS);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(o, on_disconnected, link);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(o, on_reconnected, link);
    if (s == NATS_OK && link)
        s = natsOptions_SetClosedCB(o, on_closed, link);
    if (s == NATS_OK)
        s = natsOptions_SetErrorHandler(o, on_async_error, NULL);
    if (s == NATS_OK && c->inbox_prefix[0])
        s = natsOptions_SetCustomInboxPrefix(o, c->inbox_prefix);
    if (s == NATS_OK && c->user[0])
        s = natsOptions_SetUserInfo(o, c->user, c->password);
    if (s == NATS_OK && c->token[0])
        s = natsOptions_SetToken(o, c->token);
    if (s == NATS_OK && c->nkey_seed_file[0]) {
        /* nats.c needs the public key beside the seed file; it is derived from the seed (nkey.h) */
        char pub[NKEY_PUBLIC_LEN + 1];
        vstatus rc = nkey_public_from_seed_file(c->nkey_seed_file, pub, e);
        if (rc != V_OK) {
            natsOptions_Destroy(o);
            return rc;
        }
        s = natsOptions_SetNKeyFromSeed(o, pub, c->nkey_seed_file);
    }
    if (s == NATS_OK && c->creds_file[0])
        s = natsOptions_SetUserCredentialsFromFiles(o, c->creds_file, NULL);
    if (s == NATS_OK && (c->tls_ca[0] || c->tls_cert[0])) {
        s = natsOptions_SetSecure(o, true);
        if (s == NATS_OK && c->tls_ca[0])
            s = natsOptions_LoadCATrustedCertificates(o, c->tls_ca);
        if (s == NATS_OK && c->tls_cert[0])
            s = natsOptions_LoadCertificatesChain(o, c->tls_cert, c->tls_key);
    }
    if (s != NATS_OK) {
        natsOptions_Destroy(o);
        return broker_err(e, s, 0, "invalid connection options");
    }
    /* nats.c 3.4.1 (Debian's) sends no signature of the server's nonce when the signature's first byte is 0: its
     * base64 encoder stops at a leading zero byte (fixed in nats.c 3.8, nats-io/nats.c#705). So with an nkey seed
     * or a credentials file 1 handshake in 256 is refused though the key is right. A refusal is tried again, each
     * time with a new nonce, AUTH_TRIES times in all: a wrong key is still refused within milliseconds. */
    int tries = c->nkey_seed_file[0] || c->creds_file[0] ? AUTH_TRIES : 1;
    for (int t = 0; t < tries; t++) {
        if (link) /* before the first event can arrive; events come in order and overwrite it */
            atomic_store(&link->up, true);
        if ((s = natsConnection_Connect(nc, o)) != NATS_CONNECTION_AUTH_FAILED)
            break;
    }
    natsOptions_Destroy(o);
    if (s != NATS_OK) {
        if (link)
            atomic_store(&link->up, false);
        const char *last = nats_GetLastError(NULL);
        /* a refusal by the server (authorization, TLS) names itself; only nats.c's generic answer is explained */
        if (s == NATS_NO_SERVER || s == NATS_ADDRESS_MISSING || s == NATS_INVALID_ARG || !last) {
            char why[2048];
            explain_connect_failure(c->nats_url, s, why, sizeof why);
            if (why[0])
                return verror_set(e, V_ENATS, "cannot connect to NATS at --nats-url: %s", why);
        }
        return broker_err(e, s, 0, "cannot connect to NATS (check --nats-url and credentials)");
    }
    return V_OK;
}

vstatus broker_connect(const config *c, const char *name, bool send_asap, natsConnection **nc, verror *e)
{
    return connect_with(c, name, send_asap, NULL, nc, e);
}

vstatus broker_connect_linked(const config *c, const char *name, bool send_asap, broker_link **link,
                              natsConnection **nc, verror *e)
{
    broker_link *l = link_new();
    if (!l)
        return verror_set(e, V_ENOMEM, "out of memory");
    vstatus rc = connect_with(c, name, send_asap, l, nc, e);
    if (rc == V_OK)
        *link = l;
    return rc;
}

vstatus broker_connect_simple(const config *c, natsConnection **nc, verror *e)
{
    return broker_connect(c, "verdict-client", true, nc, e);
}

/* --- streams ------------------------------------------------------------------------------------------- */

typedef struct stream_want {
    const char *name;
    const char *subjects[2];
    int nsubjects;
    jsRetentionPolicy retention;
    int64_t max_age_ms;
    int64_t dup_ms;
    bool allow_direct;
    const char *description;
} stream_want;

static bool has_subject(const jsStreamConfig *cfg, const char *subj)
{
    for (int i = 0; i < cfg->SubjectsLen; i++)
        if (strcmp(cfg->Subjects[i], subj) == 0)
            return true;
    return false;
}

static vstatus ensure_stream(const config *c, jsCtx *js, const stream_want *w, verror *e)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, js, w->name, NULL, &jerr);
    if (s == NATS_OK) {
        const jsStreamConfig *have = si->Config;
        vstatus rc = V_OK;
        for (int i = 0; i < w->nsubjects && rc == V_OK; i++)
            if (!has_subject(have, w->subjects[i]))
                rc = verror_set(e, V_ECONFLICT,
                                "stream %s exists but does not capture subject '%s'; add it (nats stream edit %s "
                                "--subjects ...) or choose another --prefix",
                                w->name, w->subjects[i], w->name);
        if (rc == V_OK && have->Retention != w->retention)
            rc = verror_set(e, V_ECONFLICT,
                            "stream %s has a different retention policy than Verdict needs (%s); a changed retention "
                            "loses transactions or decisions: recreate it or choose another --prefix",
                            w->name, w->retention == js_LimitsPolicy ? "limits" : "other");
        if (rc == V_OK && w->dup_ms && have->Duplicates < w->dup_ms * NS_PER_MS)
            log_warn("stream duplicate window is shorter than configured; client retries older than it may be "
                     "decided twice",
                     "\"stream\":\"%s\",\"have_ms\":%lld,\"want_ms\":%lld", w->name,
                     (long long)(have->Duplicates / NS_PER_MS), (long long)w->dup_ms);
        if (rc == V_OK && w->allow_direct && !have->AllowDirect)
            rc = verror_set(e, V_ECONFLICT,
                            "stream %s exists without AllowDirect, which Verdict needs to answer duplicates; run "
                            "`nats stream edit %s --allow-direct`",
                            w->name, w->name);
        if (rc == V_OK && w->max_age_ms && have->MaxAge != w->max_age_ms * NS_PER_MS)
            log_warn("stream max age differs from configuration; using the stream's",
                     "\"stream\":\"%s\",\"have_ms\":%lld,\"want_ms\":%lld", w->name,
                     (long long)(have->MaxAge / NS_PER_MS), (long long)w->max_age_ms);
        jsStreamInfo_Destroy(si);
        if (rc == V_OK)
            log_info("stream verified", "\"stream\":\"%s\"", w->name);
        return rc;
    }
    if (s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr)
        return broker_err(e, s, jerr, "cannot look up stream");

    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = w->name;
    cfg.Description = w->description;
    cfg.Subjects = (const char **)w->subjects;
    cfg.SubjectsLen = w->nsubjects;
    cfg.Retention = w->retention;
    cfg.Storage = js_FileStorage;
    cfg.MaxAge = w->max_age_ms * NS_PER_MS;
    cfg.Duplicates = w->dup_ms * NS_PER_MS;
    cfg.AllowDirect = w->allow_direct;
    cfg.Replicas = c->replicas;
    s = js_AddStream(&si, js, &cfg, NULL, &jerr);
    if (s != NATS_OK) {
        char what[200];
        snprintf(what, sizeof what, "cannot create stream %s", w->name);
        return broker_err(e, s, jerr, what);
    }
    jsStreamInfo_Destroy(si);
    log_info("stream created", "\"stream\":\"%s\"", w->name);
    return V_OK;
}

static vstatus consumer_create(const config *c, jsCtx *js, const char *name, const char *filter, uint64_t start_seq,
                               verror *e);

static vstatus ensure_consumer(const config *c, jsCtx *js, const char *name, const char *filter, verror *e)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, js, c->txn_stream, name, NULL, &jerr);
    if (s == NATS_OK) {
        const jsConsumerConfig *have = ci->Config;
        vstatus rc = V_OK;
        if (have->AckPolicy != js_AckExplicit)
            rc = verror_set(e, V_ECONFLICT,
                            "consumer %s on %s does not use explicit acks, so decisions could be lost; delete it "
                            "(nats consumer rm %s %s) and restart Verdict to recreate it",
                            name, c->txn_stream, c->txn_stream, name);
        else if (have->DeliverSubject && have->DeliverSubject[0])
            rc = verror_set(e, V_ECONFLICT,
                            "consumer %s on %s is a push consumer; Verdict needs a pull consumer: delete it (nats "
                            "consumer rm %s %s) and restart",
                            name, c->txn_stream, c->txn_stream, name);
        else if (have->FilterSubject && have->FilterSubject[0] && strcmp(have->FilterSubject, filter))
            rc = verror_set(e, V_ECONFLICT,
                            "consumer %s on %s filters '%s' but Verdict must see '%s'; delete or fix it", name,
                            c->txn_stream, have->FilterSubject, filter);
        if (rc == V_OK && (have->MaxDeliver != c->max_deliver || have->BackOffLen != c->backoff_len ||
                           (c->backoff_len == 0 && have->AckWait != c->ack_wait_ms * NS_PER_MS)))
            log_warn("consumer settings differ from configuration; using the consumer's",
                     "\"consumer\":\"%s\",\"max_deliver\":%lld,\"ack_wait_ms\":%lld,\"backoff_len\":%d",
                     name, (long long)have->MaxDeliver, (long long)(have->AckWait / NS_PER_MS),
                     have->BackOffLen);
        jsConsumerInfo_Destroy(ci);
        if (rc == V_OK)
            log_info("consumer verified", "\"stream\":\"%s\",\"consumer\":\"%s\"", c->txn_stream, name);
        return rc;
    }
    if (s != NATS_NOT_FOUND && jerr != JSConsumerNotFoundErr)
        return broker_err(e, s, jerr, "cannot look up consumer");

    return consumer_create(c, js, name, filter, 0, e);
}

static vstatus consumer_create(const config *c, jsCtx *js, const char *name, const char *filter, uint64_t start_seq,
                               verror *e)
{
    int64_t backoff_ns[8];
    for (int i = 0; i < c->backoff_len; i++)
        backoff_ns[i] = c->backoff_ms[i] * NS_PER_MS;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = name;
    cc.Description = c->partitions > 0 ? "Verdict decision engine: one partition of TXN" : "Verdict decision engine";
    cc.AckPolicy = js_AckExplicit;
    cc.DeliverPolicy = start_seq ? js_DeliverByStartSequence : js_DeliverAll;
    cc.OptStartSeq = start_seq;
    cc.AckWait = c->ack_wait_ms * NS_PER_MS;
    cc.MaxDeliver = c->max_deliver;
    cc.BackOff = c->backoff_len ? backoff_ns : NULL;
    cc.BackOffLen = c->backoff_len;
    cc.FilterSubject = filter;
    /* room for every worker's batch plus retries in flight */
    cc.MaxAckPending = (int64_t)c->workers * c->batch * 4 > 1000 ? (int64_t)c->workers * c->batch * 4 : 1000;
    cc.MaxWaiting = 512;
    natsStatus s = js_AddConsumer(&ci, js, c->txn_stream, &cc, NULL, &jerr);
    if (s != NATS_OK)
        return broker_err(e, s, jerr, "cannot create the durable consumer");
    jsConsumerInfo_Destroy(ci);
    log_info("consumer created", "\"stream\":\"%s\",\"consumer\":\"%s\"", c->txn_stream, name);
    return V_OK;
}

vstatus broker_consumer_create(const config *c, jsCtx *js, uint64_t start_seq, verror *e)
{
    return consumer_create(c, js, c->consumer, c->txn_subjects, start_seq, e);
}

void broker_first_consumer(const config *c, char *out, size_t cap)
{
    if (c->partitions > 0)
        partition_consumer(c, 0, out, cap);
    else
        str_copy(out, cap, c->consumer);
}

vstatus broker_consumer_positions(const config *c, jsCtx *js, consumer_positions *out, jsConsumerInfo **first,
                                  verror *e)
{
    *out = (consumer_positions){0};
    if (first)
        *first = NULL;
    int n = c->partitions > 0 ? c->partitions : 1;
    for (int p = 0; p < n; p++) {
        char name[NAME_MAX_LEN + 16];
        if (c->partitions > 0)
            partition_consumer(c, (unsigned)p, name, sizeof name);
        else
            str_copy(name, sizeof name, c->consumer);
        jsConsumerInfo *ci = NULL;
        jsErrCode jerr = 0;
        natsStatus s = js_GetConsumerInfo(&ci, js, c->txn_stream, name, NULL, &jerr);
        if (s != NATS_OK) {
            if (first) {
                jsConsumerInfo_Destroy(*first);
                *first = NULL;
            }
            return broker_err(e, s, jerr, "cannot read the consumer's state");
        }
        if (ci->Delivered.Stream > out->delivered)
            out->delivered = ci->Delivered.Stream;
        if (p == 0 || ci->AckFloor.Stream < out->ack_floor)
            out->ack_floor = ci->AckFloor.Stream;
        out->pending += (int64_t)ci->NumPending;
        out->ack_pending += (int64_t)ci->NumAckPending;
        out->redelivered += (int64_t)ci->NumRedelivered;
        out->waiting += (int64_t)ci->NumWaiting;
        if (first && p == 0)
            *first = ci;
        else
            jsConsumerInfo_Destroy(ci);
    }
    return V_OK;
}

vstatus broker_setup(const config *c, jsCtx *js, verror *e)
{
    char dec_subj[NAME_MAX_LEN + 4], dlq_subj[NAME_MAX_LEN + 4], adv1[300], adv2[300];
    snprintf(dec_subj, sizeof dec_subj, "%s.>", c->decision_prefix);
    snprintf(dlq_subj, sizeof dlq_subj, "%s.>", c->dlq_prefix);
    /* partitioned: every partition consumer's advisories (the DLQ worker acts only on ours: dlq.c) */
    const char *cons = c->partitions > 0 ? "*" : c->consumer;
    snprintf(adv1, sizeof adv1, "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.%s.%s", c->txn_stream, cons);
    snprintf(adv2, sizeof adv2, "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.%s.%s", c->txn_stream, cons);
    int64_t dec_dup = c->dup_window_ms > 2 * 60 * 1000 ? c->dup_window_ms : 2 * 60 * 1000;
    const stream_want streams[] = {
        {c->txn_stream, {c->txn_subjects}, 1, js_LimitsPolicy, c->txn_max_age_ms, c->dup_window_ms, true,
         "Verdict: card transactions to decide"},
        {c->decisions_stream, {dec_subj}, 1, js_LimitsPolicy, 0, dec_dup, true,
         "Verdict: one decision per transaction, Nats-Msg-Id = txn_id"},
        {c->dlq_stream, {dlq_subj}, 1, js_LimitsPolicy, 0, c->dup_window_ms, true,
         "Verdict: dead letters, original bytes with the reason in headers"},
        {c->adv_stream, {adv1, adv2}, 2, js_LimitsPolicy, 0, 0, false,
         "Verdict: captured MAX_DELIVERIES and MSG_TERMINATED advisories for the DLQ worker"},
    };
    for (size_t i = 0; i < ARRAY_LEN(streams); i++) {
        vstatus rc = ensure_stream(c, js, &streams[i], e);
        if (rc)
            return rc;
    }
    if (c->partitions <= 0)
        return ensure_consumer(c, js, c->consumer, c->txn_subjects, e);
    for (int p = 0; p < c->partitions; p++) {
        char name[NAME_MAX_LEN + 16], filter[NAME_MAX_LEN + 16];
        partition_consumer(c, (unsigned)p, name, sizeof name);
        partition_filter(c, (unsigned)p, filter, sizeof filter);
        vstatus rc = ensure_consumer(c, js, name, filter, e);
        if (rc != V_OK)
            return rc;
    }
    return V_OK;
}

/* --- ack subject parsing ----------------------------------------------------------------------------- */

static bool parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false; /* beyond uint64: refused, never wrapped */
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

bool broker_parse_ack_subject(const char *reply, js_meta *m)
{
    if (!reply || strncmp(reply, "$JS.ACK.", 8) != 0)
        return false;
    const char *tok[16];
    size_t len[16];
    int n = 0;
    const char *p = reply + 8;
    while (*p && n < 16) {
        const char *dot = strchr(p, '.');
        size_t l = dot ? (size_t)(dot - p) : strlen(p);
        tok[n] = p;
        len[n] = l;
        n++;
        p = dot ? dot + 1 : p + l;
        if (!dot)
            break;
    }
    /* v1: stream.consumer.delivered.sseq.cseq.ts.pending (7 tokens); v2 adds domain and account hash in front
     * and may add a random token at the end. */
    int base;
    if (n == 7)
        base = 0;
    else if (n >= 9)
        base = 2;
    else
        return false;
    uint64_t ts;
    if (!parse_u64(tok[base + 2], len[base + 2], &m->delivered) ||
        !parse_u64(tok[base + 3], len[base + 3], &m->stream_seq) || !parse_u64(tok[base + 5], len[base + 5], &ts) ||
        !parse_u64(tok[base + 6], len[base + 6], &m->pending))
        return false;
    m->timestamp_ns = (int64_t)ts;
    return true;
}

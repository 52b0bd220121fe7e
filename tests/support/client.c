/* client.c - test-side NATS helpers (see client.h). */
#define _POSIX_C_SOURCE 200809L
#include "client.h"

#include "broker.h"
#include "config.h"
#include "harness.h"
#include "streamread.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void tc_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int64_t tc_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool tc_thread_js(const char *url, const char *who, natsConnection **nc, jsCtx **js)
{
    *nc = NULL;
    *js = NULL;
    config cc;
    config_defaults(&cc);
    str_copy(cc.nats_url, sizeof cc.nats_url, url);
    verror e = {0};
    if (broker_connect_simple(&cc, nc, &e) != V_OK) {
        fprintf(stderr, "%s cannot connect: %s\n", who, e.msg);
        return false;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    if (natsConnection_JetStream(js, *nc, &jo) != NATS_OK) {
        fprintf(stderr, "%s has no JetStream context\n", who);
        natsConnection_Destroy(*nc);
        *nc = NULL;
        return false;
    }
    return true;
}

bool tc_publish_until_confirmed(jsCtx *js, const char *subj, const void *data, int len, const char *id,
                                int give_up_ms, bool *dup, uint64_t *seq)
{
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = id;
    po.MaxWait = 2000;
    int64_t give_up = tc_mono_ms() + give_up_ms;
    for (;;) {
        jsPubAck *pa = NULL;
        if (js_Publish(&pa, js, subj, data, len, &po, NULL) == NATS_OK) {
            if (dup)
                *dup = pa->Duplicate;
            if (seq)
                *seq = pa->Sequence;
            jsPubAck_Destroy(pa);
            return true;
        }
        jsPubAck_Destroy(pa);
        if (tc_mono_ms() >= give_up)
            return false;
        tc_sleep_ms(100);
    }
}

natsConnection *tc_connect(const char *url)
{
    natsConnection *nc = NULL;
    natsOptions *o = NULL;
    cr_assert_eq(natsOptions_Create(&o), NATS_OK);
    natsOptions_SetURL(o, url);
    natsOptions_SetSendAsap(o, true);
    natsOptions_SetMaxReconnect(o, -1);
    natsOptions_SetReconnectWait(o, 100);
    natsStatus s = natsConnection_Connect(&nc, o);
    natsOptions_Destroy(o);
    cr_assert_eq(s, NATS_OK, "connect to %s: %s", url, natsStatus_GetText(s));
    return nc;
}

void tc_txn(Transaction *t, const char *txn_id, int64_t amount_minor)
{
    verdict__v1__transaction__init(t);
    t->txn_id = (char *)txn_id;
    t->created_at_ms = now_ms();
    t->amount_minor = amount_minor;
    t->currency = "EUR";
    t->card_id = "tok_card_1";
    t->account_id = "acct_1";
    t->merchant_id = "m_1";
    t->mcc = 5411;
    t->merchant_country = "DE";
    t->card_country = "DE";
    t->ip = "10.0.0.1";
    t->ip_country = "DE";
    t->device_id = "dev_1";
    t->channel = VERDICT__V1__CHANNEL__CHANNEL_ECOM;
}

int tc_pack(const Transaction *t, unsigned char *buf) { return (int)verdict__v1__transaction__pack(t, buf); }

bool tc_publish(jsCtx *js, const char *subject, const Transaction *t)
{
    unsigned char buf[2048];
    int n = tc_pack(t, buf);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = t->txn_id;
    po.MaxWait = 5000;
    jsPubAck *pa = NULL;
    natsStatus s = js_Publish(&pa, js, subject, buf, n, &po, NULL);
    jsPubAck_Destroy(pa);
    return s == NATS_OK;
}

uint64_t tc_stream_msgs(jsCtx *js, const char *stream)
{
    jsStreamInfo *si = NULL;
    if (js_GetStreamInfo(&si, js, stream, NULL, NULL) != NATS_OK)
        return 0;
    uint64_t n = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return n;
}

uint64_t tc_wait_msgs(jsCtx *js, const char *stream, uint64_t n, int timeout_ms)
{
    uint64_t have = 0;
    for (int waited = 0; waited <= timeout_ms; waited += 50) {
        have = tc_stream_msgs(js, stream);
        if (have >= n)
            return have;
        tc_sleep_ms(50);
    }
    return have;
}

natsMsg *tc_find_decision(jsCtx *js, const char *txn_id)
{
    static const char *outcomes[] = {"approve", "review", "decline"};
    for (int i = 0; i < 3; i++) {
        char subj[256];
        snprintf(subj, sizeof subj, "decision.%s.%s", outcomes[i], txn_id);
        natsMsg *m = NULL;
        if (js_GetLastMsg(&m, js, "DECISIONS", subj, NULL, NULL) == NATS_OK)
            return m;
    }
    return NULL;
}

bool tc_consumer_counts(jsCtx *js, uint64_t *ack_pending, uint64_t *pending, uint64_t *redelivered)
{
    jsConsumerInfo *ci = NULL;
    if (js_GetConsumerInfo(&ci, js, "TXN", "verdict", NULL, NULL) != NATS_OK)
        return false;
    *ack_pending = (uint64_t)ci->NumAckPending;
    *pending = ci->NumPending;
    if (redelivered)
        *redelivered = (uint64_t)ci->NumRedelivered;
    jsConsumerInfo_Destroy(ci);
    return true;
}

pid_t tc_start_engine(const char *url, const char *log_path, const char *const extra[])
{
    const char *argv[32] = {"verdict", "serve", "--nats-url", url, "--workers", "2"};
    int n = 6;
    for (int i = 0; extra && extra[i] && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    pid_t pid = verdict_spawn(argv, log_path);
    cr_assert(pid > 0);
    cr_assert(file_wait_for(log_path, "engine started", 15000), "engine did not start; see %s", log_path);
    return pid;
}

bool tc_wait_consumer_idle(jsCtx *js, int timeout_ms)
{
    uint64_t ackp = 1, pend = 1;
    for (int waited = 0; waited <= timeout_ms; waited += 100) {
        if (tc_consumer_counts(js, &ackp, &pend, NULL) && ackp == 0 && pend == 0)
            return true;
        tc_sleep_ms(100);
    }
    return false;
}

void tc_write_file(const char *path, const char *text)
{
    char tmp[512];
    cr_assert_lt((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path), sizeof tmp);
    FILE *f = fopen(tmp, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    cr_assert_eq(rename(tmp, path), 0);
}

char *tc_slurp(const char *path)
{
    static char buf[1 << 20];
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

void tc_print_log_tail(const char *path, int lines, const char *who)
{
    char cmd[768];
    snprintf(cmd, sizeof cmd, "tail -n %d '%s' | sed 's/^/%s: /' >&2", lines, path, who);
    if (system(cmd) != 0)
        fprintf(stderr, "%s: cannot read %s\n", who, path);
}

int tc_count_lines(const char *path, const char *needle)
{
    return file_count_lines(path, needle);
}

void tc_fixture_up(test_server *srv, natsConnection **nc, jsCtx **js, char *logp, size_t cap)
{
    cr_assert(server_start(srv, NULL), "nats-server did not start");
    *nc = tc_connect(srv->url);
    cr_assert_eq(natsConnection_JetStream(js, *nc, NULL), NATS_OK);
    temp_path(logp, cap, ".log");
}

void tc_fixture_down(test_server *srv, natsConnection *nc, jsCtx *js, const char *logp)
{
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    server_stop(srv);
    unlink(logp);
}

void tc_each_msg(jsCtx *js, const char *stream, void (*fn)(natsMsg *m, int64_t store_ns, void *ctx), void *ctx)
{
    stream_reader *r = NULL;
    verror e = {0};
    cr_assert_eq(stream_reader_open(js, stream, NULL, 1, 0, &r, &e), V_OK, "%s", e.msg);
    for (;;) {
        natsMsg *m = NULL;
        uint64_t seq;
        int64_t store_ns;
        vstatus rc = stream_reader_next(r, &m, &seq, &store_ns, 5000, &e);
        if (rc == V_ENOTFOUND)
            break;
        cr_assert_eq(rc, V_OK, "reading %s: %s", stream, e.msg);
        fn(m, store_ns, ctx);
        natsMsg_Destroy(m);
    }
    stream_reader_close(r);
}

typedef struct each_decision {
    arena a;
    void (*fn)(const Decision *d, void *ctx);
    void *ctx;
} each_decision;

static void decision_one(natsMsg *m, int64_t store_ns, void *ctx)
{
    (void)store_ns;
    each_decision *ed = ctx;
    arena_reset(&ed->a);
    Decision *d = decision_decode(&ed->a, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    cr_assert_not_null(d, "a decision that does not decode");
    ed->fn(d, ed->ctx);
}

void tc_each_decision(jsCtx *js, void (*fn)(const Decision *d, void *ctx), void *ctx)
{
    each_decision ed = {.fn = fn, .ctx = ctx};
    cr_assert_eq(arena_init(&ed.a, 1 << 20), V_OK);
    tc_each_msg(js, "DECISIONS", decision_one, &ed);
    arena_free(&ed.a);
}

bool tc_partitions_idle(jsCtx *js, int n)
{
    for (int p = 0; p < n; p++) {
        char name[32];
        snprintf(name, sizeof name, "verdict-p%d", p);
        jsConsumerInfo *ci = NULL;
        if (js_GetConsumerInfo(&ci, js, "TXN", name, NULL, NULL) != NATS_OK)
            return false;
        bool idle = ci->NumPending == 0 && ci->NumAckPending == 0;
        jsConsumerInfo_Destroy(ci);
        if (!idle)
            return false;
    }
    return true;
}

/* cliconn.c - shared set-up of the operator commands (see cliconn.h). */
#include "cliconn.h"

#include "broker.h"
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

const char *cliconn_hdr(natsMsg *m, const char *k)
{
    const char *v = NULL;
    return natsMsgHeader_Get(m, k, &v) == NATS_OK && v ? v : "";
}


int cliconn_parse(cliconn *c, int argc, char **argv, int *rest, int *nrest, const char *cmd, void (*help)(void))
{
    config_defaults(&c->cfg);
    bool h;
    verror e = {0};
    if (config_parse(&c->cfg, argc, argv, &h, rest, nrest, &e) != V_OK) {
        fprintf(stderr, "verdict %s: %s\n", cmd, e.msg);
        return 2;
    }
    if (h) {
        help();
        return -1;
    }
    return 0;
}

int cliconn_connect(cliconn *c, const char *cmd)
{
    verror e = {0};
    log_set_quiet(1);
    if (broker_connect_simple(&c->cfg, &c->nc, &e) != V_OK) {
        fprintf(stderr, "verdict %s: %s\n", cmd, e.msg);
        return 1;
    }
    natsStatus s = natsConnection_JetStream(&c->js, c->nc, NULL);
    if (s != NATS_OK) {
        fprintf(stderr, "verdict %s: no JetStream context (%s)\n", cmd, natsStatus_GetText(s));
        return 1;
    }
    return 0;
}

int cliconn_open(cliconn *c, int argc, char **argv, int *rest, int *nrest, const char *cmd, void (*help)(void))
{
    int rc = cliconn_parse(c, argc, argv, rest, nrest, cmd, help);
    return rc ? rc : cliconn_connect(c, cmd);
}

void cliconn_close(cliconn *c)
{
    jsCtx_Destroy(c->js);
    natsConnection_Destroy(c->nc);
    nats_Close();
}

bool cliconn_stream_range(jsCtx *js, const char *stream, uint64_t *first, uint64_t *last)
{
    jsStreamInfo *si = NULL;
    if (js_GetStreamInfo(&si, js, stream, NULL, NULL) != NATS_OK)
        return false;
    *first = si->State.FirstSeq;
    *last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    return true;
}

json_t *cliconn_collect_json(cliconn *c, const char *subject, int wait_ms)
{
    json_t *all = json_array();
    natsInbox *tmp = NULL;
    natsSubscription *sub = NULL;
    char inbox[NAME_MAX_LEN + 64];
    if (!all || natsInbox_Create(&tmp) != NATS_OK)
        return all;
    /* under --inbox-prefix, so a payment-style user whose replies are confined to its prefix can run it */
    const char *tok = strrchr(tmp, '.');
    snprintf(inbox, sizeof inbox, "%s.%s", c->cfg.inbox_prefix[0] ? c->cfg.inbox_prefix : "_INBOX",
             tok ? tok + 1 : tmp);
    natsInbox_Destroy(tmp);
    if (natsConnection_SubscribeSync(&sub, c->nc, inbox) == NATS_OK &&
        natsConnection_PublishRequestString(c->nc, subject, inbox, "") == NATS_OK) {
        int64_t deadline = now_ms() + wait_ms;
        for (int64_t left; (left = deadline - now_ms()) > 0;) {
            natsMsg *m = NULL;
            if (natsSubscription_NextMsg(&m, sub, left) != NATS_OK)
                break;
            json_t *j = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, NULL);
            if (j)
                json_array_append_new(all, j);
            natsMsg_Destroy(m);
        }
    }
    natsSubscription_Destroy(sub);
    return all;
}

void cliconn_time_ns(int64_t ns, char *out, size_t cap)
{
    time_t t = (time_t)(ns / 1000000000LL);
    struct tm tm;
    if (ns <= 0 || !gmtime_r(&t, &tm)) {
        snprintf(out, cap, "-");
        return;
    }
    char b[32];
    strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, cap, "%s.%03dZ", b, (int)(ns / 1000000LL % 1000));
}

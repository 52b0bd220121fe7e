/* cliconn.c - shared set-up of the operator commands (see cliconn.h). */
#include "cliconn.h"

#include "broker.h"
#include "log.h"

#include <stdio.h>

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

/* dlq.c - the advisory-driven DLQ worker (see dlq.h). */
#include "dlq.h"

#include "broker.h"
#include "log.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct dlq_worker {
    config cfg;
    jsCtx *js;
    natsSubscription *sub;
    pthread_t thread;
    atomic_bool stopping;
    atomic_llong *total, *by_reason;
};

vstatus dlq_handle_advisory(const config *c, jsCtx *js, const char *json, int len, bool *wrote, poison_reason *why,
                            verror *e)
{
    *wrote = false;
    *why = POISON_NONE;
    json_error_t jerr;
    json_t *root = json_loadb(json, (size_t)len, 0, &jerr);
    if (!root)
        return verror_set(e, V_EINVAL, "advisory is not JSON: %s", jerr.text);
    const char *type = json_string_value(json_object_get(root, "type"));
    const char *stream = json_string_value(json_object_get(root, "stream"));
    json_int_t seq = json_integer_value(json_object_get(root, "stream_seq"));
    json_int_t deliveries = json_integer_value(json_object_get(root, "deliveries"));
    poison_reason r = POISON_NONE;
    if (type && strstr(type, "max_deliver"))
        r = DEAD_MAX_DELIVERIES;
    else if (type && strstr(type, "terminated"))
        r = DEAD_TERMINATED;
    const char *reason = poison_reason_str(r);
    if (r == POISON_NONE || !stream || seq <= 0 || strcmp(stream, c->txn_stream) != 0) {
        json_decref(root);
        return V_OK; /* not ours to act on: ack it */
    }

    natsMsg *orig = NULL;
    jsErrCode jerrc = 0;
    natsStatus s = js_GetMsg(&orig, js, stream, (uint64_t)seq, NULL, &jerrc);
    if (s == NATS_NOT_FOUND || jerrc == JSNoMessageFoundErr) {
        json_decref(root);
        return V_OK; /* handled before (deleted after its dead letter was stored) */
    }
    if (s != NATS_OK) {
        json_decref(root);
        return broker_err(e, s, jerrc, "cannot read the original message");
    }

    char subj[NAME_MAX_LEN + 32], msgid[NAME_MAX_LEN + 40], seqs[32], dels[32];
    snprintf(subj, sizeof subj, "%s.%s", c->dlq_prefix, reason);
    snprintf(msgid, sizeof msgid, "dlq-%s-%lld", stream, (long long)seq);
    snprintf(seqs, sizeof seqs, "%lld", (long long)seq);
    snprintf(dels, sizeof dels, "%lld", (long long)deliveries);
    natsMsg *dl = NULL;
    s = natsMsg_Create(&dl, subj, NULL, natsMsg_GetData(orig), natsMsg_GetDataLength(orig));
    if (s == NATS_OK)
        s = natsMsgHeader_Set(dl, "Nats-Msg-Id", msgid);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(dl, "Verdict-Dlq-Reason", reason);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(dl, "Verdict-Error",
                              strcmp(reason, "max_deliveries") == 0
                                  ? "not decided after the consumer's MaxDeliver attempts"
                                  : "terminated by the engine");
    if (s == NATS_OK)
        s = natsMsgHeader_Set(dl, "Verdict-Original-Subject", natsMsg_GetSubject(orig));
    if (s == NATS_OK)
        s = natsMsgHeader_Set(dl, "Verdict-Original-Seq", seqs);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(dl, "Verdict-Deliveries", dels);
    const char *txn_id = NULL;
    if (s == NATS_OK && natsMsgHeader_Get(orig, "Nats-Msg-Id", &txn_id) == NATS_OK && txn_id)
        s = natsMsgHeader_Set(dl, "Verdict-Txn-Id", txn_id);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msgid;
    po.MaxWait = c->publish_timeout_ms;
    jsPubAck *pa = NULL;
    if (s == NATS_OK)
        s = js_PublishMsg(&pa, js, dl, &po, &jerrc);
    bool dup = pa && pa->Duplicate;
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(dl);
    natsMsg_Destroy(orig);
    if (s != NATS_OK) {
        json_decref(root);
        return broker_err(e, s, jerrc, "cannot store the dead letter");
    }
    /* Only after the dead letter is stored: remove the original so it cannot be decided or dead-lettered again */
    s = js_DeleteMsg(js, stream, (uint64_t)seq, NULL, &jerrc);
    if (s != NATS_OK && s != NATS_NOT_FOUND && jerrc != JSNoMessageFoundErr && jerrc != JSSequenceNotFoundErr) {
        json_decref(root);
        return broker_err(e, s, jerrc, "dead letter stored but the original could not be deleted");
    }
    *wrote = !dup;
    *why = r;
    if (!dup)
        log_warn("dead-lettered", "\"stream\":\"%s\",\"seq\":%lld,\"reason\":\"%s\",\"deliveries\":%lld", stream,
                 (long long)seq, reason, (long long)deliveries);
    json_decref(root);
    return V_OK;
}

static void *dlq_main(void *arg)
{
    dlq_worker *w = arg;
    while (!atomic_load(&w->stopping)) {
        natsMsgList list = {0};
        int pending = 0;
        if (natsSubscription_GetPending(w->sub, &pending, NULL) != NATS_OK)
            pending = 0;
        natsStatus s = natsSubscription_Fetch(&list, w->sub, pending > 0 ? 1 : 16, 500, NULL);
        if (s == NATS_TIMEOUT)
            continue;
        if (s != NATS_OK) {
            natsMsgList_Destroy(&list);
            struct timespec ts = {0, 200000000};
            nanosleep(&ts, NULL);
            continue;
        }
        for (int i = 0; i < list.Count; i++) {
            natsMsg *m = list.Msgs[i];
            bool wrote = false;
            poison_reason why = POISON_NONE;
            verror e = {0};
            if (dlq_handle_advisory(&w->cfg, w->js, natsMsg_GetData(m), natsMsg_GetDataLength(m), &wrote, &why,
                                    &e) == V_OK) {
                natsMsg_AckSync(m, NULL, NULL);
                if (wrote && w->total)
                    atomic_fetch_add(w->total, 1);
                if (wrote && w->by_reason)
                    atomic_fetch_add(&w->by_reason[why], 1);
            } else {
                log_error("advisory not handled; will retry", "\"error\":\"%s\"", log_esc(e.msg));
                natsMsg_NakWithDelay(m, 2000, NULL);
            }
        }
        natsMsgList_Destroy(&list);
    }
    return NULL;
}

vstatus dlq_worker_start(const config *c, natsConnection *nc, atomic_llong *total, atomic_llong *by_reason,
                         dlq_worker **out, verror *e)
{
    dlq_worker *w = calloc(1, sizeof *w);
    if (!w)
        return verror_set(e, V_ENOMEM, "out of memory");
    w->cfg = *c;
    w->total = total;
    w->by_reason = by_reason;
    natsStatus s = natsConnection_JetStream(&w->js, nc, NULL);
    if (s != NATS_OK) {
        free(w);
        return broker_err(e, s, 0, "cannot get a JetStream context");
    }
    char durable[NAME_MAX_LEN + 8];
    snprintf(durable, sizeof durable, "%s_dlq", c->consumer);
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    s = js_GetConsumerInfo(&ci, w->js, c->adv_stream, durable, NULL, &jerr);
    if (s != NATS_OK) {
        jsConsumerConfig cc;
        jsConsumerConfig_Init(&cc);
        cc.Durable = durable;
        cc.Description = "Verdict DLQ worker: turns advisories into dead letters";
        cc.AckPolicy = js_AckExplicit;
        cc.AckWait = 30LL * 1000000000LL;
        cc.MaxDeliver = -1; /* an advisory must never be dropped; failures are naked and retried */
        s = js_AddConsumer(&ci, w->js, c->adv_stream, &cc, NULL, &jerr);
    }
    jsConsumerInfo_Destroy(ci);
    if (s != NATS_OK) {
        jsCtx_Destroy(w->js);
        free(w);
        return broker_err(e, s, jerr, "cannot create the DLQ worker's consumer");
    }
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = c->adv_stream;
    so.Consumer = durable;
    so.ManualAck = true;
    s = js_PullSubscribe(&w->sub, w->js, "", durable, NULL, &so, &jerr);
    if (s != NATS_OK) {
        jsCtx_Destroy(w->js);
        free(w);
        return broker_err(e, s, jerr, "cannot bind the DLQ worker");
    }
    if (pthread_create(&w->thread, NULL, dlq_main, w) != 0) {
        natsSubscription_Destroy(w->sub);
        jsCtx_Destroy(w->js);
        free(w);
        return verror_set(e, V_ENOMEM, "cannot start the DLQ worker thread");
    }
    *out = w;
    return V_OK;
}

void dlq_worker_stop(dlq_worker *w)
{
    if (!w)
        return;
    atomic_store(&w->stopping, true);
    pthread_join(w->thread, NULL);
    natsSubscription_Destroy(w->sub);
    jsCtx_Destroy(w->js);
    free(w);
}

/* ingress.c - verdict.v1.decide: requests stored into TXN for the workers, and the duplicate resolver that
 * answers a client's retry with the stored decision. */
#include "engine_int.h"

#include "broker.h"
#include "codec.h"
#include "decide.h"
#include "dlq.h"
#include "history.h"
#include "ident.h"
#include "log.h"
#include "observe.h"
#include "partition.h"
#include "rebuild.h"
#include "sequencer.h"
#include "reloader.h"
#include "replica.h"
#include "velocity.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void ingress_on_request(natsConnection *nc, natsSubscription *sub, natsMsg *req, void *closure)
{
    (void)sub;
    engine *en = closure;
    const char *reply = natsMsg_GetReply(req);
    atomic_fetch_add(&en->stats.requests, 1);
    if (!reply || !reply[0]) {
        natsMsg_Destroy(req);
        return;
    }
    if (!reply_subject_ok(&en->cfg, reply)) {
        /* answered only when the subject is one we can publish to safely; the worker would ignore it anyway */
        request_failed(en, nc, ident_subject_valid(reply) ? reply : NULL, 400,
                       "reply subject refused: it must be an inbox under --reply-prefix");
        natsMsg_Destroy(req);
        return;
    }
    Transaction *t = NULL;
    poison_reason why;
    verror err = {0};
    json_request jr; /* the body as protobuf (a JSON one converted) and the reply format (jsoncodec.h) */
    if (json_request_read(req, &jr, &err) != V_OK ||
        txn_decode(&en->ingress_arena, jr.data, (size_t)jr.len, (size_t)en->cfg.max_msg_size, &t, &why, &err) != V_OK) {
        request_failed(en, nc, reply, jr.code ? jr.code : 400, err.msg);
        json_request_done(&jr);
        natsMsg_Destroy(req);
        return;
    }
    /* partitioned TXN: stored under the card's partition, where that partition's owner pulls it */
    char psubj[NAME_MAX_LEN + IDENT_SUBJECT_MAX];
    const char *subject = en->cfg.ingress_subject;
    if (en->cfg.partitions > 0) {
        if (!partition_ingress_subject(&en->cfg, t->card_id, psubj, sizeof psubj)) {
            request_failed(en, nc, reply, 400,
                           "card_id cannot be a subject token: it must not contain '.', '*', '>' or white space");
            json_request_done(&jr);
            natsMsg_Destroy(req);
            return;
        }
        subject = psubj;
    }
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, jr.data, jr.len);
    json_request_done(&jr);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Verdict-Reply-To", reply);
    if (s == NATS_OK && jr.reply_json)
        s = natsMsgHeader_Set(m, JSON_REPLY_HEADER, "json");
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = t->txn_id; /* nats.c sets Nats-Msg-Id from it */
    po.MaxWait = en->cfg.publish_timeout_ms;
    if (s == NATS_OK)
        s = js_PublishMsgAsync(en->ijs, &m, &po); /* on success nats.c owns m */
    if (s != NATS_OK) {
        request_failed(en, nc, reply, 503, "transaction not accepted: the stream is unavailable, retry");
        natsMsg_Destroy(m);
    }
    natsMsg_Destroy(req);
}

/* --- the duplicate resolver ----------------------------------------------------------------------------
 * A retried request whose first copy is still being decided must get that decision, not a new one, and must
 * not make anyone else wait: the PubAck handler only queues it (never blocks: all PubAcks of a connection come
 * on one nats.c thread), and this thread looks the decision up until it is stored or the budget is spent. */

static bool late_push(engine *en, const late_reply *r)
{
    pthread_mutex_lock(&en->late_mu);
    bool ok = en->late_n < LATE_CAP;
    if (ok) {
        en->late[(en->late_head + en->late_n) % LATE_CAP] = *r;
        en->late_n++;
        pthread_cond_signal(&en->late_cv);
    }
    pthread_mutex_unlock(&en->late_mu);
    return ok;
}

/* True unless TXN demonstrably does not hold the first copy: the Duplicate PubAck named sequence 0, or one past
 * the stream's end, or a message that is another transaction's (nats-server before 2.11 could keep the dedup id
 * of a write that never committed through a leader change). A message deleted on purpose (a dead letter's
 * original) is not brought back: `verdict audit` accounts for it. */
static bool first_copy_stored(engine *en, const late_reply *r)
{
    if (strcmp(en->cfg.fault, "dup_seq_zero") != 0 && r->seq > 0) {
        natsMsg *m = NULL;
        natsStatus s = js_GetMsg(&m, en->ijs, en->cfg.txn_stream, r->seq, NULL, NULL);
        if (s == NATS_OK) {
            const char *id = NULL;
            natsMsgHeader_Get(m, "Nats-Msg-Id", &id);
            size_t n = strlen(r->txn_id);
            bool ours = id && strncmp(id, r->txn_id, n) == 0 && (id[n] == 0 || strcmp(id + n, ":restored") == 0);
            natsMsg_Destroy(m);
            return ours;
        }
        if (s != NATS_NOT_FOUND)
            return true; /* cannot tell: never store twice on a guess */
        jsStreamInfo *si = NULL;
        if (js_GetStreamInfo(&si, en->ijs, en->cfg.txn_stream, NULL, NULL) != NATS_OK)
            return true;
        bool beyond = r->seq > si->State.LastSeq;
        jsStreamInfo_Destroy(si);
        if (!beyond)
            return true;
    }
    return false;
}

/* Stores the retry under a derived id (':' never occurs in a txn_id); the worker decides it as usual. */
static void restore_first_copy(engine *en, late_reply *r)
{
    char id[IDENT_TXN_ID_MAX + 16];
    snprintf(id, sizeof id, "%s:restored", r->txn_id);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = id;
    po.MaxWait = en->cfg.publish_timeout_ms;
    jsPubAck *pa = NULL;
    natsStatus s = js_PublishMsg(&pa, en->ijs, r->orig, &po, NULL);
    log_error("a retried transaction was confirmed before but TXN does not hold it; stored again under a "
              "derived id",
              "\"txn_id\":\"%s\",\"dup_seq\":%llu,\"stored\":%s,\"seq\":%llu", r->txn_id,
              (unsigned long long)r->seq, s == NATS_OK ? "true" : "false",
              (unsigned long long)(pa ? pa->Sequence : 0));
    if (s == NATS_OK)
        atomic_fetch_add(&en->stats.transactions_restored, 1);
    jsPubAck_Destroy(pa);
}

void late_done(late_reply *r)
{
    natsMsg_Destroy(r->orig);
    r->orig = NULL;
}

void *late_main(void *arg)
{
    engine *en = arg;
    for (;;) {
        pthread_mutex_lock(&en->late_mu);
        while (en->late_n == 0 && !atomic_load(&en->stopping)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&en->late_cv, &en->late_mu, &ts);
        }
        int n = 0;
        while (en->late_n > 0 && n < LATE_ROUND) {
            en->late_round[n++] = en->late[en->late_head];
            en->late_head = (en->late_head + 1) % LATE_CAP;
            en->late_n--;
        }
        bool stopping = atomic_load(&en->stopping);
        pthread_mutex_unlock(&en->late_mu);
        if (n == 0 && stopping)
            return NULL;
        bool waiting = false;
        for (int i = 0; i < n; i++) {
            late_reply *r = &en->late_round[i];
            natsMsg *stored = NULL;
            natsStatus s = stopping ? NATS_NOT_FOUND : find_decision(en, en->ijs, r->txn_id, &stored);
            if (s == NATS_NOT_FOUND && !stopping && !r->verified) {
                r->verified = true;
                if (!first_copy_stored(en, r))
                    restore_first_copy(en, r);
            }
            if (s == NATS_OK) {
                reply_decision(en->inc, r->reply, stored, true, r->orig);
                natsMsg_Destroy(stored);
                late_done(r);
            } else if (stopping) {
                reply_error(en->inc, r->reply, 503, "engine stopping; retry the request");
                late_done(r);
            } else if (mono_ns() < r->deadline_ns && (s == NATS_NOT_FOUND || s == NATS_TIMEOUT) && late_push(en, r)) {
                waiting = true;
            } else {
                reply_error(en->inc, r->reply, 409, "transaction already accepted and still being decided; retry");
                late_done(r);
            }
        }
        if (waiting)
            sleep_ms(5);
    }
}

/* PubAck of an ingress publish (nats.c's thread; never blocks). A Duplicate means this txn_id was accepted
 * before: its requester gets the stored decision through the resolver. */
void ingress_on_puback(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    engine *en = closure;
    const char *reply = NULL, *txn_id = NULL;
    natsMsgHeader_Get(msg, "Verdict-Reply-To", &reply);
    natsMsgHeader_Get(msg, "Nats-Msg-Id", &txn_id);
    if (pae) {
        request_failed(en, en->inc, reply, 503, "transaction not accepted: the stream did not confirm it, retry");
    } else if (pa && pa->Duplicate && txn_id && reply) {
        atomic_fetch_add(&en->stats.duplicates, 1);
        late_reply r = {.deadline_ns = mono_ns() + en->cfg.budget_ms * 1000000LL, .seq = pa->Sequence, .orig = msg};
        str_copy(r.txn_id, sizeof r.txn_id, txn_id);
        str_copy(r.reply, sizeof r.reply, reply);
        if (late_push(en, &r))
            return; /* msg is the resolver's now */
        request_failed(en, en->inc, reply, 503, "too many retries waiting for their decisions; retry");
    }
    natsMsg_Destroy(msg);
}

/* --- lifecycle ---------------------------------------------------------------------------------------- */

/* rebuild.c - velocity state from the TXN stream (see rebuild.h). */
#include "rebuild.h"

#include "broker.h"
#include "codec.h"
#include "idset.h"
#include "log.h"
#include "streamread.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* How long a read may wait for the next message before the rebuild is declared stalled (and failed). */
#define STALL_MS 5000

int64_t txn_event_ms(const Verdict__V1__Transaction *t, int64_t store_ms)
{
    (void)t; /* created_at_ms is the client's word: see rebuild.h */
    return store_ms;
}

/* Test fault (docs/testing.md): hold the rebuild after its first transaction, so a test can stall the server
 * while the reader still has messages to fetch. */
static void fault_pause(const config *c)
{
    if (strcmp(c->fault, "rebuild_pause") != 0)
        return;
    log_warn("test fault: rebuild paused", NULL);
    struct timespec ts = {3, 0};
    nanosleep(&ts, NULL);
}

vstatus rebuild_delivered_seq(jsCtx *js, const config *c, uint64_t *seq, verror *e)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, js, c->txn_stream, c->consumer, NULL, &jerr);
    if (s != NATS_OK)
        return broker_err(e, s, jerr, "cannot read the consumer's state");
    *seq = ci->Delivered.Stream;
    jsConsumerInfo_Destroy(ci);
    return V_OK;
}

vstatus rebuild_velocity(jsCtx *js, const config *c, const velocity_plan *pl, velocity *v, uint64_t upto_seq,
                         int64_t window_ms, rebuild_stats *st, verror *e)
{
    const featreg *reg = pl->reg;
    *st = (rebuild_stats){.upto_seq = upto_seq};
    int64_t t0 = mono_ns();
    stream_reader *r = NULL;
    int64_t from_ns = (now_ms() - window_ms) * 1000000LL;
    /* 1. which transactions were decided: Nats-Msg-Id of DECISIONS is the txn_id */
    idset decided;
    if (!idset_init(&decided, 1 << 16))
        return verror_set(e, V_ENOMEM, "out of memory");
    vstatus rc = stream_reader_open_headers(js, c->decisions_stream, 0, from_ns, &r, e);
    if (rc != V_OK) {
        idset_free(&decided);
        return rc;
    }
    uint64_t dec_end = stream_reader_end(r), dec_seq = 0;
    for (;;) {
        natsMsg *m = NULL;
        uint64_t seq;
        int64_t store_ns;
        verror re = {0};
        rc = stream_reader_next(r, &m, &seq, &store_ns, STALL_MS, &re);
        if (rc == V_ENOTFOUND)
            break; /* the end of the stream as it was at open */
        if (rc != V_OK) {
            /* a partial index would leave decided transactions uncounted: the counts too low, silently */
            stream_reader_close(r);
            idset_free(&decided);
            return verror_set(e, rc, "velocity rebuild incomplete: reading %s stopped after seq %llu of %llu: %s",
                              c->decisions_stream, (unsigned long long)dec_seq, (unsigned long long)dec_end,
                              re.msg);
        }
        dec_seq = seq;
        const char *id = NULL;
        if (natsMsgHeader_Get(m, "Nats-Msg-Id", &id) == NATS_OK && id && !idset_add(&decided, hash64_str(id))) {
            natsMsg_Destroy(m);
            stream_reader_close(r);
            idset_free(&decided);
            return verror_set(e, V_ENOMEM, "out of memory indexing decisions");
        }
        st->decisions++;
        natsMsg_Destroy(m);
    }
    stream_reader_close(r);
    r = NULL;
    /* 2. replay the transactions of the window */
    rc = stream_reader_open(js, c->txn_stream, NULL, 0, from_ns, &r, e);
    if (rc != V_OK) {
        idset_free(&decided);
        return rc;
    }
    if (!upto_seq || upto_seq > stream_reader_end(r))
        upto_seq = stream_reader_end(r);
    st->upto_seq = upto_seq;
    arena a;
    if (arena_init(&a, (size_t)c->max_msg_size * 4 + 4096) != V_OK) {
        stream_reader_close(r);
        idset_free(&decided);
        return verror_set(e, V_ENOMEM, "out of memory");
    }
    fval vals[FEAT_MAX];
    int64_t last_log = mono_ns();
    uint64_t txn_seq = 0;
    for (;;) {
        natsMsg *m = NULL;
        uint64_t seq;
        int64_t store_ns;
        verror re = {0};
        rc = stream_reader_next(r, &m, &seq, &store_ns, STALL_MS, &re);
        if (rc == V_ENOTFOUND) { /* the end (the reader also knows a deleted tail never arrives) */
            rc = V_OK;
            break;
        }
        if (rc != V_OK) {
            verror_set(e, rc, "velocity rebuild incomplete: reading %s stopped after seq %llu of %llu: %s",
                       c->txn_stream, (unsigned long long)txn_seq, (unsigned long long)upto_seq, re.msg);
            break;
        }
        if (st->read == 0)
            fault_pause(c);
        txn_seq = seq;
        if (seq > upto_seq) {
            natsMsg_Destroy(m);
            break;
        }
        st->read++;
        arena_reset(&a);
        Transaction *t = NULL;
        poison_reason why;
        if (txn_decode(&a, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), (size_t)c->max_msg_size, &t, &why,
                       NULL) == V_OK) {
            if (!idset_has(&decided, hash64_str(t->txn_id))) {
                st->undecided++;
            } else {
                int64_t ev = txn_event_ms(t, store_ns / 1000000);
                features_from_txn(reg, t, ev, vals);
                if (velocity_add(v, pl, vals, ev))
                    st->counted++;
            }
        } else {
            st->skipped++;
        }
        natsMsg_Destroy(m);
        if (mono_ns() - last_log > 2000000000LL) {
            last_log = mono_ns();
            log_info("rebuilding velocity state", "\"seq\":%llu,\"upto\":%llu,\"counted\":%llu",
                     (unsigned long long)seq, (unsigned long long)upto_seq, (unsigned long long)st->counted);
        }
        if (seq >= upto_seq)
            break;
    }
    stream_reader_close(r);
    arena_free(&a);
    idset_free(&decided);
    st->seconds = (double)(mono_ns() - t0) / 1e9;
    return rc;
}

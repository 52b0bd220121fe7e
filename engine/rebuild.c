/* rebuild.c - velocity state from the TXN stream (see rebuild.h). */
#include "rebuild.h"

#include "broker.h"
#include "codec.h"
#include "sequencer.h"
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

vstatus rebuild_consumer_seqs(jsCtx *js, const config *c, uint64_t *delivered, uint64_t *ack_floor, verror *e)
{
    /* partitioned: the highest delivered and the lowest ack floor of all partitions, so the state covers what
     * any partition delivered and the ring what any may deliver again */
    consumer_positions cp;
    vstatus rc = broker_consumer_positions(c, js, &cp, NULL, e);
    if (rc != V_OK)
        return rc;
    *delivered = cp.delivered;
    *ack_floor = cp.ack_floor;
    return V_OK;
}

int64_t rebuild_store_ns(jsCtx *js, const config *c, uint64_t seq)
{
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    if (!seq || js_GetMsg(&m, js, c->txn_stream, seq, NULL, &jerr) != NATS_OK)
        return 0;
    int64_t t = natsMsg_GetTime(m);
    natsMsg_Destroy(m);
    return t;
}

vstatus rebuild_velocity(jsCtx *js, const config *c, const velocity_plan *pl, velocity *v, const rebuild_range *rr,
                         rebuild_stats *st, verror *e)
{
    *st = (rebuild_stats){.upto_seq = rr->from_seq ? rr->from_seq - 1 : 0};
    int64_t t0 = mono_ns();
    uint64_t upto_seq = rr->upto_seq;
    if (rr->from_seq && upto_seq && upto_seq < rr->from_seq) {
        st->upto_seq = upto_seq;
        return V_OK; /* nothing to read */
    }
    stream_reader *r = NULL;
    vstatus rc = stream_reader_open(js, c->txn_stream, NULL, rr->from_seq, rr->from_seq ? 0 : rr->from_ns, &r, e);
    if (rc != V_OK)
        return rc;
    if (!upto_seq || upto_seq > stream_reader_end(r))
        upto_seq = stream_reader_end(r);
    arena a;
    if (arena_init(&a, txn_arena_size((size_t)c->max_msg_size)) != V_OK) {
        stream_reader_close(r);
        return verror_set(e, V_ENOMEM, "out of memory");
    }
    fval vals[FEAT_MAX];
    velvals vv;
    int64_t last_log = mono_ns();
    uint64_t txn_seq = st->upto_seq;
    velocity_stats_t before;
    velocity_stats(v, &before);
    for (;;) {
        natsMsg *m = NULL;
        uint64_t seq;
        int64_t store_ns;
        verror re = {0};
        rc = stream_reader_next(r, &m, &seq, &store_ns, STALL_MS, &re);
        if (rc == V_ENOTFOUND) { /* the end (the reader also knows a deleted tail never arrives) */
            rc = V_OK;
            txn_seq = upto_seq;
            break;
        }
        if (rc != V_OK) {
            verror_set(e, rc, "velocity rebuild incomplete: reading %s stopped after seq %llu of %llu: %s",
                       c->txn_stream, (unsigned long long)txn_seq, (unsigned long long)upto_seq, re.msg);
            break;
        }
        if (st->read == 0)
            fault_pause(c);
        if (seq > upto_seq) {
            natsMsg_Destroy(m);
            txn_seq = upto_seq;
            break;
        }
        txn_seq = seq;
        st->read++;
        arena_reset(&a);
        Transaction *t = NULL;
        poison_reason why;
        if (txn_decode(&a, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), (size_t)c->max_msg_size, &t, &why,
                       NULL) == V_OK) {
            int64_t ev = txn_event_ms(t, store_ns / 1000000);
            if (rr->ring && seq > rr->ring_after) {
                seq_step(v, pl, t, ev, vals);
                velvals_save(pl, vals, &vv);
                featring_put(rr->ring, seq, &vv);
                st->ringed++;
            } else {
                /* the same count as seq_step, without computing features nobody will read */
                features_from_txn(pl->reg, t, ev, vals);
                if (pl->n > 0)
                    velocity_add(v, pl, vals, ev);
            }
            st->counted++;
        } else {
            st->skipped++;
        }
        natsMsg_Destroy(m);
        if (!rr->quiet && mono_ns() - last_log > 2000000000LL) {
            last_log = mono_ns();
            log_info("rebuilding velocity state", "\"seq\":%llu,\"upto\":%llu,\"counted\":%llu",
                     (unsigned long long)seq, (unsigned long long)upto_seq, (unsigned long long)st->counted);
        }
        if (seq >= upto_seq)
            break;
    }
    stream_reader_close(r);
    arena_free(&a);
    velocity_stats_t after;
    velocity_stats(v, &after);
    st->duplicates = after.duplicates - before.duplicates;
    st->counted -= st->duplicates;
    st->upto_seq = txn_seq;
    st->seconds = (double)(mono_ns() - t0) / 1e9;
    return rc;
}

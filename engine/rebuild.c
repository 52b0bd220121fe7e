/* rebuild.c - velocity state from the TXN stream (see rebuild.h). */
#include "rebuild.h"

#include "broker.h"
#include "codec.h"
#include "sequencer.h"
#include "log.h"
#include "streamread.h"

#include <stdio.h>
#include <stdlib.h>
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

/* Counts TXN's message m (sequence seq, stored at store_ns) into v: decoded into a, then the sequencing step,
 * its features recorded in ring when seq > ring_after; undecodable ones count toward nothing. */
static void count_msg(const config *c, const velocity_plan *pl, velocity *v, arena *a, natsMsg *m, uint64_t seq,
                      int64_t store_ns, featring *ring, uint64_t ring_after, fval *vals, velvals *vv, rebuild_stats *st)
{
    st->read++;
    arena_reset(a);
    Transaction *t = NULL;
    poison_reason why;
    if (txn_decode(a, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), (size_t)c->max_msg_size, &t, &why,
                   NULL) != V_OK) {
        st->skipped++;
        return;
    }
    int64_t ev = txn_event_ms(t, store_ns / 1000000);
    if (ring && seq > ring_after) {
        seq_step(v, pl, t, ev, vals);
        velvals_save(pl, vals, vv);
        featring_put(ring, seq, vv);
        st->ringed++;
    } else {
        /* the same count as seq_step, without computing features nobody will read */
        features_from_txn(pl->reg, t, ev, vals);
        if (pl->n > 0)
            velocity_add(v, pl, vals, ev);
    }
    st->counted++;
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
        count_msg(c, pl, v, &a, m, seq, store_ns, rr->ring, rr->ring_after, vals, &vv, st);
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

/* --- the sequencing stage's persistent catch-up reader (rebuild.h) ------------------------------------------ */

/* How long one wait for the next message lasts before the reader asks whether it has read everything stored. */
#define CATCHUP_WAIT_MS 250

struct catchup_reader {
    stream_reader *r;
    natsMsg *ahead; /* the first message after the last catch-up's end, kept for the next one */
    uint64_t ahead_seq;
    int64_t ahead_ns;
    uint64_t consumed; /* every sequence up to it has been counted, skipped or does not exist */
    int64_t used_ns;   /* mono_ns() of the last catch-up */
    arena a;
    fval vals[FEAT_MAX];
    velvals vv;
};

void catchup_reader_close(catchup_reader *cr)
{
    if (!cr)
        return;
    natsMsg_Destroy(cr->ahead);
    stream_reader_close(cr->r);
    arena_free(&cr->a);
    free(cr);
}

bool catchup_reader_idle(catchup_reader **crp, int64_t idle_ns)
{
    if (!*crp || mono_ns() - (*crp)->used_ns < idle_ns)
        return false;
    catchup_reader_close(*crp);
    *crp = NULL;
    return true;
}

static vstatus catchup_open(jsCtx *js, const config *c, uint64_t from, catchup_reader **out, verror *e)
{
    catchup_reader *cr = calloc(1, sizeof *cr);
    if (!cr || arena_init(&cr->a, txn_arena_size((size_t)c->max_msg_size)) != V_OK) {
        free(cr);
        return verror_set(e, V_ENOMEM, "out of memory");
    }
    vstatus rc = stream_reader_open_follow(js, c->txn_stream, from, &cr->r, e);
    if (rc != V_OK) {
        arena_free(&cr->a);
        free(cr);
        return rc;
    }
    cr->consumed = from - 1;
    *out = cr;
    return V_OK;
}

vstatus catchup_read(catchup_reader **crp, jsCtx *js, const config *c, const velocity_plan *pl, velocity *v,
                     featring *ring, uint64_t pos, uint64_t to, rebuild_stats *st, bool *opened, verror *e)
{
    *st = (rebuild_stats){.upto_seq = pos};
    *opened = false;
    int64_t t0 = mono_ns();
    if (to <= pos)
        return V_OK;
    catchup_reader *cr = *crp;
    /* it can serve only what lies ahead of it, and only without holes */
    if (cr && (cr->consumed > pos || stream_reader_dropped(cr->r))) {
        catchup_reader_close(cr);
        *crp = cr = NULL;
    }
    if (!cr) {
        vstatus rc = catchup_open(js, c, pos + 1, &cr, e);
        if (rc != V_OK)
            return rc;
        *crp = cr;
        *opened = true;
    }
    cr->used_ns = mono_ns();
    velocity_stats_t before;
    velocity_stats(v, &before);
    bool quiet = to - pos < 100000;
    int64_t last_log = mono_ns(), waited_ms = 0;
    vstatus rc = V_OK;
    for (;;) {
        if (!cr->ahead) {
            verror re = {0};
            rc = stream_reader_next(cr->r, &cr->ahead, &cr->ahead_seq, &cr->ahead_ns, CATCHUP_WAIT_MS, &re);
            if (rc == V_ETIMEOUT) {
                /* nothing came: either every stored sequence up to `to` has been read (the rest were deleted),
                 * or the server is not delivering (stalled: fail after STALL_MS, as a rebuild does) */
                bool drained = false;
                rc = stream_reader_drained(cr->r, &drained, &re);
                if (rc == V_OK && drained) {
                    cr->consumed = to;
                    break;
                }
                waited_ms += CATCHUP_WAIT_MS;
                if (rc == V_OK && waited_ms < STALL_MS)
                    continue;
                if (rc == V_OK)
                    rc = V_ETIMEOUT;
            }
            if (rc != V_OK) {
                verror_set(e, rc, "velocity catch-up incomplete: reading %s stopped after seq %llu of %llu: %s",
                           c->txn_stream, (unsigned long long)cr->consumed, (unsigned long long)to,
                           rc == V_ETIMEOUT ? "no message within 5 s" : re.msg);
                break;
            }
            waited_ms = 0;
        }
        uint64_t seq = cr->ahead_seq;
        if (seq > to) { /* the next catch-up's: kept */
            cr->consumed = to;
            break;
        }
        /* at or below pos: the sequencer counted it from its own consumer */
        if (seq > pos)
            count_msg(c, pl, v, &cr->a, cr->ahead, seq, cr->ahead_ns, ring, 0, cr->vals, &cr->vv, st);
        natsMsg_Destroy(cr->ahead);
        cr->ahead = NULL;
        cr->consumed = seq;
        if (!quiet && mono_ns() - last_log > 2000000000LL) {
            last_log = mono_ns();
            log_info("catching up velocity state", "\"seq\":%llu,\"upto\":%llu,\"counted\":%llu",
                     (unsigned long long)seq, (unsigned long long)to, (unsigned long long)st->counted);
        }
        if (seq >= to)
            break;
    }
    velocity_stats_t after;
    velocity_stats(v, &after);
    st->duplicates = after.duplicates - before.duplicates;
    st->counted -= st->duplicates;
    st->upto_seq = rc == V_OK ? to : cr->consumed;
    st->seconds = (double)(mono_ns() - t0) / 1e9;
    if (rc != V_OK) { /* a failed reader is not trusted again: the next catch-up opens a new one */
        catchup_reader_close(cr);
        *crp = NULL;
    }
    return rc;
}

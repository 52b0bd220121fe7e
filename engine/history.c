/* history.c - a TXN range with serving's velocity state before each transaction (see history.h). */
#include "history.h"

#include "rebuild.h"
#include "replica.h"
#include "streamread.h"

#include <stdio.h>
#include <string.h>

/* How long a read may wait for the next message before the run is declared stalled (and failed). */
#define STALL_MS 5000
#define PROGRESS_NS 2000000000LL

int64_t history_longest_window(const featreg *reg)
{
    int64_t w = 0;
    for (int i = 0; i < reg->n; i++)
        if (reg->defs[i].kind == FK_VELOCITY && reg->defs[i].window_ms > w)
            w = reg->defs[i].window_ms;
    return w;
}

int64_t history_warmup_ms(int64_t window_ms) { return window_ms > 0 ? window_ms + window_ms / 5 + 10000 : 0; }

static vstatus open_at(jsCtx *js, const config *c, uint64_t seq, int64_t time_ns, stream_reader **r, verror *e)
{
    if (!seq && !time_ns)
        seq = 1; /* DeliverByStartSequence 1 is the stream's first message, whatever it is */
    return stream_reader_open(js, c->txn_stream, NULL, seq, seq ? 0 : time_ns, r, e);
}

vstatus history_find_first(jsCtx *js, const config *c, const history_range *range, uint64_t *seq, int64_t *store_ns,
                           verror *e)
{
    stream_reader *r = NULL;
    vstatus rc = open_at(js, c, range->from_seq, range->from_time_ns, &r, e);
    if (rc != V_OK)
        return rc;
    natsMsg *m = NULL;
    verror re = {0};
    rc = stream_reader_next(r, &m, seq, store_ns, STALL_MS, &re);
    natsMsg_Destroy(m);
    stream_reader_close(r);
    if (rc == V_ENOTFOUND)
        return verror_set(e, V_ENOTFOUND, "no transaction in %s in the range", c->txn_stream);
    if (rc != V_OK)
        return verror_set(e, rc, "reading the first transaction of the range from %s: %s", c->txn_stream, re.msg);
    if (range->to_seq && *seq > range->to_seq)
        return verror_set(e, V_ENOTFOUND, "no transaction in %s in the range", c->txn_stream);
    return V_OK;
}

vstatus history_run(jsCtx *js, const config *c, const velocity_plan *pl, velocity *v, const history_range *range,
                    const char *label, history_fn fn, void *ctx, history_stats *st, verror *e)
{
    *st = (history_stats){0};
    int64_t t0 = mono_ns();
    uint64_t first_seq;
    int64_t first_ns;
    vstatus rc = history_find_first(js, c, range, &first_seq, &first_ns, e);
    if (rc == V_ENOTFOUND)
        return V_OK; /* an empty range: nothing to do, and not an error here (the caller says so) */
    if (rc != V_OK)
        return rc;
    st->first_store_ns = first_ns;
    int64_t window = pl && v ? history_longest_window(pl->reg) : 0;
    stream_reader *r = NULL;
    if (window > 0) {
        st->warm_from_ns = first_ns - history_warmup_ms(window) * 1000000LL;
        rc = open_at(js, c, 0, st->warm_from_ns, &r, e);
    } else {
        rc = open_at(js, c, first_seq, 0, &r, e);
    }
    if (rc != V_OK)
        return rc;
    uint64_t to = range->to_seq && range->to_seq < stream_reader_end(r) ? range->to_seq : stream_reader_end(r);
    arena a;
    if (arena_init(&a, txn_arena_size((size_t)c->max_msg_size)) != V_OK) {
        stream_reader_close(r);
        return verror_set(e, V_ENOMEM, "out of memory");
    }
    static fval vals[FEAT_MAX]; /* the commands are single-threaded */
    int64_t last_progress = mono_ns();
    uint64_t seq = 0;
    for (;;) {
        natsMsg *m = NULL;
        int64_t store_ns;
        verror re = {0};
        uint64_t got;
        rc = stream_reader_next(r, &m, &got, &store_ns, STALL_MS, &re);
        if (rc == V_ENOTFOUND) { /* the stream's end as it was at open */
            rc = V_OK;
            break;
        }
        if (rc != V_OK) {
            verror_set(e, rc, "reading %s stopped after seq %llu (range %llu..%llu): %s", c->txn_stream,
                       (unsigned long long)seq, (unsigned long long)first_seq, (unsigned long long)to, re.msg);
            break;
        }
        seq = got;
        if (seq > to) {
            natsMsg_Destroy(m);
            break;
        }
        /* the warm-up begins at the stream's first message, which is younger than the window, and messages
         * were removed before it: some of the window is gone, and the first features may count too low */
        if (window > 0 && st->warm_read == 0 && st->read == 0 && seq == stream_reader_first(r) && seq > 1 &&
            store_ns > st->warm_from_ns)
            st->warm_truncated = true;
        bool in_range = seq >= first_seq;
        arena_reset(&a);
        Transaction *t = NULL;
        poison_reason why;
        bool ok = txn_decode(&a, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), (size_t)c->max_msg_size, &t,
                             &why, NULL) == V_OK;
        int64_t ev = ok ? txn_event_ms(t, store_ns / 1000000) : 0;
        bool go_on = true;
        if (!in_range) {
            st->warm_read++;
            if (!ok) {
                st->warm_skipped++;
            } else {
                features_from_txn(pl->reg, t, ev, vals);
                if (velocity_add(v, pl, vals, ev))
                    st->warm_counted++;
            }
        } else {
            if (!st->read)
                st->first_seq = seq;
            st->last_seq = seq;
            st->read++;
            if (!ok)
                st->skipped++;
            else
                go_on = fn(ctx, t, seq, ev);
        }
        natsMsg_Destroy(m);
        if (mono_ns() - last_progress > PROGRESS_NS) {
            last_progress = mono_ns();
            if (in_range)
                fprintf(stderr, "%s: seq %llu of %llu..%llu\n", label, (unsigned long long)seq,
                        (unsigned long long)first_seq, (unsigned long long)to);
            else
                fprintf(stderr, "%s: warming the velocity state, seq %llu of %llu (before the range)\n", label,
                        (unsigned long long)seq, (unsigned long long)first_seq);
        }
        if (!go_on || seq >= to)
            break;
    }
    stream_reader_close(r);
    arena_free(&a);
    st->seconds = (double)(mono_ns() - t0) / 1e9;
    return rc;
}

/* Whether reg reads a feature of this kind. */
static bool reads_kind(const featreg *reg, feat_kind k)
{
    for (int i = 0; i < reg->n; i++)
        if (reg->defs[i].kind == k)
            return true;
    return false;
}

static vstatus open_one(natsConnection *nc, jsCtx *js, const config *c, const char *bucket, replica_kind kind,
                        replica **out, verror *e)
{
    kvStore *kv = NULL;
    natsStatus s = js_KeyValue(&kv, js, bucket);
    if (s == NATS_NOT_FOUND)
        return V_OK; /* no bucket, no values: the features stay missing (a read creates nothing) */
    if (s != NATS_OK)
        return verror_set(e, V_ENATS, "cannot open the KV bucket %s: %s", bucket, natsStatus_GetText(s));
    kvStore_Destroy(kv);
    vstatus rc = replica_start(out, nc, bucket, kind, c->replicas, e);
    if (rc != V_OK)
        return rc;
    if (!replica_wait_ready(*out, 10000)) {
        replica_stop(*out);
        *out = NULL;
        return verror_set(e, V_ETIMEOUT, "the KV bucket %s did not load within 10 s", bucket);
    }
    return V_OK;
}

vstatus history_open_replicas(natsConnection *nc, jsCtx *js, const config *c, const featreg *reg, replica **lists,
                              replica **profiles, verror *e)
{
    *lists = *profiles = NULL;
    vstatus rc = V_OK;
    if (reads_kind(reg, FK_LIST))
        rc = open_one(nc, js, c, c->lists_bucket, REPLICA_LISTS, lists, e);
    if (rc == V_OK && reads_kind(reg, FK_PROFILE))
        rc = open_one(nc, js, c, c->profiles_bucket, REPLICA_PROFILES, profiles, e);
    if (rc != V_OK) {
        replica_stop(*lists);
        *lists = NULL;
    }
    return rc;
}

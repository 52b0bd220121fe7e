/* seqstage.c - the sequencing stage: the one puller of the durable consumer and the only writer of the velocity
 * state; computes each transaction's velocity features in stream order and hands batches to the workers
 * (docs/state.md, "Deterministic features"). */
#include "engine_int.h"

#include "broker.h"
#include "codec.h"
#include "decide.h"
#include "history.h"
#include "log.h"
#include "rebuild.h"
#include "sequencer.h"
#include "velocity.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

velref *velref_new(velocity *v, featring *ring, uint64_t pos)
{
    velref *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    atomic_init(&r->refs, 1);
    r->v = v;
    r->ring = ring;
    r->pos = pos;
    return r;
}

void velref_release(velref *r)
{
    if (r && atomic_fetch_sub(&r->refs, 1) == 1) {
        velocity_free(r->v);
        featring_free(r->ring);
        free(r);
    }
}

/* --feature-ring rounded up to a power of two (0: no ring). */
size_t feature_ring_cap(const config *c)
{
    size_t cap = 0;
    if (c->feature_ring > 0)
        for (cap = 1; cap < (size_t)c->feature_ring; cap <<= 1)
            ;
    return cap;
}

/* The state in force, held (velref_release it); NULL before there is one. */
velref *velref_current(engine *en)
{
    pthread_mutex_lock(&en->policy_mu);
    velref *r = en->vel;
    if (r)
        atomic_fetch_add(&r->refs, 1);
    pthread_mutex_unlock(&en->policy_mu);
    return r;
}

/* Hands b back to the free list (its messages and references released). */
void batch_recycle(engine *en, batch *b)
{
    natsMsgList_Destroy(&b->list);
    b->list = (natsMsgList){0};
    policy_release(b->policy);
    b->policy = NULL;
    velref_release(b->vel);
    b->vel = NULL;
    pthread_mutex_lock(&en->q_mu);
    b->next = en->free_b;
    en->free_b = b;
    pthread_cond_broadcast(&en->q_cv);
    pthread_mutex_unlock(&en->q_mu);
}

/* How long the catch-up reader stays open with no catch-up: a follower left alone receives every new message of
 * TXN (which the sequencer counts from its own consumer), so an engine whose gaps are rare closes it. */
#define CATCHUP_IDLE_NS (5 * 1000000000LL)

/* Counts TXN's sequences after the state's position up to `to` into it (their features go into its ring):
 * sequences the consumer did not hand this engine, or that a new state has not seen yet. They are read by the
 * engine's catch-up reader (rebuild.h: one ordered consumer kept open and read forward, so that a gap before
 * nearly every message costs no consumer creation each); a state that has seen nothing reads the window before
 * with a rebuild. A read that fails is logged and counted, and the position moves on all the same: those
 * transactions are missing from the state (docs/state.md), and deciding goes on rather than stopping; the reader
 * is opened again by the next catch-up. */
void seq_catch_up(engine *en, velref *r, const policy *p, uint64_t to)
{
    if (to <= r->pos)
        return;
    rebuild_stats st;
    verror e = {0};
    vstatus rc;
    uint64_t from = r->pos + 1;
    atomic_fetch_add(&en->stats.sequence_catch_ups, 1);
    if (r->pos == 0) { /* a state that has seen nothing: the window before, not the whole stream */
        rebuild_range rr = {.from_seq = 0, .upto_seq = to, .ring = r->ring, .quiet = to < 100000};
        rr.from_ns = (now_ms() - history_warmup_ms(longest_window(p))) * 1000000LL;
        from = 0;
        rc = rebuild_velocity(en->js, &en->cfg, policy_velocity_plan(p), r->v, &rr, &st, &e);
    } else {
        bool opened = false;
        rc = catchup_read(&en->catchup, en->js, &en->cfg, policy_velocity_plan(p), r->v, r->ring, r->pos, to, &st,
                          &opened, &e);
        if (opened)
            atomic_fetch_add(&en->stats.sequence_catchup_reader_opens, 1);
    }
    if (rc != V_OK) {
        /* the state misses these transactions; what follows is decided with it rather than not at all */
        atomic_fetch_add(&en->stats.sequence_gap_failures, 1);
        log_error("velocity state could not read sequences the consumer skipped; they are not counted",
                  "\"from\":%llu,\"to\":%llu,\"reached\":%llu,\"error\":\"%s\"", (unsigned long long)from,
                  (unsigned long long)to, (unsigned long long)st.upto_seq, log_esc(e.msg));
        r->pos = to;
        return;
    }
    atomic_fetch_add(&en->stats.sequence_gap_msgs, (long long)st.read);
    r->pos = to;
}

/* Closes the catch-up reader when catch-ups have stopped (see CATCHUP_IDLE_NS). The sequencing thread's. */
void seq_catch_up_idle(engine *en)
{
    catchup_reader_idle(&en->catchup, CATCHUP_IDLE_NS);
}

/* Prepares message i of b ahead of its turn (see seqprep): what sequence_one's usual path would do before it
 * touches the state, i.e. decode into the batch's block, extract the fields and hash the velocity keys (whose
 * index slots start loading). Anything off that path (a redelivery, poison, a transaction too large for the
 * block, a policy without velocity features) is left for sequence_one to do as it always does. The state's
 * position only grows, so a message below it now is below it at its turn too; one above it now is checked again
 * there. txn_decode_more gives back what a failed decode took from the block, so decoding again there is the
 * same decode. */
static void seq_prep(engine *en, batch *b, int i, seqprep *sp)
{
    sp->idx = -1;
    velref *r = b->vel;
    const velocity_plan *pl = policy_velocity_plan(b->policy);
    js_meta m;
    natsMsg *msg = b->list.Msgs[i];
    if (!r || en->cfg.passthrough || pl->n == 0 || !velocity_serves(r->v, pl) ||
        !broker_parse_ack_subject(natsMsg_GetReply(msg), &m) || m.stream_seq <= r->pos)
        return;
    poison_reason why;
    if (txn_decode_more(&b->txa, natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg),
                        (size_t)en->cfg.max_msg_size, &sp->t, &why, NULL) != V_OK)
        return;
    sp->event_ms = txn_event_ms(sp->t, m.timestamp_ns / 1000000);
    features_from_txn(pl->reg, sp->t, sp->event_ms, sp->vals);
    velocity_keys(r->v, pl, sp->vals, &sp->keys);
    sp->idx = i;
}

/* One message: its velocity features, exactly once per stream sequence and in stream order. sp: the message
 * prepared by seq_prep, or NULL. */
static void sequence_one(engine *en, batch *b, int i, seqprep *sp)
{
    b->vs[i] = VS_NONE;
    b->txn[i] = NULL;
    velref *r = b->vel;
    const policy *p = b->policy;
    const velocity_plan *pl = policy_velocity_plan(p);
    js_meta m;
    if (!r || en->cfg.passthrough || !broker_parse_ack_subject(natsMsg_GetReply(b->list.Msgs[i]), &m))
        return;
    natsMsg *msg = b->list.Msgs[i];
    uint64_t seq = m.stream_seq;
    if (pl->n == 0) {
        if (seq > r->pos)
            r->pos = seq; /* nothing to count, but a reload's new state must know where the stream is */
        return;
    }
    if (!velocity_serves(r->v, pl)) {
        /* never paired so (a policy swaps with its state): no slot is filled, and the decision says degraded */
        b->vv[i].n = 0;
        b->vs[i] = VS_INEXACT;
        return;
    }
    velvals *vv = &b->vv[i];
    if (seq <= r->pos) {
        /* a redelivery (nak, AckWait, restart): the features it was given the first time */
        if (featring_get(r->ring, seq, vv) && vv->n == pl->n) {
            b->vs[i] = VS_EXACT;
            return;
        }
    }
    /* decoded into the batch's block, where the worker finds it; one that does not fit there (a rare large one)
     * into the sequencer's own arena, and the worker decodes it again */
    Transaction *t = sp ? sp->t : NULL;
    poison_reason why;
    const void *data = natsMsg_GetData(msg);
    size_t len = (size_t)natsMsg_GetDataLength(msg), max = (size_t)en->cfg.max_msg_size;
    vstatus dr = sp ? V_OK : txn_decode_more(&b->txa, data, len, max, &t, &why, NULL);
    if (dr == V_ENOMEM)
        dr = txn_decode(&en->seq_arena, data, len, max, &t, &why, NULL);
    else if (dr == V_OK)
        b->txn[i] = t;
    if (dr != V_OK) {
        if (seq > r->pos)
            r->pos = seq; /* poison counts toward nothing; the worker dead-letters it */
        return;
    }
    int64_t ev = txn_event_ms(t, m.timestamp_ns / 1000000);
    if (seq <= r->pos) {
        /* older than the ring: the state as it is now (it has moved on), marked degraded */
        atomic_fetch_add(&en->stats.features_inexact, 1);
        features_from_txn(pl->reg, t, ev, en->seq_vals);
        velocity_features(r->v, pl, en->seq_vals, ev);
        velvals_save(pl, en->seq_vals, vv);
        b->vs[i] = VS_INEXACT;
        return;
    }
    if (seq > r->pos + 1)
        seq_catch_up(en, r, p, seq - 1);
    if (sp) { /* the fields extracted and the keys hashed ahead: seq_step's work, the rest of it */
        velocity_features_and_add_keyed(r->v, pl, sp->vals, ev, &sp->keys);
        velvals_save(pl, sp->vals, vv);
    } else {
        seq_step(r->v, pl, t, ev, en->seq_vals);
        velvals_save(pl, en->seq_vals, vv);
    }
    featring_put(r->ring, seq, vv);
    r->pos = seq;
    b->vs[i] = VS_EXACT;
}

/* The policy and state for the next batch. A reload that brought a new state (built up to its own position)
 * takes effect once the sequencer has reached that position, so no transaction is sequenced twice or by a
 * state that has counted transactions after it; the new state then catches up over what came since. */
static void seq_switch(engine *en)
{
    policy *drop_p = NULL;
    velref *drop_v = NULL, *nv = NULL;
    policy *np = NULL;
    pthread_mutex_lock(&en->policy_mu);
    if (en->next_vel && (!en->vel || en->vel->pos >= en->next_vel->pos)) {
        drop_p = en->policy;
        drop_v = en->vel;
        en->policy = np = en->next_policy;
        en->vel = nv = en->next_vel;
        en->next_policy = NULL;
        en->next_vel = NULL;
        policy_retain(np);
        atomic_fetch_add(&nv->refs, 1);
    }
    pthread_mutex_unlock(&en->policy_mu);
    if (!nv)
        return;
    /* only this thread writes a state in force: the catch-up may run outside the lock */
    uint64_t from = nv->pos + 1;
    if (drop_v && nv->pos < drop_v->pos)
        seq_catch_up(en, nv, np, drop_v->pos);
    log_info("new velocity state in force", "\"rules_version\":\"%s\",\"from_seq\":%llu,\"caught_up_to\":%llu",
             policy_rules_version(np), (unsigned long long)from, (unsigned long long)nv->pos);
    policy_release(drop_p);
    velref_release(drop_v);
    policy_release(np);
    velref_release(nv);
}

static void batch_take_policy(engine *en, batch *b)
{
    seq_switch(en);
    pthread_mutex_lock(&en->policy_mu);
    b->policy = en->policy;
    policy_retain(b->policy);
    b->vel = en->vel;
    if (b->vel)
        atomic_fetch_add(&b->vel->refs, 1);
    pthread_mutex_unlock(&en->policy_mu);
}

void batch_enqueue(engine *en, batch **head, batch **tail, batch *b)
{
    pthread_mutex_lock(&en->q_mu);
    b->next = NULL;
    if (*tail)
        (*tail)->next = b;
    else
        *head = b;
    *tail = b;
    pthread_cond_broadcast(&en->q_cv);
    pthread_mutex_unlock(&en->q_mu);
}

/* Partitioned: the next batch a partition's fetcher queued (partset.c), or NULL after a short wait. */
static batch *take_fetched(engine *en)
{
    pthread_mutex_lock(&en->q_mu);
    if (!en->fetched_head && !atomic_load(&en->stopping))
        cond_wait_ms(&en->q_cv, &en->q_mu, 100);
    batch *b = en->fetched_head;
    if (b) {
        en->fetched_head = b->next;
        if (!en->fetched_head)
            en->fetched_tail = NULL;
    }
    pthread_mutex_unlock(&en->q_mu);
    return b;
}

static void hand_to_workers(engine *en, batch *b)
{
    batch_take_policy(en, b);
    arena_reset(&b->txa);
    /* SEQ_AHEAD transactions ahead: message i + SEQ_AHEAD is prepared (its index slots start loading), the
     * records of message i + 1 start loading (its index slots arrived meanwhile), then message i is counted */
    int n = b->list.Count;
    seqprep *pre = en->seq_pre;
    for (int j = 0; j <= SEQ_AHEAD; j++)
        pre[j].idx = -1;
    for (int j = 0; j < SEQ_AHEAD && j < n; j++)
        seq_prep(en, b, j, &pre[j]);
    for (int i = 0; i < n; i++) {
        if (i + SEQ_AHEAD < n)
            seq_prep(en, b, i + SEQ_AHEAD, &pre[(i + SEQ_AHEAD) % (SEQ_AHEAD + 1)]);
        seqprep *next = &pre[(i + 1) % (SEQ_AHEAD + 1)];
        if (next->idx == i + 1)
            velocity_prefetch_recs(b->vel->v, &next->keys);
        seqprep *sp = &pre[i % (SEQ_AHEAD + 1)];
        sequence_one(en, b, i, sp->idx == i ? sp : NULL);
    }
    batch_enqueue(en, &en->ready_head, &en->ready_tail, b);
    checkpoint_serve(en->ckpt); /* between two batches: the state is at a sequence boundary */
}

/* The partitioned sequencer: the fetchers pull, this thread only sequences, in the order batches arrive. A
 * message below the state's position (another partition ran ahead) finds its features in the ring, recorded
 * in stream order by the catch-up that counted it. At the stop, what was fetched but not sequenced is handed
 * back at once for the next owner. */
static void seq_partitioned(engine *en)
{
    while (!atomic_load(&en->stopping)) {
        batch *b = take_fetched(en);
        if (!b) {
            seq_switch(en); /* idle: a reload's new state need not wait for traffic */
            seq_catch_up_idle(en);
            checkpoint_serve(en->ckpt);
            continue;
        }
        hand_to_workers(en, b);
        seq_catch_up_idle(en);
    }
    for (batch *b; (b = take_fetched(en)) != NULL;) {
        for (int i = 0; i < b->list.Count; i++)
            natsMsg_Nak(b->list.Msgs[i], NULL);
        batch_recycle(en, b);
    }
}

void *seq_main(void *arg)
{
    engine *en = arg;
    if (en->parts) {
        seq_partitioned(en);
        pthread_mutex_lock(&en->q_mu);
        pthread_cond_broadcast(&en->q_cv);
        pthread_mutex_unlock(&en->q_mu);
        return NULL;
    }
    while (!atomic_load(&en->stopping)) {
        pthread_mutex_lock(&en->q_mu);
        while (!en->free_b && !atomic_load(&en->stopping)) {
            cond_wait_ms(&en->q_cv, &en->q_mu, 100); /* and look at stopping again */
        }
        batch *b = en->free_b;
        if (b)
            en->free_b = b->next;
        pthread_mutex_unlock(&en->q_mu);
        if (!b)
            break;
        if (!lease_fetch_allowed(en)) { /* fenced: another engine may own the consumer by now */
            batch_recycle(en, b);
            sleep_ms(20);
            continue;
        }
        jsErrCode jerr = 0;
        natsStatus s = broker_fetch(en->sub, &b->list, en->cfg.batch, 500, &jerr);
        if (s == NATS_TIMEOUT || (s == NATS_OK && b->list.Count == 0)) {
            batch_recycle(en, b);
            seq_switch(en); /* idle: a reload's new state need not wait for traffic */
            seq_catch_up_idle(en);
            checkpoint_serve(en->ckpt);
            continue;
        }
        if (s != NATS_OK) {
            if (!atomic_load(&en->stopping))
            {
                /* NATS_ERR's own text is "Error": the library's last error says what it was */
                const char *detail = nats_GetLastError(NULL);
                log_warn("fetch failed; retrying", "\"error\":\"%s\",\"status\":\"%s\",\"js_code\":%d",
                         log_esc(s == NATS_ERR && detail && detail[0] ? detail : natsStatus_GetText(s)),
                         log_esc(natsStatus_GetText(s)), (int)jerr);
            }
            batch_recycle(en, b);
            sleep_ms(200);
            continue;
        }
        if (!lease_fetch_allowed(en)) {
            /* the lease lapsed during the fetch: hand the messages back for the next owner at once */
            int unnaked = 0;
            for (int i = 0; i < b->list.Count; i++)
                unnaked += natsMsg_Nak(b->list.Msgs[i], NULL) != NATS_OK;
            if (unnaked) /* not lost: the server redelivers them after AckWait */
                log_warn("fenced: some messages could not be handed back; they are redelivered after AckWait",
                         "\"messages\":%d", unnaked);
            batch_recycle(en, b);
            continue;
        }
        b->recv_ns = mono_ns();
        b->recv_wall_us = now_us();
        hand_to_workers(en, b);
        seq_catch_up_idle(en);
    }
    pthread_mutex_lock(&en->q_mu);
    pthread_cond_broadcast(&en->q_cv);
    pthread_mutex_unlock(&en->q_mu);
    return NULL;
}

/* checkpoint.c - velocity checkpoints taken by the engine and loaded at its start (see checkpoint.h). */
#include "checkpoint.h"

#include "engine_int.h"
#include "history.h"
#include "snapshot.h"

enum { CK_IDLE = 0, CK_WANTED, CK_TAKEN, CK_FAILED };

struct checkpoint {
    engine *en;
    pthread_t thread;
    bool running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_bool quit;
    atomic_int state; /* CK_*; the buffer is the sequencer's to write only while CK_WANTED (under mu) */
    uint64_t ack_floor; /* the ring's entries above it go with the state */
    unsigned char *buf;
    size_t cap;
    size_t vlen, len; /* the state's bytes, and with the ring's */
    uint64_t pos;
    int64_t copy_ns;
    natsConnection *nc; /* its own: megabytes of chunks never queue the decisions' publishes and acks */
    jsCtx *js;
    uint64_t last_pos; /* of the last save (0: none yet) */
};

/* The state in force and its ring into buf. Only on the thread that owns the state (the sequencing thread, or
 * the stopping thread once it has ended). */
static bool take_copy(checkpoint *ck)
{
    velref *r = ck->en->vel;
    if (!r)
        return false;
    int64_t t0 = mono_ns();
    verror e = {0};
    size_t vlen = 0;
    if (velocity_snapshot_copy(r->v, r->pos, now_ms(), ck->buf, ck->cap, &vlen, &e) != V_OK) {
        log_warn("velocity snapshot not taken", "\"error\":\"%s\"", log_esc(e.msg));
        return false;
    }
    size_t rl = featring_export(r->ring, ck->ack_floor, r->pos, ck->buf + vlen, ck->cap - vlen);
    if (!rl)
        return false;
    ck->vlen = vlen;
    ck->len = vlen + rl;
    ck->pos = r->pos;
    ck->copy_ns = mono_ns() - t0;
    return true;
}

void checkpoint_serve(checkpoint *ck)
{
    if (!ck || atomic_load(&ck->state) != CK_WANTED)
        return;
    pthread_mutex_lock(&ck->mu);
    if (atomic_load(&ck->state) == CK_WANTED) {
        atomic_store(&ck->state, take_copy(ck) ? CK_TAKEN : CK_FAILED);
        pthread_cond_broadcast(&ck->cv);
    }
    pthread_mutex_unlock(&ck->mu);
}

/* Room for the state as it is now, with a margin for what it grows by before the copy, and the whole ring.
 * The new part is written once here, so the copy on the sequencing thread never takes page faults. */
static bool prepare_buffer(checkpoint *ck)
{
    engine *en = ck->en;
    velref *r = velref_current(en);
    if (!r)
        return false;
    size_t need = velocity_snapshot_bound(r->v);
    need += need / 8 + ((size_t)1 << 20) + featring_export_bound(r->ring);
    velref_release(r);
    if (need <= ck->cap)
        return true;
    unsigned char *nb = realloc(ck->buf, need);
    if (!nb) {
        log_warn("no memory for a velocity snapshot", "\"bytes\":%zu", need);
        return false;
    }
    memset(nb + ck->cap, 0, need - ck->cap);
    ck->buf = nb;
    ck->cap = need;
    return true;
}

/* Seals, stores and prunes what take_copy left in buf. */
static void store(checkpoint *ck, const char *why)
{
    engine *en = ck->en;
    if (ck->pos == ck->last_pos)
        return; /* nothing counted since the last one */
    int64_t t0 = mono_ns();
    velocity_snapshot_seal(ck->buf, ck->vlen);
    verror e = {0};
    if (snapshot_save(ck->js, &en->cfg, ck->buf, ck->len, ck->pos, &e) != V_OK) {
        atomic_fetch_add(&en->stats.snapshot_failures, 1);
        log_warn("velocity snapshot not saved; the next one is tried at the next interval",
                 "\"why\":\"%s\",\"position\":%llu,\"error\":\"%s\"", why, (unsigned long long)ck->pos,
                 log_esc(e.msg));
        return;
    }
    ck->last_pos = ck->pos;
    atomic_fetch_add(&en->stats.snapshots, 1);
    atomic_store(&en->stats.snapshot_position, (long long)ck->pos);
    atomic_store(&en->stats.snapshot_unix_ms, (long long)now_ms());
    log_info("velocity checkpoint", "\"why\":\"%s\",\"position\":%llu,\"bytes\":%zu,\"copy_ms\":%.1f,\"save_ms\":%.1f",
             why, (unsigned long long)ck->pos, ck->len, (double)ck->copy_ns / 1e6, (double)(mono_ns() - t0) / 1e6);
    if (snapshot_prune(ck->js, &en->cfg, (int)en->cfg.snapshot_keep, &e) != V_OK)
        log_warn("old velocity snapshots not pruned", "\"error\":\"%s\"", log_esc(e.msg));
}

static bool ack_floor(checkpoint *ck, uint64_t *af)
{
    uint64_t delivered;
    verror e = {0};
    if (rebuild_consumer_seqs(ck->js, &ck->en->cfg, &delivered, af, &e) != V_OK) {
        atomic_fetch_add(&ck->en->stats.snapshot_failures, 1);
        log_warn("velocity snapshot skipped: the consumer's ack floor is unknown", "\"error\":\"%s\"",
                 log_esc(e.msg));
        return false;
    }
    return true;
}

static void save_once(checkpoint *ck)
{
    uint64_t af;
    if (!ack_floor(ck, &af) || !prepare_buffer(ck))
        return;
    pthread_mutex_lock(&ck->mu);
    ck->ack_floor = af;
    atomic_store(&ck->state, CK_WANTED);
    /* the sequencing thread takes it between two batches, or within 500 ms when idle */
    for (int waited = 0; atomic_load(&ck->state) == CK_WANTED && !atomic_load(&ck->quit) && waited < 30000;
         waited += 100) {
        cond_wait_ms(&ck->cv, &ck->mu, 100);
    }
    int st = atomic_load(&ck->state);
    atomic_store(&ck->state, CK_IDLE); /* from here the buffer is ours again */
    pthread_mutex_unlock(&ck->mu);
    if (st != CK_TAKEN) {
        if (st == CK_FAILED || st == CK_WANTED)
            atomic_fetch_add(&ck->en->stats.snapshot_failures, 1);
        return;
    }
    store(ck, "interval");
}

static void *ck_main(void *arg)
{
    checkpoint *ck = arg;
    const int64_t every = ck->en->cfg.snapshot_interval_ms;
    int64_t next = now_ms() + every;
    while (!atomic_load(&ck->quit)) {
        if (now_ms() < next) {
            sleep_ms(100);
            continue;
        }
        save_once(ck);
        next = now_ms() + every;
    }
    return NULL;
}

vstatus checkpoint_start(engine *en, checkpoint **out, verror *e)
{
    *out = NULL;
    if (en->cfg.snapshot_interval_ms <= 0)
        return V_OK;
    checkpoint *ck = calloc(1, sizeof *ck);
    if (!ck)
        return verror_set(e, V_ENOMEM, "out of memory");
    ck->en = en;
    pthread_mutex_init(&ck->mu, NULL);
    pthread_cond_init(&ck->cv, NULL);
    char name[128];
    snprintf(name, sizeof name, "verdict-%s-state", en->cfg.engine_id);
    vstatus rc = broker_connect(&en->cfg, name, false, &ck->nc, e);
    pthread_mutex_lock(&en->conn_mu); /* the closer ends a save in progress at the stop deadline */
    en->snc = ck->nc;
    pthread_mutex_unlock(&en->conn_mu);
    if (rc != V_OK) {
        checkpoint_stop(ck);
        return rc;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 10000;
    natsStatus s = natsConnection_JetStream(&ck->js, ck->nc, &jo);
    if (s != NATS_OK) {
        checkpoint_stop(ck);
        return broker_err(e, s, 0, "cannot get a JetStream context for snapshots");
    }
    if (pthread_create(&ck->thread, NULL, ck_main, ck) != 0) {
        checkpoint_stop(ck);
        return verror_set(e, V_ENOMEM, "cannot start the snapshot thread");
    }
    ck->running = true;
    *out = ck;
    return V_OK;
}

static void join(checkpoint *ck)
{
    atomic_store(&ck->quit, true);
    pthread_mutex_lock(&ck->mu);
    pthread_cond_broadcast(&ck->cv);
    pthread_mutex_unlock(&ck->mu);
    if (ck->running) {
        pthread_join(ck->thread, NULL);
        ck->running = false;
    }
}

void checkpoint_final(checkpoint *ck, int64_t deadline_ns)
{
    if (!ck)
        return;
    join(ck);
    /* a large state takes about a second to store on loopback: not worth starting with less left */
    if ((deadline_ns - mono_ns()) / 1000000 < 1000)
        return;
    uint64_t af;
    if (!ack_floor(ck, &af) || !prepare_buffer(ck))
        return;
    ck->ack_floor = af;
    if (take_copy(ck))
        store(ck, "stop");
}

void checkpoint_stop(checkpoint *ck)
{
    if (!ck)
        return;
    join(ck);
    jsCtx_Destroy(ck->js);
    pthread_mutex_lock(&ck->en->conn_mu);
    ck->en->snc = NULL;
    pthread_mutex_unlock(&ck->en->conn_mu);
    natsConnection_Destroy(ck->nc);
    pthread_mutex_destroy(&ck->mu);
    pthread_cond_destroy(&ck->cv);
    free(ck->buf);
    free(ck);
}

/* --- at start ------------------------------------------------------------------------------------------- */

vstatus checkpoint_load(engine *en, const policy *p, velref **out, verror *e)
{
    *out = NULL;
    const config *c = &en->cfg;
    const velocity_plan *pl = policy_velocity_plan(p);
    if (c->snapshot_interval_ms <= 0 || pl->n == 0)
        return verror_set(e, V_ENOTFOUND, "snapshots are off");
    velocity_cfg vc = {.max_keys = (size_t)c->max_keys};
    velocity *v = NULL;
    uint64_t pos = 0;
    unsigned char *extra = NULL;
    size_t extra_len = 0;
    vstatus rc = snapshot_load_newest(en->js, c, pl, &vc, &v, &pos, &extra, &extra_len, e);
    if (rc != V_OK)
        return rc;
    /* the snapshot counts TXN up to pos: the stream must still continue it */
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    uint64_t delivered = 0, af = 0;
    natsStatus s = js_GetStreamInfo(&si, en->js, c->txn_stream, NULL, &jerr);
    if (s != NATS_OK)
        rc = broker_err(e, s, jerr, "cannot read the transactions stream");
    else if ((rc = rebuild_consumer_seqs(en->js, c, &delivered, &af, e)) != V_OK)
        ;
    else if (pos > si->State.LastSeq || pos > delivered)
        rc = verror_set(e, V_ECONFLICT,
                        "the snapshot counts up to seq %llu but %s ends at %llu and the consumer delivered %llu: "
                        "the stream or the consumer was recreated",
                        (unsigned long long)pos, c->txn_stream, (unsigned long long)si->State.LastSeq,
                        (unsigned long long)delivered);
    else if (si->State.FirstSeq > pos + 1 && pos < si->State.LastSeq)
        rc = verror_set(e, V_ECONFLICT, "transactions after the snapshot (seq %llu) are no longer in %s (it starts at %llu)",
                        (unsigned long long)pos, c->txn_stream, (unsigned long long)si->State.FirstSeq);
    jsStreamInfo_Destroy(si);
    if (rc == V_OK && pos < delivered) {
        /* replaying from it must read less than a full rebuild would */
        int64_t next_ns = rebuild_store_ns(en->js, c, pos + 1);
        if (next_ns && next_ns / 1000000 < now_ms() - history_warmup_ms(longest_window(p)))
            rc = verror_set(e, V_ECONFLICT, "the snapshot (seq %llu) is older than the longest window: a full "
                                            "rebuild reads less", (unsigned long long)pos);
    }
    featring *ring = NULL;
    if (rc == V_OK)
        rc = featring_new(feature_ring_cap(c), pl->n, &ring, e);
    size_t entries = 0;
    if (rc == V_OK && extra_len && !featring_import(ring, extra, extra_len, &entries))
        log_warn("the snapshot's feature ring does not fit; redeliveries it held are decided degraded", NULL);
    free(extra);
    if (rc == V_OK && !(*out = velref_new(v, ring, pos)))
        rc = verror_set(e, V_ENOMEM, "out of memory");
    if (rc != V_OK) {
        velocity_free(v);
        featring_free(ring);
        return rc;
    }
    log_info("velocity state from a snapshot", "\"position\":%llu,\"ring_entries\":%zu,\"delivered\":%llu",
             (unsigned long long)pos, entries, (unsigned long long)delivered);
    return V_OK;
}

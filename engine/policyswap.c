/* policyswap.c - reloads: a new policy swapped in between batches, with a velocity state built for it when its
 * velocity features differ (taking effect when the sequencing stage reaches its position). */
#include "engine_int.h"

#include "broker.h"
#include "codec.h"
#include "decide.h"
#include "dlq.h"
#include "history.h"
#include "ident.h"
#include "log.h"
#include "observe.h"
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

/* The longest velocity window p reads (0 if none). */
int64_t longest_window(const policy *p)
{
    const featreg *r = policy_featreg(p);
    int64_t w = 0;
    for (int i = 0; i < r->n; i++)
        if (r->defs[i].kind == FK_VELOCITY && r->defs[i].window_ms > w)
            w = r->defs[i].window_ms;
    return w;
}

/* A velocity state for p's velocity plan, at the position the sequencing stage needs: at a start, every
 * transaction up to what the consumer has delivered (the redeliveries of the unacked ones then find their own
 * features in the ring); on a reload, up to the stream's end (the sequencer switches to it once it gets there).
 * The read starts a window before the oldest unacked transaction, so its features are complete too. A rebuild
 * that does not reach its end is an error: no state is better than one that counts too low. */
vstatus make_velocity(engine *en, const policy *p, bool at_start, velref **out, verror *e)
{
    const velocity_plan *pl = policy_velocity_plan(p);
    if (at_start) {
        verror se = {0};
        velref *r = NULL;
        vstatus sr = checkpoint_load(en, p, &r, &se);
        if (sr == V_OK) {
            /* continue it over what the consumer delivered since (the ring gets their features) */
            uint64_t delivered = 0, af = 0;
            rebuild_stats st;
            rebuild_range rr = {.from_seq = r->pos + 1, .ring = r->ring};
            sr = rebuild_consumer_seqs(en->js, &en->cfg, &delivered, &af, &se);
            rr.upto_seq = delivered;
            rr.ring_after = af; /* features where a redelivery may need them */
            if (sr == V_OK && delivered > r->pos)
                sr = rebuild_velocity(en->js, &en->cfg, pl, r->v, &rr, &st, &se);
            if (sr == V_OK) {
                if (delivered > r->pos)
                    log_info("velocity state continued from the snapshot",
                             "\"from_seq\":%llu,\"upto_seq\":%llu,\"read\":%llu,\"seconds\":%.3f",
                             (unsigned long long)rr.from_seq, (unsigned long long)st.upto_seq,
                             (unsigned long long)st.read, st.seconds);
                r->pos = delivered > r->pos ? st.upto_seq : r->pos;
                *out = r;
                return V_OK;
            }
            velref_release(r);
        }
        if (sr != V_ENOTFOUND || en->cfg.snapshot_interval_ms > 0)
            log_info("velocity state: full rebuild", "\"why\":\"%s\"", log_esc(se.msg));
    }
    velocity_cfg vc = {.max_keys = (size_t)en->cfg.max_keys};
    velocity *v = NULL;
    featring *ring = NULL;
    vstatus rc = velocity_new(pl, &vc, &v, e);
    if (rc != V_OK)
        return rc;
    size_t cap = feature_ring_cap(&en->cfg);
    if ((rc = featring_new(cap, pl->n, &ring, e)) != V_OK) {
        velocity_free(v);
        return rc;
    }
    uint64_t delivered = 0, ack_floor = 0, pos = 0;
    if ((rc = rebuild_consumer_seqs(en->js, &en->cfg, &delivered, &ack_floor, e)) != V_OK)
        goto fail;
    pos = at_start ? delivered : 0;
    int64_t window = longest_window(p);
    if (window > 0 && !(at_start && delivered == 0)) {
        int64_t oldest_ns = ack_floor < delivered ? rebuild_store_ns(en->js, &en->cfg, ack_floor + 1) : 0;
        int64_t now_ns = now_ms() * 1000000LL;
        if (!oldest_ns || oldest_ns > now_ns)
            oldest_ns = now_ns;
        /* a window's buckets reach back a little past it: the span replay and features warm up over too */
        /* features are recorded only where a redelivery may need them: above the ack floor */
        uint64_t ring_after = delivered > cap ? delivered - cap : 0;
        if (ack_floor > ring_after)
            ring_after = ack_floor;
        rebuild_range rr = {.from_ns = oldest_ns - history_warmup_ms(window) * 1000000LL,
                            .upto_seq = pos,
                            .ring = ring,
                            .ring_after = ring_after};
        rebuild_stats st;
        if ((rc = rebuild_velocity(en->js, &en->cfg, pl, v, &rr, &st, e)) != V_OK)
            goto fail;
        pos = st.upto_seq;
        velocity_stats_t vs;
        velocity_stats(v, &vs);
        log_info("velocity state rebuilt from the stream",
                 "\"stream\":\"%s\",\"upto_seq\":%llu,\"read\":%llu,\"counted\":%llu,\"duplicates\":%llu,"
                 "\"skipped\":%llu,\"keys\":%llu,\"seconds\":%.3f,\"per_s\":%.0f",
                 en->cfg.txn_stream, (unsigned long long)st.upto_seq, (unsigned long long)st.read,
                 (unsigned long long)st.counted, (unsigned long long)st.duplicates, (unsigned long long)st.skipped,
                 (unsigned long long)vs.keys, st.seconds, st.seconds > 0 ? (double)st.read / st.seconds : 0.0);
    } else if (!at_start) {
        /* nothing to count: the new state starts where the stream ends */
        jsStreamInfo *si = NULL;
        jsErrCode jerr = 0;
        natsStatus s = js_GetStreamInfo(&si, en->js, en->cfg.txn_stream, NULL, &jerr);
        if (s != NATS_OK) {
            rc = broker_err(e, s, jerr, "cannot read the transactions stream");
            goto fail;
        }
        pos = si->State.LastSeq;
        jsStreamInfo_Destroy(si);
    }
    *out = velref_new(v, ring, pos);
    if (!*out) {
        rc = verror_set(e, V_ENOMEM, "out of memory");
        goto fail;
    }
    return V_OK;
fail:
    velocity_free(v);
    featring_free(ring);
    return rc;
}

/* Swaps in p (taking over its reference). The running velocity state stays when it keeps exactly p's velocity
 * features (by name, whatever their ids in p's registry): the sequencing stage picks p up at its next batch.
 * Otherwise a new state is built from TXN first and p waits with it until the sequencer reaches the state's
 * position (batch_take_policy), so the two always swap together and no transaction is counted twice. */
static vstatus swap_policy(engine *en, policy *p, const char *why, verror *e)
{
    velref *nv = NULL;
    pthread_mutex_lock(&en->policy_mu);
    bool keep_running = en->vel && velocity_compatible(en->vel->v, policy_velocity_plan(p));
    bool keep_next = !keep_running && en->next_vel && velocity_compatible(en->next_vel->v, policy_velocity_plan(p));
    pthread_mutex_unlock(&en->policy_mu);
    if (!keep_running && !keep_next) {
        vstatus rc = make_velocity(en, p, false, &nv, e);
        if (rc != V_OK) {
            atomic_fetch_add(&en->stats.reload_failures, 1);
            log_error("reload refused: velocity state could not be built", "\"error\":\"%s\"", log_esc(e->msg));
            policy_release(p);
            return rc;
        }
    }
    policy *drop_p = NULL, *drop_next_p = NULL;
    velref *drop_next_v = NULL;
    char old_version[64];
    pthread_mutex_lock(&en->policy_mu);
    str_copy(old_version, sizeof old_version, policy_rules_version(en->next_policy ? en->next_policy : en->policy));
    if (keep_running) {
        drop_p = en->policy;
        en->policy = p;
        drop_next_p = en->next_policy; /* a pending state for an older reload is not wanted any more */
        drop_next_v = en->next_vel;
        en->next_policy = NULL;
        en->next_vel = NULL;
    } else {
        drop_next_p = en->next_policy;
        en->next_policy = p;
        if (nv) {
            drop_next_v = en->next_vel;
            en->next_vel = nv;
        }
    }
    policy_retain(p); /* for the log line: the sequencer may swap it in and a next reload out */
    pthread_mutex_unlock(&en->policy_mu);
    log_info("policy swapped", "\"why\":\"%s\",\"rules_version\":\"%s\",\"rules_source\":\"%s\",\"model_version\":\"%s\","
             "\"old_rules_version\":\"%s\",\"velocity\":\"%s\"",
             log_esc(why), policy_rules_version(p), log_esc(policy_rules_source(p)), policy_model_version(p),
             old_version, keep_running ? "kept" : "new");
    atomic_fetch_add(&en->stats.reloads, 1);
    policy_release(p);
    policy_release(drop_p);
    policy_release(drop_next_p);
    velref_release(drop_next_v);
    return V_OK;
}

vstatus engine_reload_now(engine *en, const char *why, verror *e)
{
    vstatus rc = en->reloader ? reloader_reload(en->reloader, why, e) : engine_reload(en, why, e);
    /* the candidate is checked against the live policy now in force; its refusal never fails the live reload */
    shadow_engine_reload(en, why);
    return rc;
}

vstatus engine_reload(engine *en, const char *why, verror *e)
{
    policy *p = NULL;
    rules_diag diag = {0};
    vstatus rc = policy_load(en->cfg.rules_file, en->cfg.model_file, &p, &diag);
    if (rc != V_OK) {
        atomic_fetch_add(&en->stats.reload_failures, 1);
        log_error("reload refused; the running rules and model stay in force",
                  "\"why\":\"%s\",\"errors\":\"%s\"", log_esc(why), log_esc(diag.text ? diag.text : ""));
        verror_set(e, rc, "%s", diag.text ? diag.text : "reload failed");
        rules_diag_free(&diag);
        return rc;
    }
    rules_diag_free(&diag);
    return swap_policy(en, p, why, e);
}

vstatus engine_reload_rules_text(engine *en, const char *src, size_t len, const char *name, verror *e)
{
    policy *p = NULL;
    rules_diag diag = {0};
    vstatus rc = policy_build(src, len, name, en->cfg.model_file, &p, &diag);
    if (rc != V_OK) {
        atomic_fetch_add(&en->stats.reload_failures, 1);
        log_error("rules refused; the running rules stay in force", "\"source\":\"%s\",\"errors\":\"%s\"",
                  log_esc(name), log_esc(diag.text ? diag.text : ""));
        verror_set(e, rc, "%s", diag.text ? diag.text : "rules refused");
        rules_diag_free(&diag);
        return rc;
    }
    rules_diag_free(&diag);
    return swap_policy(en, p, name, e);
}

void engine_current_versions(engine *en, char *rules, char *model, size_t cap)
{
    pthread_mutex_lock(&en->policy_mu);
    str_copy(rules, cap, policy_rules_version(en->policy));
    str_copy(model, cap, policy_model_version(en->policy));
    pthread_mutex_unlock(&en->policy_mu);
}

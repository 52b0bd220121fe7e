/* standby.c - owning the durable consumer through a lease (--lease-ttl): hot standby and fencing.
 *
 * With a lease TTL set, an engine builds its velocity state as any engine does, then waits for the consumer's
 * lease (lease.h) before it pulls or answers a decide request. While it stands by it keeps its state current by
 * counting what the owner's consumer has delivered (the same catch-up as the sequencing stage's, so the state is
 * the stream-order state of docs/state.md and the features it records in its ring serve the redeliveries of the
 * old owner's unacked messages). When the owner stops, its lease is released and taken at once; when it dies,
 * the lease is taken once it has gone unrenewed for the TTL. The new owner then continues from its state
 * without a rebuild. The owner renews on its own thread; the sequencing stage fetches only while the lease is
 * valid (lease_valid: the fencing rule) and naks what a fetch brought after it lapsed. If another instance takes
 * the lease, this engine stops and `verdict serve` starts it again as a standby. docs/operations.md, "High
 * availability"; the protocol's argument: docs/architecture.md, "Partitions: ownership". */
#include "engine_int.h"

#include "lease.h"

#define NS_PER_MS 1000000LL
#define STANDBY_CATCH_UP_MS 1000 /* how often a standby counts what the owner delivered since */

static int64_t renew_every_ms(const engine *en)
{
    return en->cfg.lease_ttl_ms / 3;
}

/* Counts what the consumer has delivered since the state's position, so that a takeover starts from a state
 * at most STANDBY_CATCH_UP_MS behind. */
static void standby_catch_up(engine *en)
{
    uint64_t delivered = 0, ack_floor = 0;
    verror e = {0};
    if (rebuild_consumer_seqs(en->js, &en->cfg, &delivered, &ack_floor, &e) != V_OK)
        return; /* NATS is away: the next round, or the sequencer after the takeover, catches up */
    velref *r = en->vel; /* no other thread writes it before the sequencer starts */
    if (r && delivered > r->pos)
        seq_catch_up(en, r, en->policy, delivered);
}

vstatus standby_wait(engine *en, verror *e)
{
    const config *c = &en->cfg;
    char bucket[96];
    lease_bucket(c, bucket, sizeof bucket);
    jsOptions jo;
    jsOptions_Init(&jo);
    /* a lease call waits at most a quarter of the TTL, so a renewal round never outlasts its period */
    jo.Wait = c->lease_ttl_ms / 4 < 2000 ? c->lease_ttl_ms / 4 : 2000;
    natsStatus s = natsConnection_JetStream(&en->ljs, en->nc, &jo);
    if (s != NATS_OK)
        return broker_err(e, s, 0, "cannot get a JetStream context for the lease");
    vstatus rc = lease_open(&en->leases, en->ljs, bucket, c->engine_id, c->lease_ttl_ms, c->replicas, e);
    if (rc != V_OK)
        return rc;
    if (!lease_init(&en->lease, c->consumer))
        return verror_set(e, V_EINVAL, "consumer name '%s' cannot name a lease", c->consumer);
    atomic_store(&en->phase, PHASE_STANDBY);
    int64_t t0 = mono_ns(), last_catch_up = 0;
    bool said = false;
    char last_owner[LEASE_OWNER_MAX] = "";
    while (!atomic_load(&en->stopping) && !(en->start_stop && atomic_load(en->start_stop))) {
        verror le = {0};
        if (lease_step(en->leases, &en->lease, &le) != V_OK && !said)
            log_warn("lease: cannot reach the bucket; retrying", "\"error\":\"%s\"", log_esc(le.msg));
        if (en->lease.held) {
            standby_catch_up(en); /* what the old owner delivered last, before pulling */
            atomic_store(&en->lease_valid_ns, en->lease.valid_until_ns);
            atomic_store(&en->stats.lease_epoch, (long long)en->lease.epoch);
            log_info("lease taken: this engine owns the consumer",
                     "\"consumer\":\"%s\",\"epoch\":%llu,\"instance\":\"%s\",\"previous_owner\":\"%s\","
                     "\"waited_ms\":%lld,\"state_position\":%llu",
                     log_esc(c->consumer), (unsigned long long)en->lease.epoch,
                     log_esc(lease_instance(en->leases)), log_esc(last_owner),
                     (long long)((mono_ns() - t0) / NS_PER_MS), (unsigned long long)(en->vel ? en->vel->pos : 0));
            return V_OK;
        }
        if (!said || strcmp(last_owner, en->lease.owner) != 0) {
            str_copy(last_owner, sizeof last_owner, en->lease.owner);
            log_info("standing by: another engine owns the consumer",
                     "\"consumer\":\"%s\",\"owner\":\"%s\",\"epoch\":%llu,\"lease_ttl_ms\":%lld",
                     log_esc(c->consumer), log_esc(en->lease.owner), (unsigned long long)en->lease.epoch,
                     (long long)en->lease.foreign_ttl_ms);
            said = true;
        }
        if (mono_ns() - last_catch_up >= STANDBY_CATCH_UP_MS * NS_PER_MS) {
            standby_catch_up(en);
            last_catch_up = mono_ns();
        }
        /* poll often: a takeover comes at most one poll after the TTL */
        int64_t poll = renew_every_ms(en) < 100 ? renew_every_ms(en) : 100;
        for (int64_t until = mono_ns() + poll * NS_PER_MS; mono_ns() < until && !atomic_load(&en->stopping) &&
                                                            !(en->start_stop && atomic_load(en->start_stop));)
            sleep_ms(10);
    }
    return verror_set(e, V_ESTOPPED, "stopped while standing by");
}

static void *lease_main(void *arg)
{
    engine *en = arg;
    while (!atomic_load(&en->lease_quit)) {
        int64_t next = mono_ns() + renew_every_ms(en) * NS_PER_MS;
        verror le = {0};
        vstatus rc = V_OK;
        if (strcmp(en->cfg.fault, "lease_unreachable") == 0) /* tests: renewals cannot reach the bucket */
            rc = verror_set(&le, V_ENATS, "test fault: lease bucket unreachable");
        else
            rc = lease_step(en->leases, &en->lease, &le);
        if (rc != V_OK)
            log_warn("lease renewal failed; deciding until the lease lapses", "\"error\":\"%s\",\"valid_ms\":%lld",
                     log_esc(le.msg), (long long)((en->lease.valid_until_ns - mono_ns()) / NS_PER_MS));
        if (en->lease.held) {
            atomic_store(&en->lease_valid_ns, en->lease.valid_until_ns);
        } else {
            /* someone else holds it now: fence at once, and stop so that serve stands by again */
            atomic_store(&en->lease_valid_ns, 0);
            atomic_store(&en->lease_lost, true);
            atomic_fetch_add(&en->stats.lease_losses, 1);
            log_error("lease lost: another engine owns the consumer; stopping to stand by",
                      "\"consumer\":\"%s\",\"owner\":\"%s\",\"epoch\":%llu", log_esc(en->cfg.consumer),
                      log_esc(en->lease.owner), (unsigned long long)en->lease.epoch);
            engine_request_stop(en, mono_ns() + (int64_t)ENGINE_STOP_MS * NS_PER_MS);
            return NULL;
        }
        while (!atomic_load(&en->lease_quit) && mono_ns() < next)
            sleep_ms(10);
    }
    return NULL;
}

vstatus lease_thread_start(engine *en, verror *e)
{
    if (pthread_create(&en->lease_thread, NULL, lease_main, en) != 0)
        return verror_set(e, V_ENOMEM, "cannot start the lease thread");
    en->lease_started = true;
    return V_OK;
}

void lease_thread_stop(engine *en)
{
    if (en->lease_started) {
        atomic_store(&en->lease_quit, true);
        pthread_join(en->lease_thread, NULL);
        en->lease_started = false;
    }
}

void lease_give_up(engine *en)
{
    lease_thread_stop(en);
    if (!en->leases || !en->lease.held)
        return;
    verror e = {0};
    if (lease_release(en->leases, &en->lease, &e) == V_OK)
        log_info("lease released: a standby takes over at once", "\"consumer\":\"%s\",\"epoch\":%llu",
                 log_esc(en->cfg.consumer), (unsigned long long)en->lease.epoch);
    else
        log_warn("lease not released; a standby takes over when it lapses", "\"error\":\"%s\"", log_esc(e.msg));
    atomic_store(&en->lease_valid_ns, 0);
}

bool lease_fetch_allowed(engine *en)
{
    return !en->leases || mono_ns() < atomic_load(&en->lease_valid_ns);
}

bool engine_lease_lost(const engine *en)
{
    return atomic_load(&en->lease_lost);
}

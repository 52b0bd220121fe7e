/* engine_int.h - what the engine's own files share (seqstage.c, commit.c, ingress.c, decisions.c, policyswap.c,
 * engine.c): the engine, its workers, batches and velocity state references. Not for other modules: they use
 * pipeline.h (the engine's API), and observe.c and reloader.c only the narrow interfaces in their own headers.
 *
 * Threads: nats.c's own threads deliver ingress requests and PubAcks; one sequencing thread Fetches from the
 * durable consumer (one Fetch at a time, DESIGN section 8) and computes velocity features in stream order; N
 * workers decide and commit whole batches. */
#ifndef VERDICT_ENGINE_INT_H
#define VERDICT_ENGINE_INT_H

#include "pipeline.h"

#include "broker.h"
#include "codec.h"
#include "decide.h"
#include "dlq.h"
#include "history.h"
#include "ident.h"
#include "jsoncodec.h"
#include "log.h"
#include "observe.h"
#include "rebuild.h"
#include "checkpoint.h"
#include "sequencer.h"
#include "shadow.h"
#include "reloader.h"
#include "replica.h"
#include "velocity.h"
#include "lease.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The largest decision a policy can produce: every reported match at the longest rule id and reason text the
 * compiler accepts (ident.h, rules.h), ids and versions at their limits, protobuf framing on each; so a decision
 * always fits and the most suspicious transactions (the most matches) are never the ones lost. */
#define DECISION_BUF (DECIDE_MAX_REASONS * (IDENT_NAME_MAX + RULES_REASON_MAX + 16) + 4 * NAME_MAX_LEN + 1024)
/* room for a decision's header block ahead of it (decision_msg_new): the reasons' ids, the id and versions, the
 * keys; a block that does not fit falls back to nats.c's header API */
#define DECISION_HDR_BUF (DECIDE_MAX_REASONS * (IDENT_NAME_MAX + 1) + 4 * NAME_MAX_LEN + 512)
/* how long a batch retries decisions the stream could not take (no leader), before naking them */
#define DECISION_RETRY_MS 30000

/* Velocity state, reference-counted like policies: a reload that needs new velocity features swaps in a rebuilt
 * state, and the old one is freed when its last batch is done. Only the sequencing stage writes it (and its
 * ring and position); batches hold it so that a swap never frees it under them. */
typedef struct velref {
    atomic_int refs;
    velocity *v;
    featring *ring;  /* the features of recent sequences, for redeliveries */
    uint64_t pos;    /* the state counts every transaction of TXN up to this sequence */
} velref;

/* What the sequencing stage hands a worker: a fetched batch, the policy and state it was sequenced with (held),
 * and each message's velocity features. Preallocated (workers + 1 of them) and recycled. */
enum { VS_NONE = 0, VS_EXACT, VS_INEXACT };
typedef struct batch {
    natsMsgList list;
    int64_t recv_ns; /* monotonic time the batch was taken: the budget's start */
    int64_t recv_wall_us;
    policy *policy;
    velref *vel;
    velvals *vv;       /* per message */
    unsigned char *vs; /* per message: VS_* */
    /* per message: the transaction as the sequencer decoded it (into txa, reset when the batch is sequenced), which
     * the worker decides from instead of decoding it again; NULL when the sequencer did not decode it (pass-through,
     * a redelivery's features from the ring, poison, no velocity features, or txa full): the worker decodes it */
    Transaction **txn;
    arena txa;
    struct batch *next;
} batch;

typedef struct worker {
    struct engine *en;
    int id;
    pthread_t thread;
    bool running; /* thread started and not joined */
    batch *b;     /* the batch in hand */
    jsCtx *js;           /* async decision publishes; its PubAck handler fills slots */
    struct slot *slots;  /* one per message of the batch in hand */
    int nslots;
    /* PubAcks come on nats.c's thread. pub_mu guards the pairing of an in-flight message with its slot
     * (slot.sent); in_flight counts publishes whose handler has not returned yet, so no slot is reused or freed
     * while a late PubAck may still look at it. */
    pthread_mutex_t pub_mu;
    atomic_int in_flight;
    int64_t recv_ns;     /* monotonic time the batch in hand was taken: the budget's start */
    int64_t recv_wall_us;
    arena arena;       /* decode arena, reset per message */
    arena dup_arena;   /* decoding stored decisions on the duplicate path */
    unsigned char *enc; /* the decision message's header block and encoded decision (decision_msg_new) */
    size_t enc_cap;
    fval vals[FEAT_MAX];
    policy *policy; /* held for the batch in hand */
    velref *vel;    /* held with it */
    Reason reasons[DECIDE_MAX_REASONS];
    Reason *reason_ptrs[DECIDE_MAX_REASONS];
    policy *shadow;  /* the candidate held for the batch in hand (shadow.h); NULL when none */
    shadow_eval se;  /* its scratch, preallocated when a shadow policy is configured */
    /* shadow records computed while the batch's PubAcks are awaited (shadow_precompute_one): one SHADOW_RECORD_MAX
     * slot per message of a batch, their lengths and candidate outcomes; next = where the scan goes on */
    char *shadow_pre;
    uint16_t *shadow_pre_len;
    unsigned char *shadow_pre_outcome;
    int shadow_next;
} worker;

/* A duplicate request waiting for the first copy's decision to be stored (see the resolver below). */
typedef struct late_reply {
    char txn_id[IDENT_TXN_ID_MAX + 1];
    char reply[IDENT_SUBJECT_MAX + 1];
    int64_t deadline_ns; /* monotonic */
    natsMsg *orig;       /* the retry's publish (owned): stored again if TXN does not hold the first copy */
    uint64_t seq;        /* the first copy's TXN sequence, as the Duplicate PubAck names it */
    bool verified;       /* the first copy was looked for */
} late_reply;

#define LATE_CAP 4096 /* duplicates waiting at once; beyond it a retry is told to come back (503) */
#define LATE_ROUND 64 /* looked up per round, outside the lock */

/* The sequencer works SEQ_AHEAD transactions ahead of the one it counts (seqstage.c, hand_to_workers): each is
 * decoded and its fields extracted early, so that its velocity lookups' cache misses can be started while the
 * transactions before it are counted (velocity.h, velocity_keys). */
#define SEQ_AHEAD 2
typedef struct seqprep {
    int idx; /* the batch position prepared here, -1: none */
    Transaction *t;
    int64_t event_ms;
    vkeys keys;
    fval vals[FEAT_MAX];
} seqprep;

struct engine {
    config cfg;
    natsConnection *nc;  /* workers: send-asap */
    natsConnection *inc; /* ingress: buffered, with async publish */
    _Atomic(broker_link *) nc_link, inc_link; /* their state, for health checks that never wait on nats.c */
    jsCtx *js;
    jsCtx *ijs;
    jsCtx *gjs; /* look-ups of stored decisions on the worker connection: 1 s per request */
    natsSubscription *ingress;
    arena ingress_arena; /* ingress callbacks are serialised per subscription */
    worker *workers;
    int nworkers;
    /* the sequencing stage: the only puller of the durable consumer and the only writer of the velocity state */
    natsSubscription *sub;
    pthread_t seq_thread;
    bool seq_started;
    arena seq_arena;
    fval seq_vals[FEAT_MAX];
    seqprep seq_pre[SEQ_AHEAD + 1]; /* transactions prepared ahead of the one being sequenced (seqstage.c) */
    catchup_reader *catchup; /* the catch-up's reader (rebuild.h), opened by the first catch-up; this thread's */
    batch *batches; /* nbatches, preallocated */
    int nbatches;
    pthread_mutex_t q_mu;
    pthread_cond_t q_cv;  /* a batch became ready or free */
    batch *free_b;        /* free batches */
    batch *ready_head, *ready_tail;
    /* partitioned (--partitions; partset.c): the fetchers' batches, in the order fetched, for the sequencer */
    batch *fetched_head, *fetched_tail;
    struct partset *parts; /* NULL unless partitioned */
    policy *next_policy;  /* a reload with a new state, waiting for the sequencer to reach its position (policy_mu) */
    velref *next_vel;
    int64_t ack_wait_ms;  /* the consumer's effective AckWait for a first delivery */
    int64_t heartbeat_ms; /* InProgress interval for held messages: a third of it */
    policy *policy;          /* the policy in force; swapped under policy_mu, held by workers per batch */
    pthread_mutex_t policy_mu;
    velref *vel; /* the velocity state matching policy's registry; swapped with it */
    replica *lists, *profiles; /* local replicas of verdict_lists and verdict_profiles */
    reloader *reloader;
    observe *observe;
    dlq_worker *dlq;
    /* the duplicate resolver: a ring of late_reply served by its own thread, never by a nats.c callback */
    pthread_t late_thread;
    bool late_started;
    pthread_mutex_t late_mu;
    pthread_cond_t late_cv;
    late_reply *late;
    int late_head, late_n;
    late_reply late_round[LATE_ROUND];
    struct checkpoint *ckpt; /* velocity checkpoints (checkpoint.c); NULL when off */
    natsConnection *snc;     /* its connection, closed by the closer at the stop deadline (conn_mu) */
    /* ownership of the durable consumer (--lease-ttl; standby.c): leases is NULL without a lease */
    struct lease_table *leases;
    lease lease;                 /* standby_wait's, then the lease thread's */
    jsCtx *ljs;                  /* lease calls, with a timeout of a quarter of the TTL */
    atomic_llong lease_valid_ns; /* mono_ns() until which the sequencer may fetch */
    atomic_bool lease_lost;      /* another instance took it: the engine stops, serve starts it as a standby */
    atomic_bool lease_quit;
    pthread_t lease_thread;
    bool lease_started;
    atomic_bool stopping;
    atomic_int phase; /* engine_phase */
    /* stopping within a deadline (see closer_main) */
    const atomic_bool *start_stop; /* the caller's flag: set to abandon a start (SIGTERM while starting) */
    atomic_bool started;           /* engine_start returned the engine */
    atomic_llong stop_deadline_ns; /* mono_ns() by which the stop ends; 0 until one is requested */
    atomic_llong stop_t0_ns;       /* when it was requested */
    atomic_bool closer_quit;
    bool closer_running;
    pthread_t closer;
    pthread_mutex_t conn_mu; /* nc and inc as the closer sees them */
    /* the shadow policy (shadow.h, shadow_pub.c): the candidate in force (policy_mu), its publishes on inc */
    bool shadow_on; /* configured (--shadow-rules/--shadow-model): workers look for a candidate */
    policy *shadow_policy;
    jsCtx *sjs;
    atomic_int shadow_in_flight; /* shadow publishes whose PubAck handler has not returned */
    engine_stats stats;
    pthread_mutex_t last_error_mu; /* the last request error, for $SRV.STATS (rare: not on the decide path) */
    char last_error[160];
};

/* One message of a batch between its decision and its ack. */
enum slot_state { SLOT_DONE = 0, SLOT_PENDING, SLOT_STORED, SLOT_DUPLICATE, SLOT_FAILED };
enum slot_kind { SLOT_DECISION = 0, SLOT_DEAD_LETTER };

typedef struct slot {
    natsMsg *in;      /* the TXN message (owned by the fetched list) */
    natsMsg *dm;      /* the decision or dead letter; ours until published, then handed back by the PubAck handler */
    natsMsg *to_send; /* to publish in the next round */
    natsMsg *sent;    /* in flight: identity only, never dereferenced; pairs a PubAck with this slot (pub_mu) */
    js_meta meta;
    const char *reply_to; /* validated (reply_subject_ok); points into in's headers */
    char msg_id[NAME_MAX_LEN + 40]; /* txn_id for a decision, dlq-<stream>-<seq> for a dead letter */
    char txn_id[IDENT_TXN_ID_MAX + 1];
    int kind;
    poison_reason why;
    int64_t latency_us;
    int outcome;
    bool budget_exceeded, degraded;
    _Atomic int state;
    bool retryable; /* failed because the stream had no leader for a moment (see process_batch) */
    bool finished;  /* replied/acked/naked: nothing more to do for this message */
    bool restoring; /* published again under a derived id (stored_decision found nothing) */
    bool id_in_msg;  /* dm's header block already carries Nats-Msg-Id = msg_id (decision_msg_new) */
    natsMsg *reply;  /* the requester's answer made with dm (decision_msg_new), sent once dm is stored; else NULL */
    bool skip_model; /* the live decision skipped the model (budget): the shadow decision does too */
    double score;    /* the live decision's model score (-1: none) */
    bool shadowed;   /* its shadow decision was made (or given up) */
    bool shadow_pre; /* its shadow record was computed ahead, while PubAcks were awaited (worker.shadow_pre) */
    uint64_t dup_seq;
    char err[192];
} slot;

/* Waits on cv (mu held) for at most ms milliseconds: the engine's threads wake to look at their stop flags. */
static inline void cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(cv, mu, &ts);
}

/* shared between the engine's files */
velref *velref_new(velocity *v, featring *ring, uint64_t pos);
void velref_release(velref *r);
velref *velref_current(engine *en);
size_t feature_ring_cap(const config *c);
void batch_recycle(engine *en, batch *b);
void *seq_main(void *arg);
void sleep_ms(int ms);
void fault_point(const engine *en, const char *point);
void reply_error(natsConnection *nc, const char *reply_to, int code, const char *text);
void request_failed(engine *en, natsConnection *nc, const char *reply_to, int code, const char *text);
bool reply_subject_ok(const config *c, const char *s);
/* The decision message: subject, Nats-Msg-Id = msg_id and the contract's headers, the encoded decision; buf
 * (cap bytes) is the caller's scratch. *id_in_msg says whether the id is in the message, or must be given by
 * jsPubOptions.MsgId (where libnats cannot take a header block as is: wire_messages_usable). With reply_to and
 * reply, *reply is also the requester's protobuf answer (the same headers and bytes, to reply_to) when it could
 * be made that way, else NULL (then reply_decision makes it). */
natsStatus decision_msg_new(natsMsg **out, const char *subj, const char *msg_id, const Decision *d, unsigned char *buf,
                            size_t cap, bool *id_in_msg, const char *reply_to, natsMsg **reply);
/* The same for the benchmark's pass-through: data republished under msg_id, no other header. */
natsStatus republish_msg_new(natsMsg **out, const char *subj, const char *msg_id, const void *data, size_t len,
                             unsigned char *buf, size_t cap, bool *id_in_msg);
bool wire_messages_usable(void);
void reply_decision(natsConnection *nc, const char *reply_to, natsMsg *decision, bool duplicate, natsMsg *in);
natsStatus build_dead_letter(const engine *en, natsMsg *msg, const js_meta *m, poison_reason why, const char *err,
                             natsMsg **out);
natsStatus find_decision(engine *en, jsCtx *js, const char *txn_id, natsMsg **out);
natsStatus stored_decision(engine *en, const char *txn_id, uint64_t seq, natsMsg **out);
void on_decision_puback(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure);
void *worker_main(void *arg);
void ingress_on_request(natsConnection *nc, natsSubscription *sub, natsMsg *req, void *closure);
void late_done(late_reply *r);
void *late_main(void *arg);
void ingress_on_puback(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure);
int64_t longest_window(const policy *p);
void seq_catch_up(engine *en, velref *r, const policy *p, uint64_t to);
void seq_catch_up_idle(engine *en);
/* standby.c */
vstatus standby_wait(engine *en, verror *e);
/* Appends b to the queue head/tail (q_mu) and wakes the engine's threads waiting on q_cv. */
void batch_enqueue(engine *en, batch **head, batch **tail, batch *b);

/* partset.c: the partitions this engine decides (--partitions) */
typedef struct partset partset;
vstatus partset_start(engine *en, verror *e); /* after the workers and the sequencer run */
void partset_stop_fetching(engine *en);       /* the manager and every fetcher stopped; leases kept */
void partset_give_up(engine *en);             /* at a stop: leases released, membership withdrawn */
void partset_free(engine *en);
int partset_owned(const engine *en);
vstatus lease_thread_start(engine *en, verror *e);
void lease_thread_stop(engine *en);
void lease_give_up(engine *en);
bool lease_fetch_allowed(engine *en);
/* shadow_pub.c */
vstatus shadow_engine_start(engine *en, verror *e);
void shadow_engine_reload(engine *en, const char *why);
void shadow_engine_drain(engine *en, int64_t wait_ms);
bool shadow_engine_free(engine *en);
void shadow_batch(worker *w, batch *b, int count);
bool shadow_precompute_one(worker *w);
vstatus make_velocity(engine *en, const policy *p, bool at_start, velref **out, verror *e);

#endif

/* cases.h - the review queue: one case per `review` decision in the KV bucket verdict_cases, and the labels a
 * resolution publishes to the stream LABELS (docs/desk.md).
 *
 * A case is the bucket's key <txn_id> holding a JSON object (cases_json_* below name its members). It is created
 * by kvStore_Create, which fails when the key exists: the key is the dedup, so a redelivered decision never makes
 * a second case. Every change after that (claim, release, resolve) is a compare-and-set on the entry's revision:
 * of two analysts acting on the same revision exactly one write lands, and the other re-reads and is told who
 * was first (V_ECONFLICT with a readable message). A resolution then publishes its label to
 * <prefix>label.<txn_id> with Nats-Msg-Id desk-<txn_id> (one label per case even if the publish is repeated)
 * and records the label's stream sequence in the case; cases_repair_labels publishes what a crash between the
 * two left out. Nothing here logs card data: a case holds the decision's figures only. */
#ifndef VERDICT_CASES_H
#define VERDICT_CASES_H

#include "codec.h"
#include "common.h"
#include "config.h"

#include <jansson.h>
#include <nats/nats.h>

#define CASES_ANALYST_MAX 64

typedef struct cases_names {
    char bucket[NAME_MAX_LEN];             /* verdict_cases (p_verdict_cases with --prefix p) */
    char labels_stream[NAME_MAX_LEN];      /* LABELS (P_LABELS) */
    char label_prefix[NAME_MAX_LEN];       /* label (p.label): subjects label.<txn_id> */
    char consumer[NAME_MAX_LEN];           /* verdict_desk: the desk's durable on DECISIONS */
    char review_filter[NAME_MAX_LEN + 16]; /* decision.review.> */
} cases_names;

/* The names derived from c's prefix, as config.c derives the engine's. */
void cases_names_of(const config *c, cases_names *n);

typedef struct cases cases;

/* Binds to (creating when absent) the cases bucket and the labels stream. The connection stays the caller's. */
vstatus cases_open(jsCtx *js, const config *c, cases **out, verror *e);
void cases_close(cases *cs);
const cases_names *cases_get_names(const cases *cs);
kvStore *cases_kv(cases *cs);

/* Makes the case of a stored review decision (its DECISIONS sequence). *created false: it existed already. */
vstatus cases_create(cases *cs, const Decision *d, uint64_t decision_seq, bool *created, verror *e);

/* The case as JSON with "rev" set to the entry's revision (caller decrefs); V_ENOTFOUND when there is none. */
vstatus cases_get(cases *cs, const char *txn_id, json_t **out, verror *e);

/* Analyst actions. V_OK: done (*out, if not NULL, the case after it); V_ECONFLICT: the case's state does not allow
 * it (claimed by someone else, already resolved), e->msg says by whom; V_ENOTFOUND; V_EINVAL (bad resolution or
 * analyst name); V_ENATS. Claiming a case one holds, or releasing one that is open, is a no-op success.
 * resolution: "fraud" or "legitimate"; resolve also publishes the label (fraud -> "fraud", legitimate ->
 * "legit"). */
vstatus cases_claim(cases *cs, const char *txn_id, const char *analyst, json_t **out, verror *e);
vstatus cases_release(cases *cs, const char *txn_id, const char *analyst, json_t **out, verror *e);
vstatus cases_resolve(cases *cs, const char *txn_id, const char *analyst, const char *resolution, json_t **out,
                      verror *e);

/* Publishes a label message (docs/desk.md, "Labels") for txn_id: JSON {txn_id, label, source, by, at_ms}, to
 * <label_prefix>.<txn_id>, Nats-Msg-Id <source>-<txn_id>. *seq: its stream sequence. */
vstatus cases_publish_label(cases *cs, const char *txn_id, const char *label, const char *source, const char *by,
                            uint64_t *seq, verror *e);

/* For a resolved case without a label_seq (a crash between the resolution and its label): publishes the label and
 * records it. *done true when it published. */
vstatus cases_repair_label(cases *cs, const char *txn_id, bool *done, verror *e);

/* True for an analyst name the desk accepts: 1-64 of [A-Za-z0-9_.@-]. */
bool cases_analyst_valid(const char *s);

#endif

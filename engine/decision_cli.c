/* decision_cli.c - `verdict decision TXN_ID [--txn] [--json]`: where one transaction stands, for an operator or
 * a payment service: decided (the decision stored in DECISIONS, looked up by subject decision.<outcome>.<txn_id>,
 * one direct get per outcome, printed readably or as JSON), pending (in TXN, not yet finished by the engine's
 * consumer), dead-lettered (a letter in DLQ names it) or unknown (none of these: never stored, or aged out).
 *
 * TXN is not indexed by txn id (publishers choose their subjects), so "pending" is found by reading the part of
 * TXN the consumer has not finished: everything after its ack floor. The engine acks only after a decision is
 * stored, so an undecided transaction that is still to be decided is there and nowhere else; that range is the
 * backlog, small while the engine keeps up, and bounded by --scan-max. The ack floor is read before the
 * decision is looked up, so a transaction decided meanwhile is still inside the range read (docs/operations.md,
 * "Where a transaction stands").
 *
 * With --txn, a decided transaction is also shown from TXN, card data masked (log_mask). It is found by time: the
 * decision says when it was stored (decided_at - latency - queued, all on the engine's clock, so the server's
 * clock cancels out), and a headers-only ordered read from a little before that time looks for its Nats-Msg-Id. */
#include "cli.h"
#include "broker.h"
#include "cliconn.h"
#include "codec.h"
#include "ident.h"
#include "log.h"
#include "streamread.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void decision_help(void)
{
    printf("usage: verdict decision TXN_ID [--txn] [--json] [--scan-max N]\n\n"
           "Says where the transaction TXN_ID stands. Decided: prints the decision stored in DECISIONS (outcome,\n"
           "score, the reasons with their texts, rules and model versions, latency, time queued, when and by which\n"
           "engine it was decided, budget exceeded, degraded). Pending: it is in TXN and the engine has not finished\n"
           "with it. Dead-lettered: a dead letter in DLQ names it. Unknown: none of these (never stored, or aged\n"
           "out): a payment service sends it again. --json prints one JSON object with a \"status\" field instead.\n"
           "--txn also prints a decided transaction from TXN (in --json, as \"transaction\"), with card_id, ip,\n"
           "device_id, email_hash and attribute values masked to their last four characters.\n"
           "Pending is found by reading what the engine's consumer has not finished (the backlog), at most\n"
           "--scan-max messages (default 1000000), and DLQ likewise.\n"
           "Exit status: 0 decided, 3 unknown, 4 pending, 5 dead-lettered, 1 the answer cannot be told (no server,\n"
           "a read failed, the backlog is larger than --scan-max, --txn and the transaction cannot be shown),\n"
           "2 usage errors.\n\n"
           "options (flag, then its environment variable):\n");
    config_print_help(stdout, "names");
}

static const char *const outcomes[] = {"approve", "review", "decline"};

/* Exit statuses: a payment service's script tells "send it again" from "wait" from "ask a person". */
enum { EXIT_DECIDED = 0, EXIT_CANNOT_TELL = 1, EXIT_UNKNOWN = 3, EXIT_PENDING = 4, EXIT_DEAD_LETTERED = 5 };

#define SCAN_READ_MS 5000

/* The stored decision of txn_id under any outcome: NATS_OK with *out, NATS_NOT_FOUND, or the failure. */
natsStatus decision_lookup(cliconn *c, const char *txn_id, natsMsg **out)
{
    for (size_t i = 0; i < sizeof outcomes / sizeof outcomes[0]; i++) {
        char subj[NAME_MAX_LEN + 96];
        snprintf(subj, sizeof subj, "%s.%s.%s", c->cfg.decision_prefix, outcomes[i], txn_id);
        jsDirectGetMsgOptions dgo;
        jsDirectGetMsgOptions_Init(&dgo);
        dgo.LastBySubject = subj;
        natsStatus s = js_DirectGetMsg(out, c->js, c->cfg.decisions_stream, NULL, &dgo);
        if (s != NATS_NOT_FOUND)
            return s;
    }
    return NATS_NOT_FOUND;
}

/* Reads stream from start_seq (headers only unless decode) to its end at open, at most max messages, and
 * returns in *seq the sequence of the first message naming txn_id (0: none): TXN messages by their decoded
 * txn_id, DLQ letters by Verdict-Txn-Id. False (with the reason in why) when the read failed or hit max. */
static bool scan_for(cliconn *c, const char *stream, uint64_t start_seq, bool decode, const char *txn_id, uint64_t max,
                     uint64_t *seq, char *reason, size_t reason_cap, char *why, size_t why_cap)
{
    *seq = 0;
    stream_reader *r = NULL;
    verror e = {0};
    vstatus st = decode ? stream_reader_open(c->js, stream, NULL, start_seq, 0, &r, &e)
                        : stream_reader_open_headers(c->js, stream, start_seq, 0, &r, &e);
    if (st != V_OK) {
        snprintf(why, why_cap, "cannot read %s: %s", stream, e.msg);
        return false;
    }
    arena a = {0};
    if (decode && arena_init(&a, 1 << 20) != V_OK) {
        stream_reader_close(r);
        snprintf(why, why_cap, "out of memory");
        return false;
    }
    bool ok = true;
    for (uint64_t n = 0;; n++) {
        natsMsg *m = NULL;
        uint64_t s;
        int64_t ts;
        st = stream_reader_next(r, &m, &s, &ts, SCAN_READ_MS, &e);
        if (st == V_ENOTFOUND)
            break;
        if (st != V_OK) {
            snprintf(why, why_cap, "reading %s failed: %s", stream, e.msg);
            ok = false;
            break;
        }
        if (n == max) {
            natsMsg_Destroy(m);
            snprintf(why, why_cap, "more than --scan-max %llu messages to read in %s", (unsigned long long)max, stream);
            ok = false;
            break;
        }
        bool hit;
        if (decode) {
            Transaction *t = NULL;
            poison_reason pr;
            hit =
                txn_decode(&a, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 1 << 20, &t, &pr, NULL) == V_OK &&
                strcmp(t->txn_id, txn_id) == 0;
        } else {
            hit = strcmp(cliconn_hdr(m, "Verdict-Txn-Id"), txn_id) == 0;
            if (hit && reason)
                snprintf(reason, reason_cap, "%s", cliconn_hdr(m, "Verdict-Dlq-Reason"));
        }
        natsMsg_Destroy(m);
        if (hit) {
            *seq = s;
            break;
        }
    }
    arena_free(&a);
    stream_reader_close(r);
    return ok;
}

/* Not decided: pending, dead-lettered or unknown (or cannot tell). floor is the consumer's ack floor read
 * before the decision was looked up. */
static int where_undecided(cliconn *c, const char *id, uint64_t floor, uint64_t max, bool json)
{
    char why[1200] = "", reason[64] = "";
    uint64_t seq = 0, f, l;
    if (!cliconn_stream_range(c->js, c->cfg.txn_stream, &f, &l)) {
        fprintf(stderr, "verdict decision: stream %s not found\n", c->cfg.txn_stream);
        return EXIT_CANNOT_TELL;
    }
    if (!scan_for(c, c->cfg.txn_stream, floor + 1 > f ? floor + 1 : f, true, id, max, &seq, NULL, 0, why, sizeof why)) {
        fprintf(stderr, "verdict decision: cannot tell whether %s is pending: %s\n", id, why);
        return EXIT_CANNOT_TELL;
    }
    if (seq) {
        if (json)
            printf("{\"txn_id\":\"%s\",\"status\":\"pending\",\"stream\":\"%s\",\"stream_seq\":%llu}\n", id,
                   c->cfg.txn_stream, (unsigned long long)seq);
        else
            printf("pending: %s is in %s at sequence %llu and not decided yet\n", id, c->cfg.txn_stream,
                   (unsigned long long)seq);
        return EXIT_PENDING;
    }
    if (cliconn_stream_range(c->js, c->cfg.dlq_stream, &f, &l) && l > 0 &&
        !scan_for(c, c->cfg.dlq_stream, 0, false, id, max, &seq, reason, sizeof reason, why, sizeof why)) {
        fprintf(stderr, "verdict decision: cannot tell whether %s was dead-lettered: %s\n", id, why);
        return EXIT_CANNOT_TELL;
    }
    if (seq) {
        if (json)
            printf("{\"txn_id\":\"%s\",\"status\":\"dead_lettered\",\"stream\":\"%s\",\"stream_seq\":%llu,"
                   "\"reason\":\"%s\"}\n",
                   id, c->cfg.dlq_stream, (unsigned long long)seq, log_esc(reason));
        else
            printf("dead-lettered: %s is in %s at sequence %llu (%s); see verdict dlq show %llu\n", id,
                   c->cfg.dlq_stream, (unsigned long long)seq, reason, (unsigned long long)seq);
        return EXIT_DEAD_LETTERED;
    }
    if (json)
        printf("{\"txn_id\":\"%s\",\"status\":\"unknown\"}\n", id);
    fprintf(stderr, "unknown: no decision stored for %s, and it is neither pending nor dead-lettered\n", id);
    return EXIT_UNKNOWN;
}

static void utc(int64_t ms, char *out, size_t cap)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (ms <= 0 || !gmtime_r(&t, &tm)) {
        snprintf(out, cap, "-");
        return;
    }
    char b[32];
    strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, cap, "%s.%03dZ", b, (int)(ms % 1000));
}

/* "ecom", "pos", ... as the rules write channels; "unspecified" for 0 or an unknown value */
static const char *channel_str(int v)
{
    switch (v) {
    case VERDICT__V1__CHANNEL__CHANNEL_ECOM: return "ecom";
    case VERDICT__V1__CHANNEL__CHANNEL_POS: return "pos";
    case VERDICT__V1__CHANNEL__CHANNEL_ATM: return "atm";
    case VERDICT__V1__CHANNEL__CHANNEL_MOTO: return "moto";
    default: return "unspecified";
    }
}

/* an absent field, readably */
static const char *dash(const char *s) { return s && s[0] ? s : "-"; }

/* How far around the estimated store time the transaction is looked for. */
#define TXN_SEARCH_MARGIN_NS (10LL * 1000000000LL)

/* The TXN message of txn_id near the decision's time, or NULL (with a reason on stderr). */
natsMsg *decision_find_txn(cliconn *c, const Decision *d)
{
    int64_t stored_ns = d->decided_at_ms * 1000000LL - (d->latency_us + d->queued_us) * 1000LL;
    stream_reader *r = NULL;
    verror e = {0};
    if (stream_reader_open_headers(c->js, c->cfg.txn_stream, 0, stored_ns - TXN_SEARCH_MARGIN_NS, &r, &e) != V_OK) {
        fprintf(stderr, "verdict decision: cannot read %s: %s\n", c->cfg.txn_stream, e.msg);
        return NULL;
    }
    char restored[IDENT_TXN_ID_MAX + 16];
    snprintf(restored, sizeof restored, "%s:restored", d->txn_id);
    uint64_t found = 0;
    for (;;) {
        natsMsg *m = NULL;
        uint64_t seq = 0;
        int64_t ns = 0;
        vstatus rc = stream_reader_next(r, &m, &seq, &ns, 2000, &e);
        if (rc != V_OK)
            break;
        const char *id = cliconn_hdr(m, "Nats-Msg-Id");
        bool mine = strcmp(id, d->txn_id) == 0 || strcmp(id, restored) == 0;
        natsMsg_Destroy(m);
        if (mine) {
            found = seq;
            break;
        }
        if (ns > stored_ns + TXN_SEARCH_MARGIN_NS)
            break;
    }
    stream_reader_close(r);
    natsMsg *m = NULL;
    if (!found || js_GetMsg(&m, c->js, c->cfg.txn_stream, found, NULL, NULL) != NATS_OK) {
        fprintf(stderr,
                "verdict decision: the transaction is no longer in %s (older than its max age, or removed "
                "as a dead letter's original)\n",
                c->cfg.txn_stream);
        return NULL;
    }
    return m;
}

static json_t *txn_json(const Transaction *t, uint64_t seq, const char *subject)
{
    char card[128], ip[128], dev[128], email[128];
    json_t *attrs = json_object();
    for (size_t i = 0; attrs && i < t->n_attributes; i++) {
        char v[128];
        json_object_set_new(attrs, t->attributes[i]->key, json_string(log_mask(t->attributes[i]->value, v, sizeof v)));
    }
    return json_pack("{s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:I, "
                     "s:s}",
                     "txn_id", t->txn_id, "created_at_ms", (json_int_t)t->created_at_ms, "amount_minor",
                     (json_int_t)t->amount_minor, "currency", t->currency, "card_id",
                     log_mask(t->card_id, card, sizeof card), "card_bin", t->card_bin, "account_id", t->account_id,
                     "mcc", (int)t->mcc, "merchant_id", t->merchant_id, "merchant_country", t->merchant_country,
                     "card_country", t->card_country, "ip", log_mask(t->ip, ip, sizeof ip), "ip_country", t->ip_country,
                     "device_id", log_mask(t->device_id, dev, sizeof dev), "email_hash",
                     log_mask(t->email_hash, email, sizeof email), "channel", channel_str((int)t->channel),
                     "attributes", attrs, "stream_seq", (json_int_t)seq, "subject", subject);
}

static void print_txn_text(const Transaction *t, uint64_t seq, const char *subject)
{
    char card[128], ip[128], dev[128], email[128], at[40];
    utc(t->created_at_ms, at, sizeof at);
    printf("\ntransaction      %s seq %llu (card data masked)\n"
           "amount           %lld %s (minor units)\ncreated_at       %s (client clock)\nchannel          %s\n"
           "card_id          %s\ncard_bin         %s\ncard_country     %s\naccount_id       %s\n"
           "merchant         %s (mcc %u, %s)\nip               %s (%s)\ndevice_id        %s\nemail_hash       %s\n",
           subject, (unsigned long long)seq, (long long)t->amount_minor, t->currency, at, channel_str((int)t->channel),
           dash(log_mask(t->card_id, card, sizeof card)), dash(t->card_bin), dash(t->card_country), dash(t->account_id),
           dash(t->merchant_id), t->mcc, dash(t->merchant_country), dash(log_mask(t->ip, ip, sizeof ip)),
           dash(t->ip_country), dash(log_mask(t->device_id, dev, sizeof dev)),
           dash(log_mask(t->email_hash, email, sizeof email)));
    for (size_t i = 0; i < t->n_attributes; i++) {
        char v[128];
        printf("%-16s %s = %s\n", i == 0 ? "attributes" : "", t->attributes[i]->key,
               log_mask(t->attributes[i]->value, v, sizeof v));
    }
}

static int print_json(const Decision *d, uint64_t seq, json_t *txn)
{
    json_t *reasons = json_array();
    for (size_t i = 0; i < d->n_reasons; i++)
        json_array_append_new(reasons, json_pack("{s:s, s:s}", "rule_id", d->reasons[i]->rule_id, "text",
                                                 d->reasons[i]->text));
    char at[40];
    utc(d->decided_at_ms, at, sizeof at);
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:f, s:o, s:s, s:s, s:I, s:s, s:I, s:I, s:b, s:b, s:s, s:I}", "txn_id", d->txn_id,
                  "status", "decided", "outcome", outcome_str(d->outcome), "score", d->score, "reasons", reasons,
                  "rules_version", d->rules_version, "model_version", d->model_version, "decided_at_ms",
                  (json_int_t)d->decided_at_ms, "decided_at", at, "latency_us", (json_int_t)d->latency_us, "queued_us",
                  (json_int_t)d->queued_us, "budget_exceeded", d->budget_exceeded, "degraded", d->degraded, "engine_id",
                  d->engine_id, "stream_seq", (json_int_t)seq);
    if (o && txn)
        json_object_set_new(o, "transaction", txn);
    else
        json_decref(txn);
    if (!o) {
        fprintf(stderr, "verdict decision: out of memory\n");
        return 1;
    }
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        return 1;
    puts(s);
    free(s);
    return 0;
}

static void print_text(const Decision *d, uint64_t seq)
{
    char at[40];
    utc(d->decided_at_ms, at, sizeof at);
    printf("txn_id           %s\noutcome          %s\nscore            %.4f\n", d->txn_id, outcome_upper(d->outcome),
           d->score);
    if (d->n_reasons == 0)
        printf("reasons          (none: no rule matched)\n");
    for (size_t i = 0; i < d->n_reasons; i++)
        printf("%-16s %s: %s\n", i == 0 ? "reasons" : "", d->reasons[i]->rule_id, d->reasons[i]->text);
    printf("rules_version    %s\nmodel_version    %s\nlatency          %lld us\nqueued           %lld us\n"
           "decided_at       %s (%lld ms)\nengine           %s\nbudget_exceeded  %s\ndegraded         %s\n"
           "stream_seq       %llu\n",
           d->rules_version, d->model_version[0] ? d->model_version : "none", (long long)d->latency_us,
           (long long)d->queued_us, at, (long long)d->decided_at_ms, d->engine_id[0] ? d->engine_id : "-",
           d->budget_exceeded ? "yes" : "no", d->degraded ? "yes" : "no", (unsigned long long)seq);
}

int cmd_decision(int argc, char **argv)
{
    int rest[64], nrest = 0;
    if (argc > 64) {
        fprintf(stderr, "verdict decision: too many arguments\n");
        return 2;
    }
    cliconn c = {0};
    int rc = cliconn_parse(&c, argc, argv, rest, &nrest, "decision", decision_help);
    if (rc)
        return rc < 0 ? 0 : rc;
    bool json = false, with_txn = false;
    const char *id = NULL;
    uint64_t scan_max = 1000000;
    for (int k = 0; k < nrest; k++) {
        const char *a = argv[rest[k]];
        if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "--scan-max") == 0) {
            char *end = NULL;
            const char *v = k + 1 < nrest ? argv[rest[k + 1]] : "";
            unsigned long long n = strtoull(v, &end, 10);
            if (!v[0] || *end || v[0] == '-' || n == 0) {
                fprintf(stderr, "verdict decision: --scan-max needs a count of messages (1 or more)\n");
                return 2;
            }
            scan_max = n;
            k++;
        } else if (strcmp(a, "--txn") == 0) {
            with_txn = true;
        } else if (a[0] == '-') {
            fprintf(stderr, "verdict decision: unknown option '%s' (see --help)\n", a);
            return 2;
        } else if (id) {
            fprintf(stderr, "verdict decision: one TXN_ID only ('%s' and '%s')\n", id, a);
            return 2;
        } else {
            id = a;
        }
    }
    if (!id) {
        fprintf(stderr, "verdict decision: which transaction? usage: verdict decision TXN_ID [--json]\n");
        return 2;
    }
    if (!ident_txn_id_valid(id)) {
        fprintf(stderr, "verdict decision: '%s' is not a transaction id (1-%d of A-Z a-z 0-9 _ -)\n", id,
                IDENT_TXN_ID_MAX);
        return 2;
    }
    rc = cliconn_connect(&c, "decision");
    if (rc)
        return rc;
    /* the floor first: a transaction decided after it was read is still after it */
    uint64_t floor = 0;
    consumer_positions cp; /* partitioned: the lowest ack floor of all */
    verror pe = {0};
    if (broker_consumer_positions(&c.cfg, c.js, &cp, NULL, &pe) == V_OK)
        floor = cp.ack_floor; /* no consumer yet: nothing finished, all of TXN is pending */
    natsMsg *m = NULL;
    natsStatus s = decision_lookup(&c, id, &m);
    if (s == NATS_NOT_FOUND) {
        rc = where_undecided(&c, id, floor, scan_max, json);
    } else if (s != NATS_OK) {
        /* a direct get on a stream that does not exist has no responder: say which it is */
        uint64_t f, l;
        if (!cliconn_stream_range(c.js, c.cfg.decisions_stream, &f, &l))
            fprintf(stderr, "verdict decision: stream %s not found (has the engine run with this --prefix?)\n",
                    c.cfg.decisions_stream);
        else
            fprintf(stderr, "verdict decision: cannot read %s: %s (is direct get allowed on it?)\n",
                    c.cfg.decisions_stream, natsStatus_GetText(s));
        rc = 1;
    } else {
        arena a = {0};
        Decision *d = NULL;
        if (arena_init(&a, 1 << 16) == V_OK)
            d = decision_decode(&a, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
        if (!d) {
            fprintf(stderr, "verdict decision: the message on %s does not decode as a Decision\n",
                    natsMsg_GetSubject(m));
            rc = 1;
        } else {
            natsMsg *tm = with_txn ? decision_find_txn(&c, d) : NULL;
            Transaction *t = tm ? verdict__v1__transaction__unpack(NULL, (size_t)natsMsg_GetDataLength(tm),
                                                                   (const uint8_t *)natsMsg_GetData(tm))
                                : NULL;
            if (tm && !t)
                fprintf(stderr, "verdict decision: the message in %s does not decode as a Transaction\n",
                        c.cfg.txn_stream);
            if (json) {
                rc = print_json(d, natsMsg_GetSequence(m),
                                t ? txn_json(t, natsMsg_GetSequence(tm), natsMsg_GetSubject(tm)) : NULL);
            } else {
                print_text(d, natsMsg_GetSequence(m));
                if (t)
                    print_txn_text(t, natsMsg_GetSequence(tm), natsMsg_GetSubject(tm));
            }
            if (with_txn && !t && rc == 0)
                rc = 1; /* asked for the transaction and could not show it (said why above) */
            if (t)
                verdict__v1__transaction__free_unpacked(t, NULL);
            natsMsg_Destroy(tm);
        }
        arena_free(&a);
        natsMsg_Destroy(m);
    }
    cliconn_close(&c);
    return rc;
}

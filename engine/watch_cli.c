/* watch_cli.c - `verdict watch`: decisions as they are stored, one readable line each (time, txn id, outcome,
 * score, latency, reasons), or one JSON object a line with --json. A plain core subscription on the decision
 * subjects: no consumer is created and nothing is acknowledged, so it disturbs nothing (the nats CLI's `nats
 * sub 'decision.>'`, decoded). --outcome and --txn narrow the subscription itself; --rule filters here. --card
 * needs the transactions, which decisions do not carry: a second plain subscription on the TXN subjects sees
 * each transaction as it is stored and remembers the ids of the card's; a decision always comes after its
 * transaction on this one connection, so draining that subscription before each decision is enough.
 * --count and --timeout bound it for scripts and tests. */
#include "cli.h"
#include "cliconn.h"
#include "codec.h"
#include "ident.h"
#include "log.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void watch_help(void)
{
    printf("usage: verdict watch [--outcome approve|review|decline[,...]] [--rule ID] [--txn TXN_ID]\n"
           "                     [--card CARD_ID] [--count N] [--timeout DURATION] [--json]\n\n"
           "Prints each decision as it is stored: decision time (UTC), txn id, outcome, score, latency and the\n"
           "ids of the rules that matched, with [budget_exceeded] and [degraded] when set; --json prints one JSON\n"
           "object a line (the fields of `verdict decision --json` but stream_seq, which a plain subscription\n"
           "does not see). A core subscription on the decision subjects: no consumer is created and nothing is\n"
           "acknowledged, so watching never disturbs the engines; it shows what is decided from the moment it\n"
           "starts (use `verdict decision` for the past).\n"
           "  --outcome   only these outcomes (comma-separated)\n"
           "  --rule      only decisions where this rule matched\n"
           "  --txn       only this transaction (e.g. while sending it by hand)\n"
           "  --card      only transactions of this card token (read from the TXN subjects as they are stored;\n"
           "              the token is never printed)\n"
           "  --count N   stop after N decisions printed (1-1000000)\n"
           "  --timeout   stop after this long (250ms, 30s, 10m, 24h); with --count, exit 1 if fewer came\n"
           "Ctrl-C stops it. Exit status: 0 stopped as asked, 1 --count not reached or the server lost,\n"
           "2 usage errors.\n\n"
           "options (flag, then its environment variable):\n");
    config_print_help(stdout, "names");
}

static const char *const outcomes[] = {"approve", "review", "decline"};

typedef struct watch_opts {
    bool outcome[3];
    bool any_outcome;
    const char *rule;
    const char *txn;
    const char *card;
    long count;
    int64_t timeout_ms;
    bool json;
} watch_opts;

static int parse_outcomes(watch_opts *o, const char *v)
{
    char buf[64];
    if (!str_copy(buf, sizeof buf, v))
        return -1;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        size_t i = 0;
        while (i < 3 && strcmp(t, outcomes[i]) != 0)
            i++;
        if (i == 3) {
            fprintf(stderr, "verdict watch: unknown outcome '%s': approve, review or decline\n", t);
            return -1;
        }
        o->outcome[i] = o->any_outcome = true;
    }
    return o->any_outcome ? 0 : -1;
}

static int parse_args(watch_opts *o, char **argv, const int *rest, int nrest)
{
    for (int k = 0; k < nrest; k++) {
        const char *a = argv[rest[k]];
        const char *v = k + 1 < nrest ? argv[rest[k + 1]] : NULL;
        bool takes = strcmp(a, "--outcome") == 0 || strcmp(a, "--rule") == 0 || strcmp(a, "--txn") == 0 ||
                     strcmp(a, "--card") == 0 || strcmp(a, "--count") == 0 || strcmp(a, "--timeout") == 0;
        if (strcmp(a, "--json") == 0) {
            o->json = true;
            continue;
        }
        if (!takes) {
            fprintf(stderr, "verdict watch: unknown %s '%s' (see --help)\n", a[0] == '-' ? "option" : "argument", a);
            return 2;
        }
        if (!v) {
            fprintf(stderr, "verdict watch: %s needs a value (see --help)\n", a);
            return 2;
        }
        k++;
        if (strcmp(a, "--outcome") == 0) {
            if (parse_outcomes(o, v) != 0)
                return 2;
        } else if (strcmp(a, "--rule") == 0) {
            if (!ident_rule_id_valid(v, strlen(v))) {
                fprintf(stderr, "verdict watch: '%s' is not a rule id\n", v);
                return 2;
            }
            o->rule = v;
        } else if (strcmp(a, "--txn") == 0) {
            if (!ident_txn_id_valid(v)) {
                fprintf(stderr, "verdict watch: '%s' is not a transaction id (1-%d of A-Z a-z 0-9 _ -)\n", v,
                        IDENT_TXN_ID_MAX);
                return 2;
            }
            o->txn = v;
        } else if (strcmp(a, "--card") == 0) {
            if (!v[0] || strlen(v) > 256) {
                fprintf(stderr, "verdict watch: --card takes a card token of 1-256 characters\n");
                return 2;
            }
            o->card = v;
        } else if (strcmp(a, "--count") == 0) {
            char *end = NULL;
            o->count = strtol(v, &end, 10);
            if (*end || o->count < 1 || o->count > 1000000) {
                fprintf(stderr, "verdict watch: --count takes 1-1000000, not '%s'\n", v);
                return 2;
            }
        } else {
            if (!duration_parse_ms(v, strlen(v), &o->timeout_ms) || o->timeout_ms < 1 ||
                o->timeout_ms > 7LL * 86400 * 1000) {
                fprintf(stderr,
                        "verdict watch: --timeout takes a duration from 1ms to 7d (250ms, 30s, 10m), not "
                        "'%s'\n",
                        v);
                return 2;
            }
        }
    }
    return 0;
}

static void utc_ms(int64_t ms, char *out, size_t cap) { cliconn_time_ns(ms * 1000000LL, out, cap); }

/* The ids of the card's transactions seen on the TXN subjects, most recent CARD_IDS. */
#define CARD_IDS 4096

typedef struct card_seen {
    natsSubscription *sub;
    arena a;
    char (*ids)[IDENT_TXN_ID_MAX + 1];
    size_t n, next;
} card_seen;

static bool card_has(const card_seen *cs, const char *txn_id)
{
    for (size_t i = 0; i < cs->n; i++)
        if (strcmp(cs->ids[i], txn_id) == 0)
            return true;
    return false;
}

/* Takes every transaction already delivered to the TXN subscription (never waits for more). */
static void card_drain(card_seen *cs, const char *card)
{
    int pending = 0;
    if (natsSubscription_GetPending(cs->sub, &pending, NULL) != NATS_OK)
        return;
    for (; pending > 0; pending--) {
        natsMsg *m = NULL;
        if (natsSubscription_NextMsg(&m, cs->sub, 1) != NATS_OK)
            return;
        arena_reset(&cs->a);
        Transaction *t = verdict__v1__transaction__unpack(&cs->a.pa, (size_t)natsMsg_GetDataLength(m),
                                                          (const uint8_t *)natsMsg_GetData(m));
        if (t && t->card_id && strcmp(t->card_id, card) == 0 && ident_txn_id_valid(t->txn_id) &&
            !card_has(cs, t->txn_id)) {
            str_copy(cs->ids[cs->next], sizeof cs->ids[cs->next], t->txn_id);
            cs->next = (cs->next + 1) % CARD_IDS;
            if (cs->n < CARD_IDS)
                cs->n++;
        }
        natsMsg_Destroy(m);
    }
}

static bool matches(const watch_opts *o, const Decision *d, const card_seen *cs)
{
    if (o->card && !card_has(cs, d->txn_id))
        return false;
    if (!o->rule)
        return true;
    for (size_t i = 0; i < d->n_reasons; i++)
        if (strcmp(d->reasons[i]->rule_id, o->rule) == 0)
            return true;
    return false;
}

static void print_line(const watch_opts *o, const Decision *d)
{
    char at[40];
    utc_ms(d->decided_at_ms, at, sizeof at);
    if (o->json) {
        json_t *reasons = json_array();
        for (size_t i = 0; i < d->n_reasons; i++)
            json_array_append_new(
                reasons, json_pack("{s:s, s:s}", "rule_id", d->reasons[i]->rule_id, "text", d->reasons[i]->text));
        json_t *j = json_pack("{s:s, s:I, s:s, s:s, s:f, s:o, s:I, s:I, s:b, s:b, s:s, s:s, s:s}", "decided_at", at,
                              "decided_at_ms", (json_int_t)d->decided_at_ms, "txn_id", d->txn_id, "outcome",
                              outcome_str(d->outcome), "score", d->score, "reasons", reasons, "latency_us",
                              (json_int_t)d->latency_us, "queued_us", (json_int_t)d->queued_us, "budget_exceeded",
                              d->budget_exceeded, "degraded", d->degraded, "rules_version", d->rules_version,
                              "model_version", d->model_version, "engine_id", d->engine_id);
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (s)
            puts(s);
        free(s);
        json_decref(j);
    } else {
        char score[16], reasons[1024] = "";
        if (d->score >= 0)
            snprintf(score, sizeof score, "%.4f", d->score);
        else
            snprintf(score, sizeof score, "none");
        size_t n = 0;
        for (size_t i = 0; i < d->n_reasons && n < sizeof reasons; i++)
            n += (size_t)snprintf(reasons + n, sizeof reasons - n, "%s%s", i ? "," : "", d->reasons[i]->rule_id);
        printf("%s  %-24s %-8s score %-6s %7lld us  %s%s%s\n", at, d->txn_id, outcome_upper(d->outcome), score,
               (long long)d->latency_us, d->n_reasons ? reasons : "-", d->budget_exceeded ? " [budget_exceeded]" : "",
               d->degraded ? " [degraded]" : "");
    }
    fflush(stdout); /* a line as soon as it is decided, also into a pipe */
}

int cmd_watch(int argc, char **argv)
{
    int rest[64], nrest = 0;
    if (argc > 64) {
        fprintf(stderr, "verdict watch: too many arguments\n");
        return 2;
    }
    cliconn c = {0};
    int rc = cliconn_parse(&c, argc, argv, rest, &nrest, "watch", watch_help);
    if (rc)
        return rc < 0 ? 0 : rc;
    watch_opts o = {0};
    if ((rc = parse_args(&o, argv, rest, nrest)) != 0)
        return rc;
    rc = cliconn_connect(&c, "watch");
    if (rc)
        return rc;
    /* the filters that are subjects become the subscription: the server sends only what is asked for */
    natsSubscription *subs[3] = {0};
    int nsubs = 0;
    char subj[NAME_MAX_LEN + 96], shown[3 * (NAME_MAX_LEN + 96)] = "";
    for (int i = 0; i < 3; i++) {
        if (o.any_outcome && !o.outcome[i])
            continue;
        if (!o.any_outcome && i > 0)
            break;
        snprintf(subj, sizeof subj, "%s.%s.%s", c.cfg.decision_prefix, o.any_outcome ? outcomes[i] : "*",
                 o.txn ? o.txn : ">");
        natsStatus s = natsConnection_SubscribeSync(&subs[nsubs], c.nc, subj);
        if (s != NATS_OK) {
            fprintf(stderr, "verdict watch: cannot subscribe to %s: %s\n", subj, natsStatus_GetText(s));
            rc = 1;
            break;
        }
        /* a slow terminal must not cost the server: drop beyond this (counted below) rather than back up */
        natsSubscription_SetPendingLimits(subs[nsubs], 65536, 256 << 20);
        nsubs++;
        size_t l = strlen(shown);
        snprintf(shown + l, sizeof shown - l, "%s%s", l ? ", " : "", subj);
    }
    card_seen cs = {0};
    if (rc == 0 && o.card) {
        natsStatus s = natsConnection_SubscribeSync(&cs.sub, c.nc, c.cfg.txn_subjects);
        cs.ids = calloc(CARD_IDS, sizeof *cs.ids);
        if (s != NATS_OK || !cs.ids || arena_init(&cs.a, txn_arena_size((size_t)c.cfg.max_msg_size)) != V_OK) {
            fprintf(stderr, "verdict watch: cannot subscribe to %s: %s\n", c.cfg.txn_subjects,
                    s != NATS_OK ? natsStatus_GetText(s) : "out of memory");
            rc = 1;
        } else {
            natsSubscription_SetPendingLimits(cs.sub, 65536, 256 << 20);
        }
    }
    if (rc == 0 && natsConnection_FlushTimeout(c.nc, 5000) != NATS_OK) {
        fprintf(stderr, "verdict watch: the server did not confirm the subscription\n");
        rc = 1;
    }
    if (rc == 0) {
        /* on stderr, so stdout holds decisions only; printed once the server has the subscription */
        char masked[300] = "";
        if (o.card)
            log_mask(o.card, masked, sizeof masked);
        fprintf(stderr, "watching %s%s%s%s%s (Ctrl-C to stop)\n", shown, o.rule ? " for rule " : "",
                o.rule ? o.rule : "", o.card ? " for card " : "", masked);
        arena a = {0};
        if (arena_init(&a, 1 << 16) != V_OK) {
            fprintf(stderr, "verdict watch: out of memory\n");
            rc = 1;
        }
        int64_t deadline = o.timeout_ms ? now_ms() + o.timeout_ms : 0;
        long printed = 0, undecodable = 0;
        int turn = 0;
        while (rc == 0 && (!o.count || printed < o.count)) {
            int64_t left = deadline ? deadline - now_ms() : 1000;
            if (left <= 0)
                break;
            if (natsConnection_IsClosed(c.nc)) {
                fprintf(stderr, "verdict watch: the connection to NATS is closed\n");
                rc = 1;
                break;
            }
            /* several subscriptions (one per outcome): take from each in turn, waiting briefly on each */
            natsMsg *m = NULL;
            natsStatus s = natsSubscription_NextMsg(&m, subs[turn],
                                                    nsubs > 1 ? (left < 50 ? left : 50) : (left < 1000 ? left : 1000));
            turn = (turn + 1) % nsubs;
            if (s == NATS_TIMEOUT)
                continue;
            if (s != NATS_OK) {
                if (s == NATS_SLOW_CONSUMER) {
                    fprintf(stderr, "verdict watch: too slow to keep up; some decisions were not shown\n");
                    continue;
                }
                fprintf(stderr, "verdict watch: %s\n", natsStatus_GetText(s));
                rc = 1;
                break;
            }
            if (o.card)
                card_drain(&cs, o.card);
            arena_reset(&a);
            Decision *d = decision_decode(&a, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
            if (!d) {
                if (undecodable++ == 0)
                    fprintf(stderr, "verdict watch: %s is not a Decision (a pass-through benchmark?); skipped\n",
                            natsMsg_GetSubject(m));
            } else if (matches(&o, d, &cs)) {
                print_line(&o, d);
                printed++;
            }
            natsMsg_Destroy(m);
        }
        arena_free(&a);
        if (rc == 0 && o.count && printed < o.count) {
            fprintf(stderr, "verdict watch: %ld of %ld decisions within --timeout\n", printed, o.count);
            rc = 1;
        }
    }
    for (int i = 0; i < nsubs; i++)
        natsSubscription_Destroy(subs[i]);
    natsSubscription_Destroy(cs.sub);
    arena_free(&cs.a);
    free(cs.ids);
    cliconn_close(&c);
    return rc;
}

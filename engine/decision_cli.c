/* decision_cli.c - `verdict decision TXN_ID [--json]`: the decision stored in DECISIONS for one transaction,
 * looked up by subject (decision.<outcome>.<txn_id>, one direct get per outcome) and printed readably or as
 * JSON. The operator's equivalent of `nats stream get DECISIONS --last-for 'decision.*.<id>'`. */
#include "cli.h"
#include "cliconn.h"
#include "codec.h"
#include "ident.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void decision_help(void)
{
    printf("usage: verdict decision TXN_ID [--json]\n\n"
           "Prints the decision stored in DECISIONS for the transaction TXN_ID: outcome, score, the reasons with\n"
           "their texts, rules and model versions, latency, time queued, when and by which engine it was decided,\n"
           "and whether the budget was exceeded or the engine degraded. --json prints one JSON object instead.\n"
           "Exit status: 0 found, 1 no decision stored (or the server cannot be reached), 2 usage errors.\n\n"
           "options (flag, then its environment variable):\n");
    config_print_help(stdout, "names");
}

static const char *const outcomes[] = {"approve", "review", "decline"};

/* The stored decision of txn_id under any outcome: NATS_OK with *out, NATS_NOT_FOUND, or the failure. */
static natsStatus lookup(cliconn *c, const char *txn_id, natsMsg **out)
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

static int print_json(const Decision *d, uint64_t seq)
{
    json_t *reasons = json_array();
    for (size_t i = 0; i < d->n_reasons; i++)
        json_array_append_new(reasons, json_pack("{s:s, s:s}", "rule_id", d->reasons[i]->rule_id, "text",
                                                 d->reasons[i]->text));
    char at[40];
    utc(d->decided_at_ms, at, sizeof at);
    json_t *o = json_pack("{s:s, s:s, s:f, s:o, s:s, s:s, s:I, s:s, s:I, s:I, s:b, s:b, s:s, s:I}", "txn_id",
                          d->txn_id, "outcome", outcome_str(d->outcome), "score", d->score, "reasons", reasons,
                          "rules_version", d->rules_version, "model_version", d->model_version, "decided_at_ms",
                          (json_int_t)d->decided_at_ms, "decided_at", at, "latency_us", (json_int_t)d->latency_us,
                          "queued_us", (json_int_t)d->queued_us, "budget_exceeded", d->budget_exceeded,
                          "degraded", d->degraded, "engine_id", d->engine_id, "stream_seq", (json_int_t)seq);
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
    bool json = false;
    const char *id = NULL;
    for (int k = 0; k < nrest; k++) {
        const char *a = argv[rest[k]];
        if (strcmp(a, "--json") == 0) {
            json = true;
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
    natsMsg *m = NULL;
    natsStatus s = lookup(&c, id, &m);
    if (s == NATS_NOT_FOUND) {
        fprintf(stderr, "unknown: no decision stored for %s\n", id);
        rc = 1;
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
        } else if (json) {
            rc = print_json(d, natsMsg_GetSequence(m));
        } else {
            print_text(d, natsMsg_GetSequence(m));
        }
        arena_free(&a);
        natsMsg_Destroy(m);
    }
    cliconn_close(&c);
    return rc;
}

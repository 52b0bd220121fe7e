/* dlq_cli.c - `verdict dlq ls|show|replay` and `verdict audit`: the operator's tools for dead letters and the
 * reconciliation proof that every transaction has exactly one decision or one dead letter. */
#include "broker.h"
#include "cli.h"
#include "cliconn.h"
#include "idset.h"
#include "codec.h"
#include "config.h"
#include "dlq.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void dlq_help(void)
{
    printf("usage: verdict dlq ls [--reason R]\n"
           "       verdict dlq show SEQ\n"
           "       verdict dlq replay SEQ | --reason R\n\n"
           "Lists, shows (headers and the decoded transaction) and replays dead letters. replay publishes the\n"
           "original bytes back to their TXN subject and removes the dead letter only after the republish is\n"
           "stored. Reasons: decode_error, invalid_txn_id, missing_field, oversize, max_deliveries, terminated.\n\n"
           "options (flag, then its environment variable):\n");
    config_print_help(stdout, "names");
}

/* card data masked as everywhere the tools show it (log_mask); the logs leave it out */
static void print_txn(const Transaction *t)
{
    char card[128], dev[128];
    printf("  txn_id            %s\n  amount_minor      %lld %s\n  created_at_ms     %lld\n  card_id           %s\n"
           "  account_id        %s\n  merchant_id       %s (mcc %u, %s)\n  card_country      %s\n"
           "  ip_country        %s\n  device_id         %s\n",
           t->txn_id, (long long)t->amount_minor, t->currency, (long long)t->created_at_ms,
           log_mask(t->card_id, card, sizeof card), t->account_id, t->merchant_id, t->mcc, t->merchant_country,
           t->card_country, t->ip_country, log_mask(t->device_id, dev, sizeof dev));
}

static int replay_one(cliconn *c, uint64_t seq)
{
    natsMsg *m = NULL;
    if (js_GetMsg(&m, c->js, c->cfg.dlq_stream, seq, NULL, NULL) != NATS_OK) {
        fprintf(stderr, "dlq replay: no dead letter at sequence %llu\n", (unsigned long long)seq);
        return 1;
    }
    const char *subj = cliconn_hdr(m, "Verdict-Original-Subject");
    if (!subj[0]) {
        fprintf(stderr, "dlq replay: %llu has no Verdict-Original-Subject\n", (unsigned long long)seq);
        natsMsg_Destroy(m);
        return 1;
    }
    /* A fresh Nats-Msg-Id: the original id may still be inside TXN's duplicate window. The decision is still
     * deduplicated by txn_id, so a replay can never produce a second decision. */
    char msgid[200];
    snprintf(msgid, sizeof msgid, "replay-%s-%llu", c->cfg.dlq_stream, (unsigned long long)seq);
    natsMsg *out = NULL;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msgid;
    jsPubAck *pa = NULL;
    natsStatus s = natsMsg_Create(&out, subj, NULL, natsMsg_GetData(m), natsMsg_GetDataLength(m));
    /* lineage for `verdict audit`: the original TXN sequence, and every one it replayed in turn, is accounted
     * for by this replay; the list travels on in a dead letter if the replay is dead-lettered again */
    char lineage[DLQ_LINEAGE_MAX + 1];
    dlq_lineage_push(lineage, sizeof lineage, strtoull(cliconn_hdr(m, "Verdict-Original-Seq"), NULL, 10),
                     cliconn_hdr(m, DLQ_LINEAGE_HDR));
    if (s == NATS_OK)
        s = natsMsgHeader_Set(out, DLQ_LINEAGE_HDR, lineage);
    if (s == NATS_OK)
        s = js_PublishMsg(&pa, c->js, out, &po, NULL);
    natsMsg_Destroy(out);
    if (s != NATS_OK) {
        fprintf(stderr, "dlq replay: republish of %llu failed (%s); the dead letter is kept\n",
                (unsigned long long)seq, natsStatus_GetText(s));
        natsMsg_Destroy(m);
        return 1;
    }
    printf("replayed dlq %llu -> %s seq %llu\n", (unsigned long long)seq, subj, (unsigned long long)pa->Sequence);
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(m);
    if (js_DeleteMsg(c->js, c->cfg.dlq_stream, seq, NULL, NULL) != NATS_OK)
        fprintf(stderr, "dlq replay: republished, but dead letter %llu could not be removed\n",
                (unsigned long long)seq);
    return 0;
}

int cmd_dlq(int argc, char **argv)
{
    int rest[64], nrest = 0;
    cliconn c = {0};
    if (argc > 64)
        return 2;
    int rc = cliconn_parse(&c, argc, argv, rest, &nrest, "dlq", dlq_help);
    if (rc)
        return rc < 0 ? 0 : rc;
    const char *sub = nrest ? argv[rest[0]] : "ls";
    const char *reason = NULL, *arg = NULL;
    for (int k = 1; k < nrest; k++) {
        if (strcmp(argv[rest[k]], "--reason") == 0) {
            if (k + 1 >= nrest) {
                fprintf(stderr, "verdict dlq: --reason needs a value (see --help)\n");
                return 2;
            }
            reason = argv[rest[++k]];
        } else if (argv[rest[k]][0] == '-') {
            fprintf(stderr, "verdict dlq: unknown option '%s' (see --help)\n", argv[rest[k]]);
            return 2;
        } else {
            arg = argv[rest[k]];
        }
    }
    /* usage errors are found before connecting, and a reason no writer uses would only ever list nothing */
    static const char *const reasons[] = {"decode_error", "oversize", "invalid_txn_id", "missing_field",
                                          "max_deliveries", "terminated"};
    if (reason) {
        bool known = false;
        for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
            known |= strcmp(reason, reasons[i]) == 0;
        if (!known) {
            fprintf(stderr, "verdict dlq: unknown reason '%s': one of decode_error, invalid_txn_id, missing_field, "
                    "oversize, max_deliveries, terminated\n", reason);
            return 2;
        }
    }
    uint64_t arg_seq = 0;
    if (arg) {
        char *end;
        arg_seq = strtoull(arg, &end, 10);
        if (!*arg || *end || arg[0] == '-' || arg_seq == 0) {
            fprintf(stderr, "verdict dlq %s: '%s' is not a sequence number (a positive integer, the SEQ of "
                    "`verdict dlq ls`)\n", sub, arg);
            return 2;
        }
    }
    bool sub_ok = (strcmp(sub, "ls") == 0 && !arg) || (strcmp(sub, "show") == 0 && arg && !reason) ||
                  (strcmp(sub, "replay") == 0 && (arg != NULL) != (reason != NULL));
    if (!sub_ok) {
        if (strcmp(sub, "ls") && strcmp(sub, "show") && strcmp(sub, "replay"))
            fprintf(stderr, "verdict dlq: unknown subcommand '%s': ls, show or replay (see --help)\n", sub);
        else
            fprintf(stderr, "verdict dlq %s: wrong arguments; usage: dlq ls [--reason R], dlq show SEQ, "
                    "dlq replay SEQ | --reason R\n", sub);
        return 2;
    }
    rc = cliconn_connect(&c, "dlq");
    if (rc)
        return rc;
    uint64_t first = 0, last = 0;
    if (!cliconn_stream_range(c.js, c.cfg.dlq_stream, &first, &last)) {
        fprintf(stderr, "verdict dlq: stream %s not found (has the engine run?)\n", c.cfg.dlq_stream);
        cliconn_close(&c);
        return 1;
    }
    arena a;
    arena_init(&a, 1 << 20);
    rc = 0;
    if (strcmp(sub, "ls") == 0 || (strcmp(sub, "replay") == 0 && reason && !arg)) {
        bool replay = strcmp(sub, "replay") == 0;
        if (!replay)
            printf("%-8s %-16s %-32s %-10s %s\n", "SEQ", "REASON", "TXN_ID", "AGE", "DELIVERIES");
        int n = 0;
        for (uint64_t seq = first; last && seq <= last; seq++) {
            natsMsg *m = NULL;
            if (js_GetMsg(&m, c.js, c.cfg.dlq_stream, seq, NULL, NULL) != NATS_OK)
                continue;
            const char *r = cliconn_hdr(m, "Verdict-Dlq-Reason");
            if (reason && strcmp(reason, r) != 0) {
                natsMsg_Destroy(m);
                continue;
            }
            n++;
            if (replay) {
                natsMsg_Destroy(m);
                rc |= replay_one(&c, seq);
                continue;
            }
            Transaction *t = NULL;
            poison_reason why;
            const char *id = cliconn_hdr(m, "Verdict-Txn-Id");
            if (txn_decode(&a, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 1 << 18, &t, &why, NULL) ==
                    V_OK ||
                (t == NULL && why == POISON_NONE))
                id = t ? t->txn_id : id;
            int64_t age = (now_ms() - natsMsg_GetTime(m) / 1000000) / 1000;
            char ages[32];
            snprintf(ages, sizeof ages, age >= 3600 ? "%lldh" : age >= 60 ? "%lldm" : "%llds",
                     (long long)(age >= 3600 ? age / 3600 : age >= 60 ? age / 60 : age));
            printf("%-8llu %-16s %-32s %-10s %s\n", (unsigned long long)seq, r, id[0] ? id : "-", ages,
                   cliconn_hdr(m, "Verdict-Deliveries"));
            natsMsg_Destroy(m);
        }
        if (!replay)
            printf("%d dead letter%s\n", n, n == 1 ? "" : "s");
        else
            printf("%d dead letter%s replayed\n", n, n == 1 ? "" : "s");
    } else if (strcmp(sub, "show") == 0 && arg) {
        natsMsg *m = NULL;
        uint64_t seq = arg_seq;
        if (js_GetMsg(&m, c.js, c.cfg.dlq_stream, seq, NULL, NULL) != NATS_OK) {
            fprintf(stderr, "verdict dlq show: no dead letter at sequence %llu (%s holds %llu..%llu)\n",
                    (unsigned long long)seq, c.cfg.dlq_stream, (unsigned long long)first, (unsigned long long)last);
            rc = 1;
        } else {
            printf("dead letter %llu on %s (%d bytes)\n", (unsigned long long)seq, natsMsg_GetSubject(m),
                   natsMsg_GetDataLength(m));
            const char **keys = NULL;
            int nk = 0;
            if (natsMsgHeader_Keys(m, &keys, &nk) == NATS_OK) {
                for (int i = 0; i < nk; i++)
                    printf("  %-26s %s\n", keys[i], cliconn_hdr(m, keys[i]));
                free((void *)keys);
            }
            Transaction *t = NULL;
            poison_reason why;
            verror e = {0};
            if (txn_decode(&a, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 1 << 18, &t, &why, &e) ==
                V_OK) {
                printf("decoded transaction:\n");
                print_txn(t);
            } else if (why == POISON_MISSING_FIELD || why == POISON_INVALID_TXN_ID) {
                /* the bytes are a Transaction that fails validation: show what it holds beside why */
                Transaction *raw = verdict__v1__transaction__unpack(NULL, (size_t)natsMsg_GetDataLength(m),
                                                                    (const uint8_t *)natsMsg_GetData(m));
                printf("payload decodes, but is not a valid transaction: %s\n", e.msg);
                if (raw) {
                    print_txn(raw);
                    verdict__v1__transaction__free_unpacked(raw, NULL);
                }
            } else {
                printf("payload does not decode as a valid transaction: %s\n", e.msg);
            }
            natsMsg_Destroy(m);
        }
    } else {
        rc = replay_one(&c, arg_seq);
    }
    arena_free(&a);
    cliconn_close(&c);
    return rc;
}

/* --- audit -------------------------------------------------------------------------------------------- */

static void audit_help(void)
{
    printf("usage: verdict audit [--from SEQ] [--to SEQ] [--repair [--min-age DURATION]]\n\n"
           "Reconciles TXN against DECISIONS and DLQ: every transaction stored in TXN (sequence range, default\n"
           "all) must have exactly one decision or one dead letter, never both, never neither. Exits 0 when\n"
           "the books balance, 1 when they do not (listing the offenders), 2 on usage errors.\n\n"
           "--repair acts on what the consumer has finished with (at or below its ack floor) and is older than\n"
           "--min-age (default 60s):\n"
           "  a transaction with neither a decision nor a dead letter (the consumer skipped it, or its\n"
           "  max-deliver advisory was lost) is re-driven: its bytes are published again to its subject with\n"
           "  Verdict-Replay-Of naming it, and the engine decides it (a poison message is dead-lettered instead);\n"
           "  an original whose dead letter is stored but which is still in TXN (its advisory was lost) is\n"
           "  deleted, as the DLQ worker would have done.\n"
           "Run it again after the engine has caught up: it then balances.\n\n"
           "options (flag, then its environment variable):\n");
    config_print_help(stdout, "names");
}

/* --- repair ----------------------------------------------------------------------------------------------
 * What the server should have driven and did not: a consumer that skipped messages at a leader change
 * (nats-server before 2.11), advisories that were never captured. Each repair is idempotent: a re-drive has a
 * Nats-Msg-Id derived from the original's sequence (TXN's dedup window absorbs a second run) and its decision
 * is deduplicated by txn_id; a dead letter's id is dlq-<stream>-<seq> whoever writes it. */

static bool redrive(cliconn *c, natsMsg *m, uint64_t seq)
{
    char msgid[200], lineage[DLQ_LINEAGE_MAX + 1];
    snprintf(msgid, sizeof msgid, "redrive-%s-%llu", c->cfg.txn_stream, (unsigned long long)seq);
    dlq_lineage_push(lineage, sizeof lineage, seq, cliconn_hdr(m, DLQ_LINEAGE_HDR));
    natsMsg *out = NULL;
    natsStatus s = natsMsg_Create(&out, natsMsg_GetSubject(m), NULL, natsMsg_GetData(m), natsMsg_GetDataLength(m));
    if (s == NATS_OK)
        s = natsMsgHeader_Set(out, DLQ_LINEAGE_HDR, lineage);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msgid;
    jsPubAck *pa = NULL;
    if (s == NATS_OK)
        s = js_PublishMsg(&pa, c->js, out, &po, NULL);
    natsMsg_Destroy(out);
    if (s != NATS_OK) {
        fprintf(stderr, "audit: re-drive of seq %llu failed: %s\n", (unsigned long long)seq, natsStatus_GetText(s));
        return false;
    }
    printf("REDRIVEN seq %llu -> %s seq %llu%s\n", (unsigned long long)seq, natsMsg_GetSubject(m),
           (unsigned long long)pa->Sequence, pa->Duplicate ? " (already re-driven)" : "");
    jsPubAck_Destroy(pa);
    return true;
}

static bool dead_letter_now(cliconn *c, natsMsg *m, uint64_t seq, poison_reason why, const char *err)
{
    natsMsg *dl = NULL;
    natsStatus s = dlq_letter_new(&dl, &c->cfg, why, err, m, seq, 0, NULL);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    jsPubAck *pa = NULL;
    if (s == NATS_OK)
        s = js_PublishMsg(&pa, c->js, dl, &po, NULL);
    natsMsg_Destroy(dl);
    jsPubAck_Destroy(pa);
    if (s == NATS_OK)
        s = js_DeleteMsg(c->js, c->cfg.txn_stream, seq, NULL, NULL);
    if (s != NATS_OK) {
        fprintf(stderr, "audit: dead letter of seq %llu failed: %s\n", (unsigned long long)seq, natsStatus_GetText(s));
        return false;
    }
    printf("DEADLETTERED seq %llu: %s (%s)\n", (unsigned long long)seq, poison_reason_str(why), err);
    return true;
}

int cmd_audit(int argc, char **argv)
{
    int rest[64], nrest = 0;
    cliconn c = {0};
    if (argc > 64)
        return 2;
    int rc = cliconn_parse(&c, argc, argv, rest, &nrest, "audit", audit_help);
    if (rc)
        return rc < 0 ? 0 : rc;
    uint64_t from = 0, to = UINT64_MAX;
    bool repair = false;
    int64_t min_age_ms = 60000;
    for (int k = 0; k < nrest; k++) {
        const char *a = argv[rest[k]];
        const char *v = k + 1 < nrest ? argv[rest[k + 1]] : NULL;
        if (strcmp(a, "--repair") == 0) {
            repair = true;
        } else if (strcmp(a, "--min-age") == 0 && v) {
            if (!duration_parse_ms(v, strlen(v), &min_age_ms)) {
                fprintf(stderr, "verdict audit: --min-age '%s' is not a duration (e.g. 30s, 10m)\n", v);
                cliconn_close(&c);
                return 2;
            }
            k++;
        } else if (strcmp(a, "--from") == 0 && v) {
            from = strtoull(v, NULL, 10);
            k++;
        } else if (strcmp(a, "--to") == 0 && v) {
            to = strtoull(v, NULL, 10);
            k++;
        } else {
            fprintf(stderr, "verdict audit: unknown option '%s' (see --help)\n", a);
            cliconn_close(&c);
            return 2;
        }
    }
    rc = cliconn_connect(&c, "audit");
    if (rc) {
        cliconn_close(&c);
        return rc;
    }
    uint64_t tf, tl, df, dl, lf, ll;
    if (!cliconn_stream_range(c.js, c.cfg.txn_stream, &tf, &tl) || !cliconn_stream_range(c.js, c.cfg.decisions_stream, &df, &dl) ||
        !cliconn_stream_range(c.js, c.cfg.dlq_stream, &lf, &ll)) {
        fprintf(stderr, "verdict audit: streams not found (has the engine run?)\n");
        cliconn_close(&c);
        return 1;
    }
    if (from < 1)
        from = 1;
    if (to > tl)
        to = tl;
    /* repairs touch only what the consumer has finished with: at or below its ack floor nothing is in flight */
    uint64_t ack_floor = 0;
    if (repair) {
        consumer_positions cp; /* partitioned: every partition consumer's, the lowest ack floor */
        verror pe = {0};
        if (broker_consumer_positions(&c.cfg, c.js, &cp, NULL, &pe) != V_OK) {
            fprintf(stderr, "verdict audit: --repair needs the engines' consumer(s) on %s: %s\n", c.cfg.txn_stream,
                    pe.msg);
            cliconn_close(&c);
            return 1;
        }
        ack_floor = cp.ack_floor;
    }
    int64_t now = now_ms();
    uint64_t nredriven = 0, nswept = 0, nrepair_dead = 0;
    idset decided, twice, dead, dead_decided, replayed;
    bool mem = idset_init(&decided, (size_t)(dl - df + 1)), mem2 = idset_init(&twice, 16),
         mem3 = idset_init(&dead, (size_t)(ll - lf + 1)), mem4 = idset_init(&replayed, 64),
         mem5 = idset_init(&dead_decided, 16);
    if (!mem || !mem2 || !mem3 || !mem4 || !mem5) {
        fprintf(stderr, "verdict audit: out of memory\n");
        cliconn_close(&c);
        return 1;
    }
    /* Decisions by txn_id, read from the subject (decision.<outcome>.<txn_id>), which every decision has: a
     * second decision for one transaction (another outcome's subject, or stored outside the duplicate window)
     * is found here, whatever its Nats-Msg-Id. */
    uint64_t ndec = 0, ndead = 0, nextra = 0;
    for (uint64_t s = df; dl && s <= dl; s++) {
        natsMsg *m = NULL;
        if (js_GetMsg(&m, c.js, c.cfg.decisions_stream, s, NULL, NULL) != NATS_OK)
            continue;
        const char *subj = natsMsg_GetSubject(m), *dot = strrchr(subj, '.');
        const char *id = dot ? dot + 1 : cliconn_hdr(m, "Nats-Msg-Id");
        uint64_t h = hash64_str(id);
        if (idset_has(&decided, h)) {
            nextra++;
            idset_add(&twice, h);
            printf("TWICE    txn %s: another decision at %s seq %llu (%s)\n", id, c.cfg.decisions_stream,
                   (unsigned long long)s, subj);
        }
        idset_add(&decided, h);
        ndec++;
        natsMsg_Destroy(m);
    }
    /* Dead letters by original TXN sequence; their lineage accounts for the sequences their original replayed
     * (a replay that was dead-lettered again is no longer in TXN to say so itself). A dead letter whose
     * Verdict-Txn-Id has a decision is a transaction that ended both ways, even though its original is gone. */
    for (uint64_t s = lf; ll && s <= ll; s++) {
        natsMsg *m = NULL;
        if (js_GetMsg(&m, c.js, c.cfg.dlq_stream, s, NULL, NULL) != NATS_OK)
            continue;
        uint64_t oseq = strtoull(cliconn_hdr(m, "Verdict-Original-Seq"), NULL, 10);
        idset_add(&dead, oseq);
        const char *id = cliconn_hdr(m, "Verdict-Txn-Id");
        if (id[0] && idset_has(&decided, hash64_str(id)))
            idset_add(&dead_decided, oseq);
        const char *p = cliconn_hdr(m, DLQ_LINEAGE_HDR);
        uint64_t r;
        while (dlq_lineage_next(&p, &r))
            idset_add(&replayed, r);
        ndead++;
        natsMsg_Destroy(m);
    }
    /* replays still in TXN: each accounts for the sequences in its lineage */
    for (uint64_t s = tf; tl && s <= tl; s++) {
        natsMsg *m = NULL;
        if (js_GetMsg(&m, c.js, c.cfg.txn_stream, s, NULL, NULL) != NATS_OK)
            continue;
        const char *p = cliconn_hdr(m, DLQ_LINEAGE_HDR);
        uint64_t r;
        while (dlq_lineage_next(&p, &r))
            idset_add(&replayed, r);
        natsMsg_Destroy(m);
    }
    arena a;
    arena_init(&a, 1 << 20);
    uint64_t total = 0, ok_dec = 0, ok_dead = 0, both = 0, neither = 0, nreplayed = 0, ntwice = 0;
    for (uint64_t s = from; s <= to; s++) {
        natsMsg *m = NULL;
        natsStatus st = js_GetMsg(&m, c.js, c.cfg.txn_stream, s, NULL, NULL);
        bool in_dlq = idset_has(&dead, s);
        if (st != NATS_OK) {
            /* deleted from TXN: only the DLQ worker deletes, after storing the dead letter */
            bool was_replayed = idset_has(&replayed, s);
            if (s < tf && !in_dlq && !was_replayed)
                continue; /* aged out by retention, not ours to judge */
            total++;
            if (in_dlq && idset_has(&dead_decided, s)) {
                both++;
                printf("BOTH     seq %llu: a dead letter, and a decision for its txn id\n", (unsigned long long)s);
            } else if (in_dlq)
                ok_dead++;
            else if (was_replayed)
                nreplayed++;
            else {
                neither++;
                printf("NEITHER  seq %llu: deleted from %s without a dead letter\n", (unsigned long long)s,
                       c.cfg.txn_stream);
            }
            continue;
        }
        total++;
        Transaction *t = NULL;
        poison_reason why = POISON_NONE;
        verror derr = {0};
        bool valid = txn_decode(&a, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 1 << 20, &t, &why,
                                &derr) == V_OK;
        bool has_dec = valid && idset_has(&decided, hash64_str(t->txn_id));
        bool finished = repair && s <= ack_floor && now - natsMsg_GetTime(m) / 1000000 >= min_age_ms;
        if (finished && !has_dec && in_dlq) {
            /* dead letter stored, original left behind: its advisory was lost */
            if (js_DeleteMsg(c.js, c.cfg.txn_stream, s, NULL, NULL) == NATS_OK) {
                nswept++;
                printf("SWEPT    seq %llu: dead letter stored; original deleted from %s\n", (unsigned long long)s,
                       c.cfg.txn_stream);
            }
        } else if (finished && !has_dec && !idset_has(&replayed, s)) {
            if (valid ? redrive(&c, m, s) : dead_letter_now(&c, m, s, why, derr.msg)) {
                if (valid)
                    nredriven++;
                else
                    nrepair_dead++;
                natsMsg_Destroy(m);
                continue; /* accounted for by its re-drive or its dead letter, not a mismatch */
            }
        }
        if (has_dec && in_dlq) {
            both++;
            printf("BOTH     seq %llu txn %s: a decision and a dead letter\n", (unsigned long long)s, t->txn_id);
        } else if (has_dec && idset_has(&twice, hash64_str(t->txn_id))) {
            ntwice++;
            printf("TWICE    seq %llu txn %s: more than one decision\n", (unsigned long long)s, t->txn_id);
        } else if (has_dec)
            ok_dec++;
        else if (in_dlq)
            ok_dead++;
        else {
            neither++;
            printf("NEITHER  seq %llu txn %s: no decision and no dead letter (pending?)\n", (unsigned long long)s,
                   t ? t->txn_id : "-");
        }
        natsMsg_Destroy(m);
        if ((s - from) % 5000 == 4999)
            fprintf(stderr, "audit: %llu/%llu\n", (unsigned long long)(s - from + 1),
                    (unsigned long long)(to - from + 1));
    }
    bool balanced = both == 0 && neither == 0 && ntwice == 0;
    printf("audit %s seq %llu..%llu: %llu transactions = %llu decided + %llu dead-lettered + %llu replayed; "
           "both %llu, neither %llu, decided twice %llu (%llu decisions, %llu of them extra; %llu dead letters "
           "stored)\n",
           c.cfg.txn_stream, (unsigned long long)from, (unsigned long long)to, (unsigned long long)total,
           (unsigned long long)ok_dec, (unsigned long long)ok_dead, (unsigned long long)nreplayed,
           (unsigned long long)both, (unsigned long long)neither, (unsigned long long)ntwice,
           (unsigned long long)ndec, (unsigned long long)nextra, (unsigned long long)ndead);
    if (repair)
        printf("repair: %llu re-driven, %llu dead-lettered, %llu originals swept (consumer ack floor %llu)\n",
               (unsigned long long)nredriven, (unsigned long long)nrepair_dead, (unsigned long long)nswept,
               (unsigned long long)ack_floor);
    printf("%s\n", balanced ? "OK: every transaction has exactly one decision or one dead letter" : "MISMATCH");
    arena_free(&a);
    idset_free(&decided);
    idset_free(&twice);
    idset_free(&dead);
    idset_free(&dead_decided);
    idset_free(&replayed);
    cliconn_close(&c);
    return balanced ? 0 : 1;
}

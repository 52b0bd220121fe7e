/* rules_cli.c - `verdict check FILE...`: compile rules files exactly as the engine would, print what they
 * contain or every error with file:line:col and a caret; the exit status says which (0 ok, 1 errors).
 * `verdict rules push|show|clear|history`: the verdict_rules KV bucket, checked before anything is pushed;
 * history reads the key's revisions (the bucket keeps 64) as periods: which text was pushed from when to when. */
#include "cli.h"
#include "cliconn.h"
#include "featreg.h"
#include "reloader.h"
#include "rules.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void check_help(void)
{
    printf("usage: verdict check FILE...\n\n"
           "Parses and type-checks each rules file against the feature registry, as `verdict serve` does on load\n"
           "and reload, without connecting to anything. Prints the rule count, the features the rules read and\n"
           "the version a decision would record, or every error as file:line:col with a caret.\n"
           "Exit status: 0 when every file compiles, 1 when any has errors, 2 on usage errors.\n");
}

int cmd_check(int argc, char **argv)
{
    if (argc < 2) {
        check_help();
        return 2;
    }
    int bad = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            check_help();
            return 0;
        }
    }
    /* check takes no options: a word starting with '-' is a mistyped flag, not a file (write ./-name for one) */
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-') {
            fprintf(stderr, "verdict check: unknown option '%s' (see --help; a file named so: ./%s)\n", argv[i],
                    argv[i]);
            return 2;
        }
    }
    for (int i = 1; i < argc; i++) {
        static featreg reg;
        featreg_init(&reg);
        ruleset *rs = NULL;
        rules_diag d = {0};
        vstatus s = rules_compile_file(argv[i], &reg, &rs, &d);
        if (s != V_OK) {
            fputs(d.text ? d.text : "", stderr);
            fprintf(stderr, "%s: %d error%s; not loadable\n", argv[i], d.errors, d.errors == 1 ? "" : "s");
            bad++;
        } else {
            int n[4] = {0};
            for (int r = 0; r < rules_count(rs); r++)
                n[rules_outcome(rs, r)]++;
            printf("%s: ok: %d rules (%d decline, %d review, %d approve, %d allow), %d instructions, "
                   "%d features beyond the transaction's, version %s\n",
                   argv[i], rules_count(rs), n[RO_DECLINE], n[RO_REVIEW], n[RO_APPROVE], n[RO_ALLOW],
                   rules_code_size(rs), reg.n - FEAT_BUILTIN_COUNT, rules_version(rs));
            for (int f = FEAT_BUILTIN_COUNT; f < reg.n; f++)
                printf("  uses %s\n", reg.defs[f].name);
        }
        rules_free(rs);
        rules_diag_free(&d);
    }
    return bad ? 1 : 0;
}

/* ------------------------------------------------------------------------------------------------------ */

/* The rules version each running engine reports through $SRV (nats micro PING, metadata.rules_version), after
 * `rules show`: the bucket holds what was pushed, and an engine that refused it (a feature it cannot serve, a
 * rebuild that failed) runs the previous version. Engines answer within PING_WAIT_MS or are not listed. */
#define PING_WAIT_MS 500

static void print_engines(cliconn *c, const char *bucket_version)
{
    json_t *replies = cliconn_collect_json(c, "$SRV.PING.verdict", PING_WAIT_MS);
    int n = 0, differ = 0;
    size_t i;
    json_t *j;
    json_array_foreach(replies, i, j)
    {
        const char *id = json_string_value(json_object_get(j, "id"));
        const char *rv = json_string_value(json_object_get(json_object_get(j, "metadata"), "rules_version"));
        if (!id || !rv)
            continue;
        bool same = bucket_version && strcmp(rv, bucket_version) == 0;
        differ += !same;
        printf("# engine %s runs rules version %s%s\n", id, rv,
               !bucket_version ? "" : same ? " (this one)"
                                           : " (NOT this one: it refused it or is still loading; see its log)");
        n++;
    }
    json_decref(replies);
    if (n == 0)
        printf("# no engine answered $SRV.PING.verdict within %d ms\n", PING_WAIT_MS);
    else if (differ && bucket_version)
        fprintf(stderr, "verdict rules: %d of %d engines do not run the version in the bucket\n", differ, n);
}

/* One revision of the rules key as a period: from its own time to the next revision's (or "now"). A text that
 * does not compile was refused by every engine, which kept the version before it: said as much. */
static json_t *history_entry(kvEntry *e, kvEntry *next)
{
    char from[40], to[40], v[17] = "";
    cliconn_time_ns(kvEntry_Created(e), from, sizeof from);
    if (next)
        cliconn_time_ns(kvEntry_Created(next), to, sizeof to);
    kvOperation op = kvEntry_Operation(e);
    const char *ops = op == kvOp_Put ? "put" : op == kvOp_Delete ? "delete" : "purge";
    json_t *o = json_pack("{s:I, s:s, s:s, s:s?}", "revision", (json_int_t)kvEntry_Revision(e), "operation", ops,
                          "from", from, "to", next ? to : NULL);
    if (!o || op != kvOp_Put)
        return o;
    const char *text = kvEntry_Value(e);
    size_t len = (size_t)kvEntry_ValueLen(e);
    hash64_hex(hash64(text, len), v);
    featreg reg;
    featreg_init(&reg);
    ruleset *rs = NULL;
    rules_diag d = {0};
    bool ok = rules_compile(text, len, "kv", &reg, &rs, &d) == V_OK;
    json_object_set_new(o, "version", json_string(v));
    json_object_set_new(o, "compiles", json_boolean(ok));
    json_object_set_new(o, "rules", json_integer(ok ? rules_count(rs) : 0));
    json_object_set_new(o, "text", json_stringn(text, len));
    rules_free(rs);
    rules_diag_free(&d);
    return o;
}

static int rules_history(cliconn *c, kvStore *kv, bool json, bool text)
{
    kvEntryList l = {0};
    kvWatchOptions wo;
    kvWatchOptions_Init(&wo);
    natsStatus s = kvStore_History(&l, kv, RULES_KV_KEY, &wo);
    if (s == NATS_NOT_FOUND) {
        printf("no rules were ever pushed to %s: engines run their --rules file\n", c->cfg.rules_bucket);
        return 0;
    }
    if (s != NATS_OK) {
        fprintf(stderr, "verdict rules history: %s\n", natsStatus_GetText(s));
        return 1;
    }
    if (!json)
        printf("%-9s %-24s %-24s %-16s %s\n", "REVISION", "FROM", "TO", "VERSION", "RULES");
    for (int i = 0; i < l.Count; i++) {
        json_t *o = history_entry(l.Entries[i], i + 1 < l.Count ? l.Entries[i + 1] : NULL);
        if (!o)
            continue;
        if (json) {
            if (!text)
                json_object_del(o, "text");
            char *js = json_dumps(o, JSON_COMPACT);
            if (js)
                puts(js);
            free(js);
        } else {
            const char *to = json_string_value(json_object_get(o, "to"));
            const char *op = json_string_value(json_object_get(o, "operation"));
            printf("%-9lld %-24s %-24s ", (long long)json_integer_value(json_object_get(o, "revision")),
                   json_string_value(json_object_get(o, "from")), to ? to : "now");
            if (strcmp(op, "put") != 0)
                printf("%-16s engines run their --rules file\n", op);
            else if (!json_is_true(json_object_get(o, "compiles")))
                printf("%-16s does not compile: refused, the version before stayed in force\n",
                       json_string_value(json_object_get(o, "version")));
            else
                printf("%-16s %lld\n", json_string_value(json_object_get(o, "version")),
                       (long long)json_integer_value(json_object_get(o, "rules")));
            const char *t = json_string_value(json_object_get(o, "text"));
            if (text && t) {
                size_t n = strlen(t);
                printf("%s%s", t, n && t[n - 1] != '\n' ? "\n" : "");
            }
        }
        json_decref(o);
    }
    if (!json)
        printf("# times are when each revision was stored; an engine switches within a second of it, unless it\n"
               "# refused the text (see `verdict rules show` for what each engine runs now)\n");
    kvEntryList_Destroy(&l);
    return 0;
}

static void rules_help(void)
{
    printf("usage: verdict rules push FILE   check FILE, then put it into the rules KV bucket (key 'rules'):\n"
           "                                 every engine switches to it; a file with errors is not pushed\n"
           "       verdict rules show        print the rules in the bucket, with revision and version\n"
           "       verdict rules clear       delete the key: engines fall back to their --rules file\n"
           "       verdict rules history [--text] [--json]\n"
           "                                 which rules text the bucket held from when to when (oldest first;\n"
           "                                 the bucket keeps 64 revisions): revision, version, rule count, and\n"
           "                                 the deletes (engines ran their --rules file then); --text prints each\n"
           "                                 text, --json one JSON object a line\n\n"
           "options (flag, then its environment variable):\n");
    config_print_help(stdout, "names");
}

int cmd_rules(int argc, char **argv)
{
    int rest[64], nrest = 0;
    if (argc > 60) {
        fprintf(stderr, "verdict rules: too many arguments\n");
        return 2;
    }
    cliconn c = {0};
    int rc = cliconn_parse(&c, argc, argv, rest, &nrest, "rules", rules_help);
    if (rc)
        return rc < 0 ? 0 : rc;
    /* the subcommand and its arguments are checked before connecting: a usage error needs no server */
    const char *sub = nrest > 0 ? argv[rest[0]] : "";
    bool hjson = false, htext = false;
    if (strcmp(sub, "history") == 0) {
        int k = 1;
        for (int i = 1; i < nrest; i++) {
            if (strcmp(argv[rest[i]], "--json") == 0)
                hjson = true;
            else if (strcmp(argv[rest[i]], "--text") == 0)
                htext = true;
            else
                rest[k++] = rest[i];
        }
        nrest = k;
    }
    int want = 0; /* the words the subcommand takes, itself included */
    if (strcmp(sub, "push") == 0)
        want = 2;
    else if (strcmp(sub, "show") == 0 || strcmp(sub, "clear") == 0 || strcmp(sub, "history") == 0)
        want = 1;
    if (!sub[0]) {
        fprintf(stderr, "verdict rules: which subcommand? push FILE, show, clear or history (see --help)\n");
        return 2;
    }
    if (!want) {
        fprintf(stderr, "verdict rules: unknown subcommand '%s': push FILE, show, clear or history (see --help)\n",
                sub);
        return 2;
    }
    if (nrest != want) {
        fprintf(stderr, "verdict rules %s: %s (see --help)\n", sub,
                want == 2 ? (nrest < 2 ? "needs a FILE" : "takes one FILE") : "takes no arguments");
        return 2;
    }
    rc = cliconn_connect(&c, "rules");
    if (rc)
        return rc;
    kvStore *kv = NULL;
    verror e = {0};
    if (want == 2) {
        /* only push creates the bucket; show and clear read what exists and leave the server as it is */
        if (reloader_bucket(&c.cfg, c.js, &kv, &e) != V_OK) {
            fprintf(stderr, "verdict rules: %s\n", e.msg);
            cliconn_close(&c);
            return 1;
        }
    } else {
        natsStatus s = js_KeyValue(&kv, c.js, c.cfg.rules_bucket);
        if (s == NATS_NOT_FOUND) {
            if (strcmp(sub, "show") == 0 || strcmp(sub, "history") == 0)
                printf("no rules bucket %s: engines run their --rules file\n", c.cfg.rules_bucket);
            else
                printf("no rules bucket %s: nothing to clear\n", c.cfg.rules_bucket);
            cliconn_close(&c);
            return 0;
        }
        if (s != NATS_OK) {
            fprintf(stderr, "verdict rules: cannot open the bucket %s: %s\n", c.cfg.rules_bucket,
                    natsStatus_GetText(s));
            cliconn_close(&c);
            return 1;
        }
    }
    rc = 0;
    if (strcmp(sub, "push") == 0 && nrest == 2) {
        const char *path = argv[rest[1]];
        size_t len = 0;
        char *text = NULL;
        verror re = {0};
        file_read(path, (size_t)4 << 20, &text, &len, &re);
        featreg reg;
        featreg_init(&reg);
        ruleset *rs = NULL;
        rules_diag d = {0};
        if (!text) {
            fprintf(stderr, "verdict rules: %s: %s\n", path, re.msg);
            rc = 1;
        } else if (rules_compile(text, len, path, &reg, &rs, &d) != V_OK) {
            fputs(d.text ? d.text : "", stderr);
            fprintf(stderr, "verdict rules: %s has errors; not pushed\n", path);
            rc = 1;
        } else {
            uint64_t rev = 0;
            natsStatus s = kvStore_Put(&rev, kv, RULES_KV_KEY, text, (int)len);
            if (s != NATS_OK) {
                fprintf(stderr, "verdict rules: put failed: %s\n", natsStatus_GetText(s));
                rc = 1;
            } else {
                printf("pushed %s: %d rules, version %s, %s/%s revision %llu\n", path, rules_count(rs),
                       rules_version(rs), c.cfg.rules_bucket, RULES_KV_KEY, (unsigned long long)rev);
                /* every engine creates its TXN stream on start: without it no engine has ever run under this
                 * --prefix and the push reached nobody yet (a mistyped prefix, or rules staged before the first
                 * deployment, which is legitimate: hence a warning, not a failure) */
                uint64_t f, l;
                if (!cliconn_stream_range(c.js, c.cfg.txn_stream, &f, &l))
                    fprintf(stderr, "verdict rules: warning: no stream %s: no engine has run with --prefix '%s' on "
                            "this server; engines started with it will load these rules (a mistyped --prefix?)\n",
                            c.cfg.txn_stream, c.cfg.prefix);
            }
        }
        rules_free(rs);
        rules_diag_free(&d);
        free(text);
    } else if (strcmp(sub, "history") == 0) {
        rc = rules_history(&c, kv, hjson, htext);
    } else if (strcmp(sub, "show") == 0) {
        kvEntry *ent = NULL;
        natsStatus s = kvStore_Get(&ent, kv, RULES_KV_KEY);
        if (s == NATS_NOT_FOUND) {
            printf("no rules in %s: engines run their --rules file\n", c.cfg.rules_bucket);
            print_engines(&c, NULL);
        } else if (s != NATS_OK) {
            fprintf(stderr, "verdict rules: get failed: %s\n", natsStatus_GetText(s));
            rc = 1;
        } else {
            char v[17];
            hash64_hex(hash64(kvEntry_Value(ent), (size_t)kvEntry_ValueLen(ent)), v);
            printf("# %s/%s revision %llu, version %s (what was pushed; what engines run is below)\n%.*s",
                   c.cfg.rules_bucket, RULES_KV_KEY, (unsigned long long)kvEntry_Revision(ent), v,
                   kvEntry_ValueLen(ent), (const char *)kvEntry_Value(ent));
            int len = kvEntry_ValueLen(ent);
            if (len > 0 && ((const char *)kvEntry_Value(ent))[len - 1] != '\n')
                putchar('\n');
            kvEntry_Destroy(ent);
            print_engines(&c, v);
        }
    } else {
        natsStatus s = kvStore_Delete(kv, RULES_KV_KEY);
        if (s != NATS_OK) {
            fprintf(stderr, "verdict rules: delete failed: %s\n", natsStatus_GetText(s));
            rc = 1;
        } else {
            printf("cleared %s/%s: engines fall back to their --rules file\n", c.cfg.rules_bucket, RULES_KV_KEY);
        }
    }
    kvStore_Destroy(kv);
    cliconn_close(&c);
    return rc;
}

/* lists_cli.c - `verdict lists add|rm|ls` and `verdict profiles put|get`: operator tools for the
 * verdict_lists and verdict_profiles KV buckets. They write the key layout of replica.h, so what they write
 * is exactly what `nats kv put` would, and what the engine's replicas read (docs/lists.md). */
#include "broker.h"
#include "cli.h"
#include "cliconn.h"
#include "config.h"
#include "featreg.h"
#include "log.h"
#include "ident.h"
#include "replica.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct conn {
    cliconn cc; /* cfg, nc, js */
    kvStore *kv;
} conn;

static void close_conn(conn *c)
{
    kvStore_Destroy(c->kv);
    cliconn_close(&c->cc);
}

/* Parses options, connects and opens (creating if absent) the lists or profiles bucket. Returns 0, -1 after
 * --help, or the exit status of a failure. */
static int open_bucket(conn *c, int argc, char **argv, int *rest, int *nrest, const char *cmd, void (*help)(void),
                       bool profiles)
{
    int rc = cliconn_parse(&c->cc, argc, argv, rest, nrest, cmd, help);
    if (rc)
        return rc;
    if (*nrest == 0) {
        fprintf(stderr, "verdict %s: missing subcommand (see `verdict %s --help`)\n", cmd, cmd);
        return 2;
    }
    /* the subcommand and its argument count are checked before connecting: a usage error needs no server */
    const char *word = argv[rest[0]];
    bool known, arity;
    if (profiles) {
        known = strcmp(word, "put") == 0 || strcmp(word, "get") == 0;
        arity = *nrest == (strcmp(word, "put") == 0 ? 3 : 2);
    } else {
        known = strcmp(word, "add") == 0 || strcmp(word, "rm") == 0 || strcmp(word, "ls") == 0;
        arity = strcmp(word, "ls") == 0 ? *nrest <= 2 : *nrest >= 3;
    }
    if (!known || !arity) {
        if (!known)
            fprintf(stderr, "verdict %s: unknown subcommand '%s': ", cmd, word);
        else
            fprintf(stderr, "verdict %s %s: wrong number of arguments: ", cmd, word);
        fprintf(stderr, "%s (see --help)\n",
                profiles ? "put ACCOUNT JSON or get ACCOUNT" : "add LIST VALUE..., rm LIST VALUE... or ls [LIST]");
        return 2;
    }
    if ((rc = cliconn_connect(&c->cc, cmd)) != 0) {
        close_conn(c);
        return rc;
    }
    verror e = {0};
    const char *bucket = profiles ? c->cc.cfg.profiles_bucket : c->cc.cfg.lists_bucket;
    const char *sub = argv[rest[0]];
    if (!profiles && strcmp(sub, "ls") == 0) {
        /* reading creates nothing: an absent bucket simply holds no values */
        natsStatus s = js_KeyValue(&c->kv, c->cc.js, bucket);
        if (s == NATS_NOT_FOUND) {
            printf("no bucket %s yet: no list holds a value (the first `verdict lists add` creates it)\n", bucket);
            close_conn(c);
            return -1;
        }
        if (s != NATS_OK) {
            fprintf(stderr, "verdict %s: bucket %s: %s\n", cmd, bucket, natsStatus_GetText(s));
            close_conn(c);
            return 1;
        }
        return 0;
    }
    if (replica_bucket_open(c->cc.js, bucket, c->cc.cfg.replicas, &c->kv, &e) != V_OK) {
        fprintf(stderr, "verdict %s: bucket %s: %s\n", cmd, bucket, e.msg);
        close_conn(c);
        return 1;
    }
    return 0;
}

/* --- lists ----------------------------------------------------------------------------------------------- */

static void lists_help(void)
{
    printf("usage: verdict lists add LIST VALUE...\n"
           "       verdict lists rm LIST VALUE...\n"
           "       verdict lists ls [LIST]\n\n"
           "Maintains the named lists that rules test for membership (e.g. card_id in list(\"LIST\")), kept in\n"
           "the KV bucket verdict_lists (with --prefix P: p_verdict_lists; created if absent). Every running\n"
           "engine sees a change within moments through its replica. LIST is 1-63 of [A-Za-z0-9_-]. Each\n"
           "VALUE becomes the key LIST.VALUE when VALUE is 1-128 of [A-Za-z0-9_=/.-] (no empty dot-separated\n"
           "token, not starting with h_ or _kv), else LIST.h_<16 hex digits of its hash>; the original value\n"
           "is stored as the key's value, so ls shows it either way. For plain values,\n"
           "`nats kv put verdict_lists LIST.VALUE 1` does the same as add. rm of a value not in the list is\n"
           "reported and exits 1. See docs/lists.md.\n\n"
           "options (flag, then its environment variable):\n");
    config_print_help(stdout, "names");
}

typedef struct entry_list {
    char **items;
    size_t n, cap;
} entry_list;

static bool entries_add(entry_list *l, const char *list, size_t list_len, const char *value, size_t vlen)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        char **ni = realloc(l->items, nc * sizeof *ni);
        if (!ni)
            return false;
        l->items = ni;
        l->cap = nc;
    }
    char *s = malloc(list_len + 1 + vlen + 1);
    if (!s)
        return false;
    memcpy(s, list, list_len);
    s[list_len] = ' ';
    memcpy(s + list_len + 1, value, vlen);
    s[list_len + 1 + vlen] = 0;
    l->items[l->n++] = s;
    return true;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int lists_ls(conn *c, const char *list)
{
    char filter[REPLICA_KEY_MAX + 4];
    if (list) {
        char probe[REPLICA_KEY_MAX + 1];
        if (!replica_list_key(probe, sizeof probe, list, strlen(list), "x", 1)) {
            fprintf(stderr, "verdict lists ls: invalid list name '%s' (1-%d of [A-Za-z0-9_-])\n", list, IDENT_NAME_MAX);
            return 2;
        }
        snprintf(filter, sizeof filter, "%s.>", list);
    }
    kvWatcher *w = NULL;
    natsStatus s = kvStore_Watch(&w, c->kv, list ? filter : ">", NULL);
    if (s != NATS_OK) {
        fprintf(stderr, "verdict lists ls: cannot read %s: %s\n", c->cc.cfg.lists_bucket, natsStatus_GetText(s));
        return 1;
    }
    entry_list l = {0};
    int rc = 0;
    for (;;) {
        kvEntry *e = NULL;
        s = kvWatcher_Next(&e, w, 5000);
        if (s != NATS_OK) {
            fprintf(stderr, "verdict lists ls: reading %s: %s\n", c->cc.cfg.lists_bucket, natsStatus_GetText(s));
            rc = 1;
            break;
        }
        if (!e)
            break; /* all current values seen */
        kvOperation op = kvEntry_Operation(e);
        const char *key = kvEntry_Key(e);
        const char *dot = strchr(key, '.');
        if (op == kvOp_Put && dot && dot[1]) {
            /* a hashed token cannot be read back: show the value `lists add` stored with it */
            const char *tok = dot + 1;
            bool hashed = strncmp(tok, "h_", 2) == 0 && kvEntry_ValueLen(e) > 0;
            const char *v = hashed ? (const char *)kvEntry_Value(e) : tok;
            size_t vlen = hashed ? (size_t)kvEntry_ValueLen(e) : strlen(tok);
            if (!entries_add(&l, key, (size_t)(dot - key), v, vlen)) {
                fprintf(stderr, "verdict lists ls: out of memory\n");
                rc = 1;
                kvEntry_Destroy(e);
                break;
            }
        }
        kvEntry_Destroy(e);
    }
    kvWatcher_Destroy(w);
    if (rc == 0) {
        qsort(l.items, l.n, sizeof *l.items, cmp_str);
        for (size_t i = 0; i < l.n; i++)
            printf("%s\n", l.items[i]);
        printf("%zu entr%s\n", l.n, l.n == 1 ? "y" : "ies");
    }
    for (size_t i = 0; i < l.n; i++)
        free(l.items[i]);
    free(l.items);
    return rc;
}

int cmd_lists(int argc, char **argv)
{
    int rest[64], nrest = 0;
    conn c = {0};
    if (argc > 64) {
        fprintf(stderr, "verdict lists: too many arguments (at most 60 values per call)\n");
        return 2;
    }
    int rc = open_bucket(&c, argc, argv, rest, &nrest, "lists", lists_help, false);
    if (rc)
        return rc < 0 ? 0 : rc;
    const char *sub = argv[rest[0]];
    bool add = strcmp(sub, "add") == 0, rm = strcmp(sub, "rm") == 0;
    if (strcmp(sub, "ls") == 0 && nrest <= 2) {
        rc = lists_ls(&c, nrest == 2 ? argv[rest[1]] : NULL);
    } else if ((add || rm) && nrest >= 3) {
        const char *list = argv[rest[1]];
        int done = 0;
        for (int k = 2; k < nrest; k++) {
            const char *v = argv[rest[k]];
            char key[REPLICA_KEY_MAX + 1];
            if (!replica_list_key(key, sizeof key, list, strlen(list), v, strlen(v))) {
                fprintf(stderr, "verdict lists %s: invalid list name '%s' (1-%d of [A-Za-z0-9_-]) or empty value\n",
                        sub, list, IDENT_NAME_MAX);
                rc = 2;
                break;
            }
            natsStatus s;
            if (add) {
                s = kvStore_PutString(NULL, c.kv, key, v);
            } else {
                kvEntry *e = NULL;
                s = kvStore_Get(&e, c.kv, key);
                kvEntry_Destroy(e);
                if (s == NATS_NOT_FOUND) {
                    fprintf(stderr, "verdict lists rm: '%s' is not in %s\n", v, list);
                    rc = 1;
                    continue;
                }
                if (s == NATS_OK)
                    s = kvStore_Delete(c.kv, key);
            }
            if (s != NATS_OK) {
                fprintf(stderr, "verdict lists %s: %s in %s: %s\n", sub, key, c.cc.cfg.lists_bucket,
                        natsStatus_GetText(s));
                rc = 1;
                break;
            }
            done++;
        }
        if (done || rc == 0)
            printf("%s %d value%s %s %s\n", add ? "added" : "removed", done, done == 1 ? "" : "s",
                   add ? "to" : "from", list);
    } else {
        fprintf(stderr, "verdict lists: expected add LIST VALUE..., rm LIST VALUE... or ls [LIST]\n");
        rc = 2;
    }
    close_conn(&c);
    return rc;
}

/* --- profiles -------------------------------------------------------------------------------------------- */

static void profiles_help(void)
{
    printf("usage: verdict profiles put ACCOUNT JSON\n"
           "       verdict profiles get ACCOUNT\n\n"
           "Writes or shows the profile of an account in the KV bucket verdict_profiles (with --prefix P:\n"
           "p_verdict_profiles; created if absent), read by rules as profile.<field>. JSON is an object;\n"
           "known fields and types: account_age_days, avg_amount_minor, kyc_level, chargebacks_90d (numbers),\n"
           "home_country, risk_tier (strings of <= 64 bytes); null means missing, other fields are ignored by the\n"
           "engine. put checks the JSON first, so the engine never has to refuse it. The key is ACCOUNT, or\n"
           "h_<16 hex digits of its hash> when ACCOUNT is not a plain key token (see docs/lists.md).\n\n"
           "options (flag, then its environment variable):\n");
    config_print_help(stdout, "names");
}

/* The same checks the replica applies; msg gets the reason. */
static bool profile_json_ok(const char *json, char *msg, size_t cap)
{
    json_error_t jerr;
    json_t *root = json_loads(json, 0, &jerr);
    if (!root || !json_is_object(root)) {
        if (root)
            snprintf(msg, cap, "not a JSON object");
        else
            snprintf(msg, cap, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
        json_decref(root);
        return false;
    }
    const char *k;
    json_t *v;
    bool ok = true;
    json_object_foreach(root, k, v) {
        bool known;
        feat_type t = featreg_profile_type(k, strlen(k), &known);
        if (!known) {
            fprintf(stderr, "verdict profiles put: note: field '%s' is not in the profile schema (ignored)\n", k);
            continue;
        }
        if (json_is_null(v) || (t == FT_NUM && json_is_number(v)) || (t == FT_BOOL && json_is_boolean(v)) ||
            (t == FT_STR && json_is_string(v) && json_string_length(v) <= 64))
            continue;
        snprintf(msg, cap, "field '%s' must be %s", k,
                 t == FT_NUM ? "a number" : t == FT_BOOL ? "true or false" : "a string of <= 64 bytes");
        ok = false;
        break;
    }
    json_decref(root);
    return ok;
}

int cmd_profiles(int argc, char **argv)
{
    int rest[64], nrest = 0;
    conn c = {0};
    if (argc > 64)
        return 2;
    int rc = open_bucket(&c, argc, argv, rest, &nrest, "profiles", profiles_help, true);
    if (rc)
        return rc < 0 ? 0 : rc;
    const char *sub = argv[rest[0]];
    char key[REPLICA_VALUE_MAX + 1];
    const char *acct = nrest >= 2 ? argv[rest[1]] : "";
    size_t klen = replica_key_token(key, sizeof key, acct, strlen(acct));
    if (strcmp(sub, "put") == 0 && nrest == 3 && klen) {
        char msg[512];
        if (!profile_json_ok(argv[rest[2]], msg, sizeof msg)) {
            fprintf(stderr, "verdict profiles put: %s; nothing written\n", msg);
            rc = 1;
        } else {
            uint64_t rev = 0;
            natsStatus s = kvStore_PutString(&rev, c.kv, key, argv[rest[2]]);
            if (s != NATS_OK) {
                fprintf(stderr, "verdict profiles put: %s: %s\n", c.cc.cfg.profiles_bucket, natsStatus_GetText(s));
                rc = 1;
            } else {
                printf("stored profile %s (revision %llu)\n", key, (unsigned long long)rev);
            }
        }
    } else if (strcmp(sub, "get") == 0 && nrest == 2 && klen) {
        kvEntry *e = NULL;
        natsStatus s = kvStore_Get(&e, c.kv, key);
        if (s == NATS_OK) {
            printf("%.*s\n", kvEntry_ValueLen(e), (const char *)kvEntry_Value(e));
        } else if (s == NATS_NOT_FOUND) {
            fprintf(stderr, "verdict profiles get: no profile for that account\n");
            rc = 1;
        } else {
            fprintf(stderr, "verdict profiles get: %s: %s\n", c.cc.cfg.profiles_bucket, natsStatus_GetText(s));
            rc = 1;
        }
        kvEntry_Destroy(e);
    } else {
        fprintf(stderr, "verdict profiles: expected put ACCOUNT JSON or get ACCOUNT\n");
        rc = 2;
    }
    close_conn(&c);
    return rc;
}

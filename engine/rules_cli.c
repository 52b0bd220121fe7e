/* rules_cli.c - `verdict check FILE...`: compile rules files exactly as the engine would, print what they
 * contain or every error with file:line:col and a caret; the exit status says which (0 ok, 1 errors). */
#include "cli.h"
#include "featreg.h"
#include "rules.h"

#include <stdio.h>
#include <string.h>

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

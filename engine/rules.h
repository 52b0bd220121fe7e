/* rules.h - the rule language: parse, type-check and compile a rules file; evaluate it without allocation.
 *
 * A rules file is a list of declarations and rules (docs/rules.md is the reference):
 *
 *     list blocked_cards                        # a list name rules may use with `in list("...")`
 *
 *     rule card_testing_burst
 *       review "Many small online payments on this card within 10 minutes"
 *       when channel == "ecom" and amount < 5 and count(card_id, 10m) >= 5
 *
 * The compiler is one pass: a recursive-descent parser (nesting depth capped, so hostile input cannot exhaust
 * the C stack) that type-checks every sub-expression against the feature registry as it goes and emits flat
 * stack-machine code. Names bind to registry ids at compile time, interning velocity, list and profile features
 * so the engine computes exactly what the rules use. Evaluation is a loop over that code with a fixed-size
 * value stack: no allocation, no recursion, cost bounded by the code length. Logic is three-valued (Kleene):
 * a comparison with a missing value is unknown, `not unknown` is unknown, and a rule matches only when its
 * condition is definitely true, so a missing field never makes a rule fire by accident.
 *
 * Precedence of outcomes: a matching `allow` rule forces approve; otherwise the most severe match wins
 * (decline > review > approve); no match approves with no reason. Every matching rule is reported, in file
 * order. The module knows nothing of NATS or threads: a compiled ruleset is immutable and may be shared. */
#ifndef VERDICT_RULES_H
#define VERDICT_RULES_H

#include "common.h"
#include "featreg.h"

#include <stddef.h>

typedef struct ruleset ruleset;

typedef enum rule_outcome { RO_APPROVE = 0, RO_REVIEW = 1, RO_DECLINE = 2, RO_ALLOW = 3 } rule_outcome;

#define RULES_MAX_MATCHES 32
#define RULES_REASON_MAX 200 /* bytes of a rule's reason text */

/* The compiler's diagnostics: every error as `name:line:col: error: message`, the source line and a caret,
 * newline-separated, in text (owned by the caller: free with rules_diag_free). */
typedef struct rules_diag {
    int errors;
    char *text;
    size_t len, cap;
    int first_line, first_col; /* of the first error, for tests */
} rules_diag;

void rules_diag_free(rules_diag *d);
/* Appends a formatted message (used by callers that load rules together with other parts). */
void rules_diag_add(rules_diag *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Compiles src (len bytes; name labels messages, e.g. the path). Features are interned into reg, which must
 * outlive the ruleset. On failure returns V_EPARSE with every error in diag (parsing resumes at the next rule,
 * at most 20 errors) and *out stays NULL; reg may then hold features interned before the error, so compile
 * into a scratch registry when the old one must stay untouched. */
vstatus rules_compile(const char *src, size_t len, const char *name, featreg *reg, ruleset **out, rules_diag *diag);

/* Reads path and compiles it. V_EIO (with the OS error in diag) when the file cannot be read. */
vstatus rules_compile_file(const char *path, featreg *reg, ruleset **out, rules_diag *diag);

void rules_free(ruleset *rs);

/* 16 hex digits: hash64 of the source bytes, so a file and a KV value with the same content agree. */
const char *rules_version(const ruleset *rs);
int rules_count(const ruleset *rs);
/* Bytecode instructions in all rules (for `verdict check` and the docs' cost model). */
int rules_code_size(const ruleset *rs);
const char *rules_id(const ruleset *rs, int i);
const char *rules_reason(const ruleset *rs, int i);
rule_outcome rules_outcome(const ruleset *rs, int i);

typedef struct rules_result {
    rule_outcome outcome;   /* RO_APPROVE, RO_REVIEW or RO_DECLINE (an allow match yields RO_APPROVE) */
    bool allowed;           /* an allow rule matched and decided the outcome */
    int n_matches;          /* matching rules reported in match[] (at most RULES_MAX_MATCHES) */
    int n_matched_total;    /* all matching rules */
    int match[RULES_MAX_MATCHES];
} rules_result;

/* Evaluates every rule over vals (indexed by registry id). Allocates nothing; reads only vals and rs. */
void rules_eval(const ruleset *rs, const fval *vals, rules_result *out);

/* Evaluates rule i alone: 1 true, 0 false, -1 unknown (a missing value decided it). For tests and tools. */
int rules_eval_one(const ruleset *rs, int i, const fval *vals);

#endif

/* rules.c - lexer, one-pass parser/type-checker/code generator, and the evaluator (see rules.h).
 *
 * Compile errors unwind with longjmp to the rule loop, which records the message and resumes at the next
 * `rule` or `list` keyword: every buffer the compiler grows is owned by the compiler state, so nothing leaks
 * on that path. The generated code is a flat array per rule; jumps only go forward (short-circuit and/or), so
 * a rule's cost is at most its code length. */
#include "rules.h"

#include "ident.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ERRORS 20
#define MAX_DEPTH 64     /* parser nesting (parentheses, not, unary minus) */
#define STACK_MAX 32     /* evaluator value stack */
#define MAX_RULES 4096
#define MAX_SET 4096
#define MAX_LISTS 256
#define MAX_STRING 1024

/* ===================================================================================== code and ruleset */

typedef enum op {
    OP_FEAT,  /* push vals[a] */
    OP_CONST, /* push consts[a] */
    OP_NEG,
    OP_ADD,
    OP_SUB,
    OP_MUL,
    OP_DIV,
    OP_MOD,
    OP_EQ,
    OP_NE,
    OP_LT,
    OP_LE,
    OP_GT,
    OP_GE,
    OP_NOT,
    OP_AND,
    OP_OR,
    OP_JF,      /* top is definitely false: jump to a, keeping it */
    OP_JT,      /* top is definitely true: jump to a, keeping it */
    OP_IN,      /* top in set a */
    OP_PREFIX,  /* top starts with one of the strings of set a */
    OP_PRESENT, /* top is present (a definite boolean) */
} op;

typedef struct ins {
    uint8_t op;
    int32_t a;
} ins;

typedef struct cset {
    int start, n; /* items in consts */
} cset;

typedef struct rule {
    char id[64];
    rule_outcome outcome;
    uint32_t reason_off; /* into pool while compiling */
    const char *reason;
    int code_start, code_len;
} rule;

struct ruleset {
    rule *rules;
    int nrules;
    ins *code;
    int ncode;
    fval *consts; /* constants and set items; strings point into pool */
    int nconsts;
    cset *sets;
    int nsets;
    char *pool;
    char version[17];
};

/* ============================================================================================ lexer */

typedef enum tok_kind {
    T_EOF,
    T_IDENT,
    T_NUM,
    T_DUR,
    T_STR,
    T_LP,
    T_RP,
    T_LB,
    T_RB,
    T_COMMA,
    T_DOT,
    T_PLUS,
    T_MINUS,
    T_STAR,
    T_SLASH,
    T_PCT,
    T_EQ,
    T_NE,
    T_LT,
    T_LE,
    T_GT,
    T_GE,
} tok_kind;

typedef struct tok {
    tok_kind k;
    const char *p; /* source text of the token */
    size_t len;
    int line, col;
    double num;
    int64_t dur_ms;
} tok;

typedef struct cc { /* compiler state */
    const char *src, *name;
    size_t len, pos;
    int line;
    size_t line_start;
    tok t, prev;
    featreg *reg;
    rules_diag *diag;
    jmp_buf fail;
    int depth, sp, maxsp;
    int err_line; /* line of the last error: recovery resumes on the line after it */
    /* output, grown with realloc; moved into the ruleset at the end */
    ins *code;
    int ncode, capcode;
    fval *consts;
    uint32_t *const_off; /* pool offset of string constants (pointers are fixed up at the end) */
    int nconsts, capconsts;
    cset *sets;
    int nsets, capsets;
    char *pool;
    size_t npool, cappool;
    rule *rules;
    int nrules, caprules;
    char lists[MAX_LISTS][64];
    int nlists;
    bool oom;
} cc;

static void diag_append(rules_diag *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void diag_append(rules_diag *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (d->len + (size_t)n + 1 > d->cap) {
        size_t cap = (d->cap ? d->cap * 2 : 512) + (size_t)n;
        char *t = realloc(d->text, cap);
        if (!t)
            return;
        d->text = t;
        d->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(d->text + d->len, d->cap - d->len, fmt, ap);
    va_end(ap);
    d->len += (size_t)n;
}

void rules_diag_add(rules_diag *d, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    d->errors++;
    diag_append(d, "%s", buf);
}

void rules_diag_free(rules_diag *d)
{
    free(d->text);
    memset(d, 0, sizeof *d);
}

/* Records an error at line:col with the source line and a caret, then unwinds to the rule loop. */
static void fail_at(cc *c, int line, int col, const char *fmt, ...) __attribute__((format(printf, 4, 5), noreturn));

static void fail_at(cc *c, int line, int col, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    rules_diag *d = c->diag;
    c->err_line = line;
    if (d->errors == 0) {
        d->first_line = line;
        d->first_col = col;
    }
    d->errors++;
    /* find the line's text */
    const char *s = c->src, *end = c->src + c->len;
    for (int l = 1; l < line && s < end; s++)
        if (*s == '\n')
            l++;
    const char *e = s;
    while (e < end && *e != '\n')
        e++;
    diag_append(d, "%s:%d:%d: error: %s\n  %.*s\n  ", c->name, line, col, msg, (int)(e - s), s);
    for (int i = 1; i < col && s + i - 1 < e; i++)
        diag_append(d, "%c", s[i - 1] == '\t' ? '\t' : ' ');
    diag_append(d, "^\n");
    longjmp(c->fail, 1);
}

#define FAIL_TOK(c, tk, ...) fail_at((c), (tk).line, (tk).col, __VA_ARGS__)

static bool is_ident_start(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_'; }
static bool is_ident_char(char ch) { return is_ident_start(ch) || (ch >= '0' && ch <= '9'); }
static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }

static void lex(cc *c)
{
    c->prev = c->t;
    const char *s = c->src;
    for (;;) { /* skip blanks and comments */
        if (c->pos >= c->len)
            break;
        char ch = s[c->pos];
        if (ch == '\n') {
            c->pos++;
            c->line++;
            c->line_start = c->pos;
        } else if (ch == ' ' || ch == '\t' || ch == '\r') {
            c->pos++;
        } else if (ch == '#' || (ch == '/' && c->pos + 1 < c->len && s[c->pos + 1] == '/')) {
            while (c->pos < c->len && s[c->pos] != '\n')
                c->pos++;
        } else {
            break;
        }
    }
    tok t = {.p = s + c->pos, .line = c->line, .col = (int)(c->pos - c->line_start) + 1};
    if (c->pos >= c->len) {
        t.k = T_EOF;
        c->t = t;
        return;
    }
    size_t start = c->pos;
    char ch = s[c->pos];
    if (is_ident_start(ch)) {
        while (c->pos < c->len && is_ident_char(s[c->pos]))
            c->pos++;
        t.k = T_IDENT;
    } else if (is_digit(ch)) {
        /* digits with optional '_' separators and one fraction; a unit suffix makes it a duration */
        char buf[64];
        size_t n = 0;
        bool frac = false;
        while (c->pos < c->len && (is_digit(s[c->pos]) || s[c->pos] == '_' ||
                                   (s[c->pos] == '.' && !frac && c->pos + 1 < c->len && is_digit(s[c->pos + 1])))) {
            if (s[c->pos] == '.')
                frac = true;
            if (s[c->pos] != '_' && n < sizeof buf - 1)
                buf[n++] = s[c->pos];
            c->pos++;
        }
        buf[n] = 0;
        if (n >= sizeof buf - 1)
            fail_at(c, t.line, t.col, "number too long");
        t.k = T_NUM;
        t.num = strtod(buf, NULL);
        if (c->pos < c->len && is_ident_start(s[c->pos])) {
            size_t us = c->pos;
            while (c->pos < c->len && is_ident_char(s[c->pos]))
                c->pos++;
            size_t ulen = c->pos - us;
            char dbuf[96];
            snprintf(dbuf, sizeof dbuf, "%s%.*s", buf, (int)ulen, s + us);
            if (frac || !duration_parse_ms(dbuf, strlen(dbuf), &t.dur_ms))
                fail_at(c, t.line, t.col, "'%.*s' is neither a number nor a duration (durations: 30s, 10m, 24h, 7d)",
                        (int)(c->pos - start), s + start);
            t.k = T_DUR;
        }
    } else if (ch == '"') {
        c->pos++;
        while (c->pos < c->len && s[c->pos] != '"' && s[c->pos] != '\n') {
            if (s[c->pos] == '\\' && c->pos + 1 < c->len && s[c->pos + 1] != '\n')
                c->pos++;
            c->pos++;
        }
        if (c->pos >= c->len || s[c->pos] != '"')
            fail_at(c, t.line, t.col, "unterminated string (a string ends with \" on the same line)");
        c->pos++;
        t.k = T_STR;
    } else {
        c->pos++;
        char nx = c->pos < c->len ? s[c->pos] : 0;
        switch (ch) {
        case '(': t.k = T_LP; break;
        case ')': t.k = T_RP; break;
        case '[': t.k = T_LB; break;
        case ']': t.k = T_RB; break;
        case ',': t.k = T_COMMA; break;
        case '.': t.k = T_DOT; break;
        case '+': t.k = T_PLUS; break;
        case '-': t.k = T_MINUS; break;
        case '*': t.k = T_STAR; break;
        case '/': t.k = T_SLASH; break;
        case '%': t.k = T_PCT; break;
        case '=':
            if (nx != '=')
                fail_at(c, t.line, t.col, "use == to compare ('=' alone is not an operator)");
            c->pos++;
            t.k = T_EQ;
            break;
        case '!':
            if (nx != '=')
                fail_at(c, t.line, t.col, "unexpected '!': write `not` for negation, != for inequality");
            c->pos++;
            t.k = T_NE;
            break;
        case '<':
            t.k = nx == '=' ? T_LE : T_LT;
            c->pos += nx == '=';
            break;
        case '>':
            t.k = nx == '=' ? T_GE : T_GT;
            c->pos += nx == '=';
            break;
        default:
            if ((unsigned char)ch < 32 || (unsigned char)ch >= 127)
                fail_at(c, t.line, t.col, "unexpected byte 0x%02x", (unsigned char)ch);
            fail_at(c, t.line, t.col, "unexpected character '%c'", ch);
        }
    }
    t.len = c->pos - start;
    c->t = t;
}

static bool is_kw(const tok *t, const char *kw)
{
    return t->k == T_IDENT && t->len == strlen(kw) && memcmp(t->p, kw, t->len) == 0;
}

static const char *keywords[] = {"rule", "list",  "when",  "and",     "or",     "not",    "in",   "true",
                                 "false", "approve", "review", "decline", "allow", "starts_with", "is",
                                 "missing", "present"};

static bool is_keyword(const tok *t)
{
    for (size_t i = 0; i < ARRAY_LEN(keywords); i++)
        if (is_kw(t, keywords[i]))
            return true;
    return false;
}

static const char *tok_desc(const tok *t, char *buf, size_t cap)
{
    if (t->k == T_EOF)
        return "the end of the file";
    snprintf(buf, cap, "'%.*s'", (int)(t->len > 40 ? 40 : t->len), t->p);
    return buf;
}

static void expect(cc *c, tok_kind k, const char *what)
{
    if (c->t.k != k) {
        char b[64];
        FAIL_TOK(c, c->t, "expected %s, found %s", what, tok_desc(&c->t, b, sizeof b));
    }
    lex(c);
}

/* ====================================================================================== code output */

static void *grow(cc *c, void *p, int *cap, int need, size_t elem)
{
    if (need <= *cap)
        return p;
    int ncap = *cap ? *cap * 2 : 64;
    while (ncap < need)
        ncap *= 2;
    void *q = realloc(p, (size_t)ncap * elem);
    if (!q) {
        c->oom = true;
        fail_at(c, c->t.line, c->t.col, "out of memory");
    }
    *cap = ncap;
    return q;
}

static int emit(cc *c, op o, int32_t a, int stack_delta)
{
    c->code = grow(c, c->code, &c->capcode, c->ncode + 1, sizeof *c->code);
    c->code[c->ncode] = (ins){.op = (uint8_t)o, .a = a};
    c->sp += stack_delta;
    if (c->sp > c->maxsp)
        c->maxsp = c->sp;
    if (c->sp > STACK_MAX)
        fail_at(c, c->t.line, c->t.col, "condition too complex (more than %d values pending at once)", STACK_MAX);
    return c->ncode++;
}

static uint32_t pool_add(cc *c, const char *s, size_t n)
{
    if (c->npool + n + 1 > c->cappool) {
        size_t cap = c->cappool ? c->cappool * 2 : 1024;
        while (cap < c->npool + n + 1)
            cap *= 2;
        char *p = realloc(c->pool, cap);
        if (!p) {
            c->oom = true;
            fail_at(c, c->t.line, c->t.col, "out of memory");
        }
        c->pool = p;
        c->cappool = cap;
    }
    uint32_t off = (uint32_t)c->npool;
    memcpy(c->pool + off, s, n);
    c->pool[off + n] = 0;
    c->npool += n + 1;
    return off;
}

/* The unescaped contents of the current string token, into the pool. Returns the offset; *n is its length. */
static uint32_t string_value(cc *c, const tok *t, uint32_t *n)
{
    char buf[MAX_STRING];
    size_t k = 0;
    for (size_t i = 1; i + 1 < t->len; i++) {
        char ch = t->p[i];
        if (ch == '\\') {
            ch = t->p[++i];
            if (ch == 'n')
                ch = '\n';
            else if (ch == 't')
                ch = '\t';
            else if (ch != '"' && ch != '\\')
                fail_at(c, t->line, t->col + (int)i - 1, "unknown escape '\\%c' (use \\\" \\\\ \\n or \\t)", ch);
        }
        if (k >= sizeof buf - 1)
            fail_at(c, t->line, t->col, "string longer than %d bytes", MAX_STRING - 1);
        buf[k++] = ch;
    }
    *n = (uint32_t)k;
    return pool_add(c, buf, k);
}

static int add_const(cc *c, fval v, uint32_t str_off)
{
    int cap = c->capconsts;
    c->consts = grow(c, c->consts, &cap, c->nconsts + 1, sizeof *c->consts);
    c->const_off = grow(c, c->const_off, &c->capconsts, c->nconsts + 1, sizeof *c->const_off);
    c->consts[c->nconsts] = v;
    c->const_off[c->nconsts] = str_off;
    return c->nconsts++;
}

/* ========================================================================================= parser */

typedef enum ty { TY_NUM = FT_NUM, TY_STR = FT_STR, TY_BOOL = FT_BOOL } ty;

typedef struct ex {
    ty type;
    int start;  /* first instruction */
    int feat;   /* >= 0 when the expression is exactly one field read */
    tok at;     /* where it starts, for messages */
} ex;

static const char *ty_name(ty t)
{
    switch (t) {
    case TY_NUM: return "number";
    case TY_STR: return "string";
    case TY_BOOL: return "boolean";
    }
    return "?";
}

static ex parse_or(cc *c);

/* Nesting guard for every recursive construct (parentheses, not, unary minus): hostile input cannot exhaust
 * the C stack. */
static void enter(cc *c, const tok *t)
{
    if (++c->depth > MAX_DEPTH)
        FAIL_TOK(c, *t, "expression nested more than %d deep", MAX_DEPTH);
}

static void need(cc *c, const ex *e, ty want, const tok *op, const char *what)
{
    if (e->type != want) {
        char b[64];
        FAIL_TOK(c, *op, "%s needs a %s, but %s is a %s", what, ty_name(want), tok_desc(&e->at, b, sizeof b),
                 ty_name(e->type));
    }
}

static size_t edit_distance(const char *a, size_t la, const char *b, size_t lb)
{
    if (la > 40 || lb > 40)
        return 99;
    size_t row[41];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static const char *suggest(const cc *c, const char *s, size_t n)
{
    static const char *extra[] = {"count", "sum", "distinct", "profile", "attributes"};
    const char *best = NULL;
    size_t bd = 3;
    for (int i = 0; i < FEAT_BUILTIN_COUNT; i++) {
        size_t d = edit_distance(s, n, c->reg->defs[i].name, strlen(c->reg->defs[i].name));
        if (d < bd) {
            bd = d;
            best = c->reg->defs[i].name;
        }
    }
    for (size_t i = 0; i < ARRAY_LEN(extra); i++) {
        size_t d = edit_distance(s, n, extra[i], strlen(extra[i]));
        if (d < bd) {
            bd = d;
            best = extra[i];
        }
    }
    return best;
}

/* A field name inside a velocity call: must name a built-in field of the given type. */
static int field_arg(cc *c, ty want, const char *role)
{
    tok t = c->t;
    if (t.k != T_IDENT || is_keyword(&t)) {
        char b[64];
        FAIL_TOK(c, t, "expected %s (a field name such as %s), found %s", role,
                 want == TY_NUM ? "amount_minor" : "card_id", tok_desc(&t, b, sizeof b));
    }
    int id = featreg_find(c->reg, t.p, t.len);
    if (id < 0 || c->reg->defs[id].kind != FK_TXN) {
        /* Only a transaction field of the wanted type is a useful suggestion: the general one could name the
         * very word typed (`amount` is a derived feature, not a field) or one of another type. */
        const char *s = NULL;
        size_t bd = 3;
        char fields[512] = "";
        size_t fl = 0;
        for (int i = 0; i < FEAT_BUILTIN_COUNT; i++) {
            const feat_def *d = &c->reg->defs[i];
            if (d->kind != FK_TXN || (ty)d->type != want)
                continue;
            size_t dist = edit_distance(t.p, t.len, d->name, strlen(d->name));
            if (dist < bd) {
                bd = dist;
                s = d->name;
            }
            int w = snprintf(fields + fl, sizeof fields - fl, "%s%s", fl ? ", " : "", d->name);
            if (w > 0 && (size_t)w < sizeof fields - fl)
                fl += (size_t)w;
        }
        if (s)
            FAIL_TOK(c, t, "unknown transaction field '%.*s' for %s (did you mean '%s'?)", (int)t.len, t.p, role, s);
        FAIL_TOK(c, t, "%s must be a %s field of the transaction, and '%.*s' is %s; one of: %s", role,
                 ty_name(want), (int)t.len, t.p, id < 0 ? "not one" : "computed by the engine, not one", fields);
    }
    if ((ty)c->reg->defs[id].type != want)
        FAIL_TOK(c, t, "%s must be a %s field, but '%.*s' is a %s", role, ty_name(want), (int)t.len, t.p,
                 ty_name((ty)c->reg->defs[id].type));
    lex(c);
    return id;
}

static int64_t window_arg(cc *c)
{
    tok t = c->t;
    if (t.k != T_DUR) {
        char b[64];
        FAIL_TOK(c, t, "the window must be a duration such as 10m, 1h or 24h, found %s", tok_desc(&t, b, sizeof b));
    }
    lex(c);
    return t.dur_ms;
}

static ex velocity_call(cc *c, const tok *fn)
{
    ex e = {.type = TY_NUM, .start = c->ncode, .at = *fn};
    vel_agg agg;
    int value = -1, key;
    int64_t w;
    tok wtok;
    expect(c, T_LP, "'('");
    if (is_kw(fn, "count")) {
        agg = VEL_COUNT;
        key = field_arg(c, TY_STR, "the key of count()");
        expect(c, T_COMMA, "',' then a window: count(card_id, 10m)");
    } else if (is_kw(fn, "sum")) {
        agg = VEL_SUM;
        value = field_arg(c, TY_NUM, "the summed value of sum()");
        expect(c, T_COMMA, "',' then a key: sum(amount_minor, card_id, 24h)");
        key = field_arg(c, TY_STR, "the key of sum()");
        expect(c, T_COMMA, "',' then a window: sum(amount_minor, card_id, 24h)");
    } else {
        agg = VEL_DISTINCT;
        key = field_arg(c, TY_STR, "the key of distinct()");
        expect(c, T_COMMA, "',' then a field: distinct(card_id, device_id, 24h)");
        value = field_arg(c, TY_STR, "the counted field of distinct()");
        expect(c, T_COMMA, "',' then a window: distinct(card_id, device_id, 24h)");
    }
    wtok = c->t;
    w = window_arg(c);
    expect(c, T_RP, "')'");
    verror err = {0};
    int id = featreg_velocity(c->reg, agg, value, key, w, &err);
    if (id < 0)
        FAIL_TOK(c, wtok, "%s", err.msg);
    e.feat = id;
    emit(c, OP_FEAT, id, +1);
    return e;
}

static ex parse_primary(cc *c)
{
    tok t = c->t;
    ex e = {.start = c->ncode, .feat = -1, .at = t};
    char b[64];
    switch (t.k) {
    case T_NUM:
        lex(c);
        e.type = TY_NUM;
        emit(c, OP_CONST, add_const(c, (fval){.type = FT_NUM, .present = true, .num = t.num}, 0), +1);
        return e;
    case T_STR: {
        uint32_t n, off = string_value(c, &t, &n);
        lex(c);
        e.type = TY_STR;
        emit(c, OP_CONST, add_const(c, (fval){.type = FT_STR, .present = true, .str = {.len = n}}, off), +1);
        return e;
    }
    case T_DUR:
        FAIL_TOK(c, t, "a duration is only valid as the window of count(), sum() or distinct()");
    case T_LB:
        FAIL_TOK(c, t, "a [set] is only valid after `in` or `starts_with`");
    case T_LP:
        enter(c, &t);
        lex(c);
        e = parse_or(c);
        e.at = t;
        e.feat = -1;
        expect(c, T_RP, "')'");
        c->depth--;
        return e;
    case T_IDENT:
        break;
    default:
        FAIL_TOK(c, t, "expected a value (a field, a number, a string, true/false or '('), found %s",
                 tok_desc(&t, b, sizeof b));
    }
    if (is_kw(&t, "true") || is_kw(&t, "false")) {
        lex(c);
        e.type = TY_BOOL;
        emit(c, OP_CONST, add_const(c, (fval){.type = FT_BOOL, .present = true, .b = is_kw(&t, "true")}, 0), +1);
        return e;
    }
    if (is_kw(&t, "list"))
        FAIL_TOK(c, t, "list(\"name\") is only valid after `in`: card_id in list(\"blocked_cards\")");
    if (is_keyword(&t))
        FAIL_TOK(c, t, "expected a value, found the keyword '%.*s'", (int)t.len, t.p);
    lex(c);
    if (c->t.k == T_LP) {
        if (is_kw(&t, "count") || is_kw(&t, "sum") || is_kw(&t, "distinct"))
            return velocity_call(c, &t);
        FAIL_TOK(c, t, "unknown function '%.*s' (functions: count, sum, distinct)", (int)t.len, t.p);
    }
    if (c->t.k == T_DOT && (is_kw(&t, "profile") || is_kw(&t, "attributes"))) {
        lex(c);
        tok f = c->t;
        if (f.k != T_IDENT)
            FAIL_TOK(c, f, "expected a field name after '%.*s.'", (int)t.len, t.p);
        lex(c);
        verror err = {0};
        int id = is_kw(&t, "profile") ? featreg_profile(c->reg, f.p, f.len, &err)
                                      : featreg_attr(c->reg, f.p, f.len, &err);
        if (id < 0)
            FAIL_TOK(c, f, "%s", err.msg);
        e.type = (ty)c->reg->defs[id].type;
        e.feat = id;
        emit(c, OP_FEAT, id, +1);
        return e;
    }
    int id = featreg_find(c->reg, t.p, t.len);
    if (id < 0 || id >= FEAT_BUILTIN_COUNT) {
        const char *s = suggest(c, t.p, t.len);
        FAIL_TOK(c, t, "unknown field '%.*s'%s%s%s", (int)t.len, t.p, s ? " (did you mean '" : "", s ? s : "",
                 s ? "'?)" : "");
    }
    e.type = (ty)c->reg->defs[id].type;
    e.feat = id;
    emit(c, OP_FEAT, id, +1);
    return e;
}

/* A prefix operator (unary '-' or `not`): the operand is parsed by sub, must have type want, and op is applied. */
static ex prefix_op(cc *c, ex (*sub)(cc *), ty want, op o, const char *what)
{
    tok t = c->t;
    enter(c, &t);
    lex(c);
    ex e = sub(c);
    need(c, &e, want, &t, what);
    emit(c, o, 0, 0);
    c->depth--;
    e.at = t;
    e.feat = -1;
    return e;
}

static ex parse_unary(cc *c)
{
    return c->t.k == T_MINUS ? prefix_op(c, parse_unary, TY_NUM, OP_NEG, "unary '-'") : parse_primary(c);
}

static ex parse_prod(cc *c)
{
    ex l = parse_unary(c);
    while (c->t.k == T_STAR || c->t.k == T_SLASH || c->t.k == T_PCT) {
        tok o = c->t;
        lex(c);
        need(c, &l, TY_NUM, &o, "arithmetic");
        ex r = parse_unary(c);
        need(c, &r, TY_NUM, &o, "arithmetic");
        emit(c, o.k == T_STAR ? OP_MUL : o.k == T_SLASH ? OP_DIV : OP_MOD, 0, -1);
        l.feat = -1;
    }
    return l;
}

static ex parse_sum(cc *c)
{
    ex l = parse_prod(c);
    while (c->t.k == T_PLUS || c->t.k == T_MINUS) {
        tok o = c->t;
        lex(c);
        need(c, &l, TY_NUM, &o, "arithmetic");
        ex r = parse_prod(c);
        need(c, &r, TY_NUM, &o, "arithmetic");
        emit(c, o.k == T_PLUS ? OP_ADD : OP_SUB, 0, -1);
        l.feat = -1;
    }
    return l;
}

/* [lit, lit, ...] of type want; returns the set index. */
static int parse_set(cc *c, ty want, const tok *op)
{
    tok open = c->t;
    expect(c, T_LB, "'['");
    int start = c->nconsts, n = 0;
    while (c->t.k != T_RB) {
        if (n > 0)
            expect(c, T_COMMA, "',' or ']'");
        tok t = c->t;
        fval v = {.present = true};
        uint32_t off = 0;
        if (t.k == T_NUM || (t.k == T_MINUS)) {
            double sign = 1;
            if (t.k == T_MINUS) {
                lex(c);
                sign = -1;
                if (c->t.k != T_NUM)
                    FAIL_TOK(c, c->t, "expected a number after '-'");
            }
            v.type = FT_NUM;
            v.num = sign * c->t.num;
        } else if (t.k == T_STR) {
            uint32_t len;
            off = string_value(c, &t, &len);
            v.type = FT_STR;
            v.str.len = len;
        } else if (is_kw(&t, "true") || is_kw(&t, "false")) {
            v.type = FT_BOOL;
            v.b = is_kw(&t, "true");
        } else {
            char b[64];
            FAIL_TOK(c, t, "a set holds literal values (numbers or strings), found %s", tok_desc(&t, b, sizeof b));
        }
        if ((ty)v.type != want)
            FAIL_TOK(c, t, "this set is compared with a %s, but this element is a %s", ty_name(want),
                     ty_name((ty)v.type));
        lex(c);
        add_const(c, v, off);
        if (++n > MAX_SET)
            FAIL_TOK(c, t, "a set holds at most %d values (use a list for more)", MAX_SET);
    }
    if (n == 0)
        FAIL_TOK(c, open, "an empty set never matches; remove the test or add values");
    lex(c);
    (void)op;
    c->sets = grow(c, c->sets, &c->capsets, c->nsets + 1, sizeof *c->sets);
    c->sets[c->nsets] = (cset){.start = start, .n = n};
    return c->nsets++;
}

static bool list_declared(const cc *c, const char *s, size_t n)
{
    for (int i = 0; i < c->nlists; i++)
        if (strlen(c->lists[i]) == n && memcmp(c->lists[i], s, n) == 0)
            return true;
    return false;
}

/* `x in list("name")`: replaces the field read with the membership feature. */
static void list_membership(cc *c, ex *l, const tok *op)
{
    tok kw = c->t;
    lex(c);
    expect(c, T_LP, "'(' after list");
    tok name = c->t;
    if (name.k != T_STR)
        FAIL_TOK(c, name, "expected the list's name as a string: list(\"blocked_cards\")");
    uint32_t n, off = string_value(c, &name, &n);
    const char *s = c->pool + off;
    lex(c);
    expect(c, T_RP, "')'");
    if (!list_declared(c, s, n))
        FAIL_TOK(c, name, "list \"%s\" is not declared (add `list %s` at the top of the file)", s, s);
    if (l->feat < 0 || c->ncode != l->start + 1)
        FAIL_TOK(c, *op, "list membership tests a field directly, e.g. card_id in list(\"%s\")", s);
    if (l->type != TY_STR)
        FAIL_TOK(c, *op, "list membership needs a string field, but %.*s is a %s", (int)l->at.len, l->at.p,
                 ty_name(l->type));
    verror err = {0};
    int id = featreg_list(c->reg, s, n, l->feat, &err);
    if (id < 0)
        FAIL_TOK(c, kw, "%s", err.msg);
    c->code[l->start].a = id; /* the OP_FEAT now reads the membership boolean */
}

static bool is_cmp(tok_kind k) { return k >= T_EQ && k <= T_GE; }

static ex parse_cmp(cc *c)
{
    ex l = parse_sum(c);
    tok o = c->t;
    if (is_cmp(o.k)) {
        lex(c);
        ex r = parse_sum(c);
        if (l.type != r.type) {
            char b1[64], b2[64];
            FAIL_TOK(c, o, "cannot compare %s %s with %s %s", ty_name(l.type), tok_desc(&l.at, b1, sizeof b1),
                     ty_name(r.type), tok_desc(&r.at, b2, sizeof b2));
        }
        if (l.type != TY_NUM && o.k != T_EQ && o.k != T_NE)
            FAIL_TOK(c, o, "only numbers are ordered; %ss take == or !=", ty_name(l.type));
        static const op ops[] = {[T_EQ] = OP_EQ, [T_NE] = OP_NE, [T_LT] = OP_LT,
                                 [T_LE] = OP_LE, [T_GT] = OP_GT, [T_GE] = OP_GE};
        emit(c, ops[o.k], 0, -1);
        if (is_cmp(c->t.k))
            FAIL_TOK(c, c->t, "comparisons do not chain; join them with `and`");
        return (ex){.type = TY_BOOL, .start = l.start, .feat = -1, .at = l.at};
    }
    bool negate = false;
    if (is_kw(&o, "not")) {
        /* `x not in ...` (a leading `not` was taken by parse_not) */
        size_t save_pos = c->pos;
        int save_line = c->line;
        size_t save_ls = c->line_start;
        tok save_t = c->t, save_prev = c->prev;
        lex(c);
        if (!is_kw(&c->t, "in")) {
            c->pos = save_pos;
            c->line = save_line;
            c->line_start = save_ls;
            c->t = save_t;
            c->prev = save_prev;
            return l;
        }
        negate = true;
        o = c->t;
    }
    if (is_kw(&o, "in")) {
        lex(c);
        if (is_kw(&c->t, "list")) {
            list_membership(c, &l, &o);
        } else {
            if (l.type == TY_BOOL)
                FAIL_TOK(c, o, "`in` needs a number or a string on its left");
            int set = parse_set(c, l.type, &o);
            emit(c, OP_IN, set, 0);
        }
    } else if (is_kw(&o, "starts_with")) {
        if (negate)
            FAIL_TOK(c, o, "write `not (x starts_with ...)`");
        lex(c);
        need(c, &l, TY_STR, &o, "starts_with");
        int set;
        if (c->t.k == T_STR) {
            tok s = c->t;
            uint32_t n, off = string_value(c, &s, &n);
            lex(c);
            int k = add_const(c, (fval){.type = FT_STR, .present = true, .str = {.len = n}}, off);
            c->sets = grow(c, c->sets, &c->capsets, c->nsets + 1, sizeof *c->sets);
            c->sets[c->nsets] = (cset){.start = k, .n = 1};
            set = c->nsets++;
        } else {
            set = parse_set(c, TY_STR, &o);
        }
        emit(c, OP_PREFIX, set, 0);
    } else if (is_kw(&o, "is")) {
        if (negate)
            FAIL_TOK(c, o, "unexpected `is` after `not`");
        lex(c);
        bool neg = false;
        if (is_kw(&c->t, "not")) {
            neg = true;
            lex(c);
        }
        bool want_missing;
        if (is_kw(&c->t, "missing"))
            want_missing = true;
        else if (is_kw(&c->t, "present"))
            want_missing = false;
        else
            FAIL_TOK(c, c->t, "expected `missing` or `present` after `is`");
        lex(c);
        emit(c, OP_PRESENT, 0, 0);
        if (want_missing != neg)
            emit(c, OP_NOT, 0, 0);
    } else {
        if (negate)
            FAIL_TOK(c, o, "expected `in` after `not`");
        return l;
    }
    if (negate)
        emit(c, OP_NOT, 0, 0);
    return (ex){.type = TY_BOOL, .start = l.start, .feat = -1, .at = l.at};
}

static ex parse_not(cc *c)
{
    return is_kw(&c->t, "not") ? prefix_op(c, parse_not, TY_BOOL, OP_NOT, "`not`") : parse_cmp(c);
}

/* `a and b ...` / `a or b ...`: booleans joined left to right, with a forward jump that short-circuits (the
 * value that decides, false for and, true for or, stays on the stack). */
static ex logic_chain(cc *c, const char *kw, ex (*sub)(cc *), op jump, op combine, const char *what)
{
    ex l = sub(c);
    while (is_kw(&c->t, kw)) {
        tok o = c->t;
        lex(c);
        need(c, &l, TY_BOOL, &o, what);
        int j = emit(c, jump, 0, 0);
        ex r = sub(c);
        need(c, &r, TY_BOOL, &o, what);
        emit(c, combine, 0, -1);
        c->code[j].a = c->ncode;
        l.feat = -1;
    }
    return l;
}

static ex parse_and(cc *c) { return logic_chain(c, "and", parse_not, OP_JF, OP_AND, "`and`"); }
static ex parse_or(cc *c) { return logic_chain(c, "or", parse_and, OP_JT, OP_OR, "`or`"); }

static bool valid_id(const tok *t) { return t->k == T_IDENT && ident_rule_id_valid(t->p, t->len); }

static void parse_list_decl(cc *c)
{
    lex(c); /* list */
    tok n = c->t;
    if (n.k != T_IDENT || is_keyword(&n) || !ident_list_name_valid(n.p, n.len))
        FAIL_TOK(c, n, "expected a list name after `list` (1-%d letters, digits and _)", IDENT_NAME_MAX);
    if (list_declared(c, n.p, n.len))
        FAIL_TOK(c, n, "list %.*s is declared twice", (int)n.len, n.p);
    if (c->nlists >= MAX_LISTS)
        FAIL_TOK(c, n, "at most %d lists", MAX_LISTS);
    memcpy(c->lists[c->nlists], n.p, n.len);
    c->lists[c->nlists++][n.len] = 0;
    lex(c);
    if (c->t.k == T_STR) /* an optional description */
        lex(c);
}

static void parse_rule(cc *c)
{
    lex(c); /* rule */
    tok id = c->t;
    if (!valid_id(&id) || is_keyword(&id)) {
        char b[64];
        FAIL_TOK(c, id, "expected a rule id (lower-case letters, digits and _), found %s", tok_desc(&id, b, sizeof b));
    }
    for (int i = 0; i < c->nrules; i++)
        if (strlen(c->rules[i].id) == id.len && memcmp(c->rules[i].id, id.p, id.len) == 0)
            FAIL_TOK(c, id, "rule id %.*s is used twice", (int)id.len, id.p);
    if (c->nrules >= MAX_RULES)
        FAIL_TOK(c, id, "at most %d rules", MAX_RULES);
    lex(c);
    tok o = c->t;
    rule r = {0};
    memcpy(r.id, id.p, id.len);
    if (is_kw(&o, "approve"))
        r.outcome = RO_APPROVE;
    else if (is_kw(&o, "review"))
        r.outcome = RO_REVIEW;
    else if (is_kw(&o, "decline"))
        r.outcome = RO_DECLINE;
    else if (is_kw(&o, "allow"))
        r.outcome = RO_ALLOW;
    else {
        char b[64];
        FAIL_TOK(c, o, "expected an outcome (approve, review, decline or allow), found %s", tok_desc(&o, b, sizeof b));
    }
    lex(c);
    tok reason = c->t;
    if (reason.k != T_STR)
        FAIL_TOK(c, reason, "expected the reason text in quotes, e.g. \"Card on the blocked list\"");
    uint32_t n;
    r.reason_off = string_value(c, &reason, &n);
    if (n == 0 || n > RULES_REASON_MAX)
        FAIL_TOK(c, reason, "a reason is 1-%d characters", RULES_REASON_MAX);
    lex(c);
    if (!is_kw(&c->t, "when")) {
        char b[64];
        FAIL_TOK(c, c->t, "expected `when` and a condition, found %s", tok_desc(&c->t, b, sizeof b));
    }
    lex(c);
    c->sp = 0;
    c->depth = 0;
    r.code_start = c->ncode;
    ex e = parse_or(c);
    need(c, &e, TY_BOOL, &e.at, "a rule's condition");
    if (c->t.k != T_EOF && !is_kw(&c->t, "rule") && !is_kw(&c->t, "list")) {
        char b[64];
        FAIL_TOK(c, c->t, "unexpected %s after the condition of rule %s (a missing `and`/`or`?)",
                 tok_desc(&c->t, b, sizeof b), r.id);
    }
    r.code_len = c->ncode - r.code_start;
    c->rules = grow(c, c->rules, &c->caprules, c->nrules + 1, sizeof *c->rules);
    c->rules[c->nrules++] = r;
}

/* After an error: resume at the first line after the error's line that starts with `rule` or `list` (the
 * parser's one-token lookahead may already be past it, so rewind to the error line first). */
static void recover(cc *c)
{
    c->pos = 0;
    c->line = 1;
    c->line_start = 0;
    while (c->line < c->err_line && c->pos < c->len)
        if (c->src[c->pos++] == '\n') {
            c->line++;
            c->line_start = c->pos;
        }
    for (;;) {
        /* move to the next line start and look at its first word */
        while (c->pos < c->len && c->src[c->pos] != '\n')
            c->pos++;
        if (c->pos >= c->len) {
            c->t = (tok){.k = T_EOF, .line = c->line, .col = 1};
            return;
        }
        c->pos++;
        c->line++;
        c->line_start = c->pos;
        size_t p = c->pos;
        while (p < c->len && (c->src[p] == ' ' || c->src[p] == '\t'))
            p++;
        const char *w = c->src + p;
        size_t rest = c->len - p;
        if ((rest >= 5 && memcmp(w, "rule", 4) == 0 && (w[4] == ' ' || w[4] == '\t')) ||
            (rest >= 5 && memcmp(w, "list", 4) == 0 && (w[4] == ' ' || w[4] == '\t'))) {
            if (setjmp(c->fail) == 0) {
                lex(c);
                return;
            }
        }
    }
}

static void cc_free(cc *c)
{
    free(c->code);
    free(c->consts);
    free(c->const_off);
    free(c->sets);
    free(c->pool);
    free(c->rules);
}

vstatus rules_compile(const char *src, size_t len, const char *name, featreg *reg, ruleset **out, rules_diag *diag)
{
    *out = NULL;
    cc *c = calloc(1, sizeof *c);
    if (!c)
        return V_ENOMEM;
    c->src = src;
    c->len = len;
    c->name = name ? name : "<rules>";
    c->line = 1;
    c->reg = reg;
    c->diag = diag;
    if (memchr(src, 0, len)) {
        diag->errors++;
        diag->first_line = 1;
        diag->first_col = 1;
        diag_append(diag, "%s: error: the file contains NUL bytes (not a text file)\n", c->name);
        free(c);
        return V_EPARSE;
    }
    if (setjmp(c->fail) == 0)
        lex(c);
    else
        recover(c);
    while (c->t.k != T_EOF) {
        if (setjmp(c->fail) != 0) {
            if (c->oom || diag->errors >= MAX_ERRORS)
                break;
            recover(c);
            continue;
        }
        if (is_kw(&c->t, "rule"))
            parse_rule(c);
        else if (is_kw(&c->t, "list"))
            parse_list_decl(c);
        else {
            char b[64];
            FAIL_TOK(c, c->t, "expected `rule` or `list`, found %s", tok_desc(&c->t, b, sizeof b));
        }
    }
    if (c->oom) {
        cc_free(c);
        free(c);
        return V_ENOMEM;
    }
    if (diag->errors == 0 && c->nrules == 0) {
        diag->errors++;
        diag->first_line = 1;
        diag->first_col = 1;
        diag_append(diag, "%s:1:1: error: no rules (a rules file needs at least one `rule`)\n  \n  ^\n", c->name);
    }
    if (diag->errors) {
        cc_free(c);
        free(c);
        return V_EPARSE;
    }
    ruleset *rs = calloc(1, sizeof *rs);
    if (!rs) {
        cc_free(c);
        free(c);
        return V_ENOMEM;
    }
    rs->rules = c->rules;
    rs->nrules = c->nrules;
    rs->code = c->code;
    rs->ncode = c->ncode;
    rs->consts = c->consts;
    rs->nconsts = c->nconsts;
    rs->sets = c->sets;
    rs->nsets = c->nsets;
    rs->pool = c->pool ? c->pool : calloc(1, 1);
    for (int i = 0; i < rs->nconsts; i++)
        if (rs->consts[i].type == FT_STR)
            rs->consts[i].str.ptr = rs->pool + c->const_off[i];
    for (int i = 0; i < rs->nrules; i++)
        rs->rules[i].reason = rs->pool + rs->rules[i].reason_off;
    hash64_hex(hash64(src, len), rs->version);
    free(c->const_off);
    free(c);
    if (!rs->pool) {
        rules_free(rs);
        return V_ENOMEM;
    }
    *out = rs;
    return V_OK;
}

vstatus rules_compile_file(const char *path, featreg *reg, ruleset **out, rules_diag *diag)
{
    *out = NULL;
    char *buf;
    size_t n;
    verror e = {0};
    vstatus s = file_read(path, (size_t)16 << 20, &buf, &n, &e);
    if (s != V_OK) {
        diag->errors++;
        diag_append(diag, "%s: error: %s\n", path, e.msg);
        return s == V_EINVAL ? V_EPARSE : s;
    }
    s = rules_compile(buf, n, path, reg, out, diag);
    free(buf);
    return s;
}

void rules_free(ruleset *rs)
{
    if (!rs)
        return;
    free(rs->rules);
    free(rs->code);
    free(rs->consts);
    free(rs->sets);
    free(rs->pool);
    free(rs);
}

const char *rules_version(const ruleset *rs) { return rs->version; }
int rules_count(const ruleset *rs) { return rs->nrules; }
int rules_code_size(const ruleset *rs) { return rs->ncode; }
const char *rules_id(const ruleset *rs, int i) { return rs->rules[i].id; }
const char *rules_reason(const ruleset *rs, int i) { return rs->rules[i].reason; }
rule_outcome rules_outcome(const ruleset *rs, int i) { return rs->rules[i].outcome; }

/* ====================================================================================== evaluator */

/* Booleans on the stack: present=false is "unknown". */
static inline bool str_eq(const fstr *a, const fstr *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->ptr, b->ptr, a->len) == 0);
}

static inline bool val_eq(const fval *a, const fval *b)
{
    switch (a->type) {
    case FT_NUM: return a->num == b->num;
    case FT_STR: return str_eq(&a->str, &b->str);
    default: return a->b == b->b;
    }
}

static int run(const ruleset *rs, const rule *r, const fval *vals)
{
    fval st[STACK_MAX + 1];
    int sp = 0;
    const ins *code = rs->code + r->code_start;
    for (int pc = 0; pc < r->code_len; pc++) {
        const ins in = code[pc];
        switch ((op)in.op) {
        case OP_FEAT:
            st[sp] = vals[in.a];
            if (st[sp].type == FT_NUM && st[sp].present && isnan(st[sp].num))
                st[sp].present = false;
            sp++;
            break;
        case OP_CONST:
            st[sp++] = rs->consts[in.a];
            break;
        case OP_NEG:
            st[sp - 1].num = -st[sp - 1].num;
            break;
        case OP_ADD:
        case OP_SUB:
        case OP_MUL:
        case OP_DIV:
        case OP_MOD: {
            fval *a = &st[sp - 2], *b = &st[sp - 1];
            sp--;
            if (!a->present || !b->present) {
                a->present = false;
                break;
            }
            double x = a->num, y = b->num;
            switch ((op)in.op) {
            case OP_ADD: a->num = x + y; break;
            case OP_SUB: a->num = x - y; break;
            case OP_MUL: a->num = x * y; break;
            case OP_DIV:
                if (y == 0)
                    a->present = false;
                else
                    a->num = x / y;
                break;
            default:
                if (y == 0)
                    a->present = false;
                else
                    a->num = fmod(x, y);
                break;
            }
            if (a->present && !isfinite(a->num))
                a->present = false;
            break;
        }
        case OP_EQ:
        case OP_NE:
        case OP_LT:
        case OP_LE:
        case OP_GT:
        case OP_GE: {
            fval *a = &st[sp - 2], *b = &st[sp - 1];
            sp--;
            bool known = a->present && b->present, res = false;
            if (known) {
                switch ((op)in.op) {
                case OP_EQ: res = val_eq(a, b); break;
                case OP_NE: res = !val_eq(a, b); break;
                case OP_LT: res = a->num < b->num; break;
                case OP_LE: res = a->num <= b->num; break;
                case OP_GT: res = a->num > b->num; break;
                default: res = a->num >= b->num; break;
                }
            }
            a->type = FT_BOOL;
            a->present = known;
            a->b = res;
            break;
        }
        case OP_NOT:
            st[sp - 1].b = !st[sp - 1].b;
            break;
        case OP_AND: {
            fval *a = &st[sp - 2], *b = &st[sp - 1];
            sp--;
            /* Kleene: false dominates, then unknown */
            if ((a->present && !a->b) || (b->present && !b->b)) {
                a->present = true;
                a->b = false;
            } else {
                a->present = a->present && b->present;
                a->b = true;
            }
            break;
        }
        case OP_OR: {
            fval *a = &st[sp - 2], *b = &st[sp - 1];
            sp--;
            if ((a->present && a->b) || (b->present && b->b)) {
                a->present = true;
                a->b = true;
            } else {
                a->present = a->present && b->present;
                a->b = false;
            }
            break;
        }
        case OP_JF:
            if (st[sp - 1].present && !st[sp - 1].b)
                pc = in.a - r->code_start - 1;
            break;
        case OP_JT:
            if (st[sp - 1].present && st[sp - 1].b)
                pc = in.a - r->code_start - 1;
            break;
        case OP_IN:
        case OP_PREFIX: {
            fval *a = &st[sp - 1];
            const cset *s = &rs->sets[in.a];
            bool res = false;
            if (a->present) {
                for (int i = 0; i < s->n && !res; i++) {
                    const fval *v = &rs->consts[s->start + i];
                    if (in.op == OP_IN)
                        res = val_eq(a, v);
                    else
                        res = a->str.len >= v->str.len && memcmp(a->str.ptr, v->str.ptr, v->str.len) == 0;
                }
            }
            a->type = FT_BOOL;
            a->b = res;
            break;
        }
        case OP_PRESENT:
            st[sp - 1].b = st[sp - 1].present;
            st[sp - 1].type = FT_BOOL;
            st[sp - 1].present = true;
            break;
        }
    }
    if (sp != 1 || !st[0].present)
        return -1;
    return st[0].b ? 1 : 0;
}

int rules_eval_one(const ruleset *rs, int i, const fval *vals) { return run(rs, &rs->rules[i], vals); }

void rules_eval(const ruleset *rs, const fval *vals, rules_result *out)
{
    out->outcome = RO_APPROVE;
    out->allowed = false;
    out->n_matches = 0;
    out->n_matched_total = 0;
    rule_outcome worst = RO_APPROVE;
    for (int i = 0; i < rs->nrules; i++) {
        const rule *r = &rs->rules[i];
        if (run(rs, r, vals) != 1)
            continue;
        out->n_matched_total++;
        if (out->n_matches < RULES_MAX_MATCHES)
            out->match[out->n_matches++] = i;
        if (r->outcome == RO_ALLOW)
            out->allowed = true;
        else if (r->outcome > worst)
            worst = r->outcome;
    }
    out->outcome = out->allowed ? RO_APPROVE : worst;
}

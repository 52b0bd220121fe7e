/* gbdt.c - the XGBoost-JSON tree model: loader, checks and the allocation-free evaluator (see gbdt.h).
 *
 * Loading parses the JSON with jansson, refuses anything outside the supported subset, and copies every
 * reachable node into one array laid out breadth-first per tree, so a split's two children are adjacent
 * (right = left + 1) and a walk is `i = left + !go_left`. A leaf's value is its split_conditions entry: that
 * is where xgboost stores the shrunk leaf weight (base_weights holds the weight before the learning rate).
 * Prediction first gathers the model's inputs into a small float array (NaN = missing), then walks GBDT_LANES
 * trees at once: a walk is a chain of dependent loads, and interleaving independent chains lets the CPU overlap
 * them. To make a step branch-free and short:
 *  - missing values need no test: each input is stored twice, as (-inf, +inf) when missing and (x, x)
 *    otherwise, and a split whose default is left reads the first copy, one whose default is right the second,
 *    so `x < threshold` alone sends a missing value the default way (thresholds are finite, checked at load);
 *  - a leaf loops to itself (threshold +inf on an input that is always 0), so a group of trees simply takes
 *    as many steps as its deepest tree.
 * The leaves are then added in float32 in tree order, exactly as xgboost 1.7's CPU predictor sums them, so
 * scores are bit-identical to xgboost's. docs/model.md has the measured effect of each choice. */
#include "gbdt.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One node, 8 bytes: value, and `link` = left << GBDT_SLOT_BITS | slot. For a split: value is the threshold, left
 * the index of the left child in the model's node array (right is left + 1), slot the input copy to compare:
 * 2 * feature + (default left ? 0 : 1). For a leaf: value is +inf, slot the always-zero input 2 * nfeat, left
 * the leaf's own index, so a walk that reached it stays there; its weight is in leaf_value. Packing the two
 * into one word took the 200-tree model from 305 to 203 KB, and with 16 lanes a prediction from about 1.69 to
 * 1.45 us (docs/model.md). */
typedef struct gnode {
    float value;
    uint32_t link;
} gnode;

_Static_assert(sizeof(gnode) == 8, "gnode is 8 bytes");

#define GBDT_SLOT_BITS 10
#define GBDT_SLOT_MASK ((1u << GBDT_SLOT_BITS) - 1)
_Static_assert(2 * FEAT_MAX + 1 <= GBDT_SLOT_MASK, "every input slot fits in a node's slot bits");
/* node indices take the other 22 bits; one index is kept for the padding leaf */
#define GBDT_MAX_NODES ((1 << (32 - GBDT_SLOT_BITS)) - 1)

static inline uint32_t node_link(int32_t left, uint32_t slot) { return (uint32_t)left << GBDT_SLOT_BITS | slot; }
#ifndef GBDT_LANES
#define GBDT_LANES 16
#endif
#define GBDT_MAX_DEPTH 64
_Static_assert(GBDT_MAX_DEPTH <= UINT8_MAX, "a group's step count (steps[]) is a uint8_t");

struct gbdt {
    gnode *nodes;
    float *leaf_value;  /* per node; the weight of the leaves */
    int32_t *roots;     /* index of each tree's root in nodes, padded to a multiple of GBDT_LANES */
    uint8_t *steps;     /* per group of GBDT_LANES trees: the depth of its deepest tree */
    int ntrees;
    int nnodes;
    int nfeat;
    int feat_ids[FEAT_MAX]; /* registry id of each input slot */
    float base_margin;
    char version[17];
};

/* ------------------------------------------------------------------------------------------------ loading */

typedef struct loader {
    const char *name;
    verror *e;
} loader;

static vstatus refuse(loader *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static vstatus refuse(loader *l, const char *fmt, ...)
{
    char buf[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return verror_set(l->e, V_EPARSE, "%s: model refused: %s", l->name, buf);
}

/* Follows a path of object keys; NULL when any step is missing or not an object. */
static json_t *dig(json_t *o, const char *const *keys, int n)
{
    for (int i = 0; i < n && o; i++)
        o = json_is_object(o) ? json_object_get(o, keys[i]) : NULL;
    return o;
}

/* A parameter that xgboost writes as a string ("5E-1") but that older files may hold as a number. */
static bool param_float(json_t *v, float *out)
{
    if (json_is_number(v)) {
        *out = (float)json_number_value(v);
        return true;
    }
    const char *s = json_string_value(v);
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    float f = strtof(s, &end);
    if (errno != 0 || *end != '\0')
        return false;
    *out = f;
    return true;
}

/* base_score as xgboost writes it: a string holding a number ("5E-1", xgboost < 3.1), or, since xgboost 3.1's
 * vector-valued intercept, a string holding a list with one value per output ("[5E-1]"); older files may hold a
 * plain number. Returns how many values it holds (the first in *out), or 0 when it is none of these. */
static int param_base_score(json_t *v, float *out)
{
    const char *s = json_string_value(v);
    if (!s || s[0] != '[')
        return param_float(v, out) ? 1 : 0;
    const char *p = s + 1;
    int n = 0;
    for (;;) {
        char *end;
        errno = 0;
        float f = strtof(p, &end);
        if (end == p || errno != 0)
            return 0;
        if (n++ == 0)
            *out = f;
        p = end;
        while (*p == ' ')
            p++;
        if (*p == ']')
            return p[1] == '\0' ? n : 0;
        if (*p != ',')
            return 0;
        p++;
    }
}

/* Checks that tree t has an array called key with exactly n entries. */
static json_t *tree_array(loader *l, json_t *tree, int t, const char *key, size_t n, vstatus *st)
{
    json_t *a = json_object_get(tree, key);
    if (!json_is_array(a)) {
        *st = refuse(l, "tree %d: '%s' is missing or not an array", t, key);
        return NULL;
    }
    if (json_array_size(a) != n) {
        *st = refuse(l, "tree %d: '%s' has %zu entries, expected %zu (one per node)", t, key, json_array_size(a),
                     n);
        return NULL;
    }
    return a;
}

static bool int_at(json_t *a, size_t i, long long *out)
{
    json_t *v = json_array_get(a, i);
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return true;
    }
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return true;
    }
    return false;
}

static vstatus load_features(loader *l, json_t *learner, featreg *reg, gbdt *m)
{
    json_t *names = json_object_get(learner, "feature_names");
    if (!json_is_array(names) || json_array_size(names) == 0)
        return refuse(l, "learner.feature_names is missing or empty; train with named features (registry names "
                         "such as amount_minor or count(card_id,10m))");
    size_t n = json_array_size(names);
    if (n > FEAT_MAX)
        return refuse(l, "the model names %zu features; the feature registry holds at most %d in all", n, FEAT_MAX);
    json_t *types = json_object_get(learner, "feature_types");
    for (size_t i = 0; i < n; i++) {
        const char *name = json_string_value(json_array_get(names, i));
        if (!name || !*name)
            return refuse(l, "learner.feature_names[%zu] is not a non-empty string", i);
        const char *ft = json_string_value(json_array_get(types, i));
        if (ft && strcmp(ft, "c") == 0)
            return refuse(l, "feature '%s' is categorical; only numeric features are supported", name);
        verror fe = {0};
        int id = featreg_resolve(reg, name, strlen(name), &fe);
        if (id == V_ENOMEM)
            return refuse(l,
                          "feature '%s' does not fit: the feature registry holds %d features in all, the %d "
                          "built-ins and every velocity, list, profile and attribute feature of the rules and the "
                          "model (this model names %zu)",
                          name, FEAT_MAX, FEAT_BUILTIN_COUNT, n);
        if (id < 0)
            return refuse(l, "feature '%s' is not in the feature registry (%s)", name, fe.msg);
        const feat_def *d = &reg->defs[id];
        if (d->type == FT_STR)
            return refuse(l, "feature '%s' is a string; the model reads numbers and booleans only", name);
        if (d->kind == FK_MODEL)
            return refuse(l, "feature '%s' is the model's own output", name);
        for (size_t j = 0; j < i; j++)
            if (m->feat_ids[j] == id)
                return refuse(l, "feature '%s' is named twice", name);
        m->feat_ids[i] = id;
    }
    m->nfeat = (int)n;
    return V_OK;
}

/* Copies tree t (xgboost's node arrays) breadth-first into m->nodes from m->nnodes on. */
static vstatus load_tree(loader *l, json_t *tree, int t, gbdt *m, int cap)
{
    vstatus st = V_OK;
    json_t *left = json_object_get(tree, "left_children");
    if (!json_is_array(left) || json_array_size(left) == 0)
        return refuse(l, "tree %d: 'left_children' is missing, empty or not an array", t);
    size_t n = json_array_size(left);
    json_t *right = tree_array(l, tree, t, "right_children", n, &st);
    json_t *cond = right ? tree_array(l, tree, t, "split_conditions", n, &st) : NULL;
    json_t *feat = cond ? tree_array(l, tree, t, "split_indices", n, &st) : NULL;
    json_t *dleft = feat ? tree_array(l, tree, t, "default_left", n, &st) : NULL;
    if (!dleft)
        return st;
    json_t *stype = json_object_get(tree, "split_type");
    json_t *cats = json_object_get(tree, "categories_nodes");
    if (json_array_size(cats) > 0)
        return refuse(l, "tree %d has categorical splits; only numeric splits are supported", t);
    if (m->nnodes + (long long)n > cap)
        return refuse(l, "more than %d nodes", cap);

    /* breadth-first: queue[k] is the source index of the node stored at m->nodes[base + k] */
    int32_t *queue = malloc(n * sizeof *queue);
    uint8_t *seen = calloc(n, 1);
    int *depth = calloc(n, sizeof *depth); /* of the node stored at base + k */
    int max_depth = 0;
    if (!queue || !seen || !depth) {
        free(queue);
        free(seen);
        free(depth);
        return verror_set(l->e, V_ENOMEM, "%s: out of memory", l->name);
    }
    int base = m->nnodes;
    size_t head = 0, tail = 0;
    queue[tail++] = 0;
    seen[0] = 1;
    while (head < tail) {
        int32_t src = queue[head];
        gnode *g = &m->nodes[base + (int)head];
        head++;
        long long lc, rc, fi, dl;
        json_t *cv = json_array_get(cond, (size_t)src);
        if (!int_at(left, (size_t)src, &lc) || !int_at(right, (size_t)src, &rc) || !int_at(feat, (size_t)src, &fi) ||
            !int_at(dleft, (size_t)src, &dl)) {
            st = refuse(l, "tree %d node %d: a node array holds a value of the wrong type", t, src);
            break;
        }
        long long sty = 0;
        if (json_is_array(stype) && (!int_at(stype, (size_t)src, &sty) || sty != 0)) {
            st = refuse(l, "tree %d node %d: split_type %lld; only numeric splits (0) are supported", t, src, sty);
            break;
        }
        bool is_leaf = lc == -1 && rc == -1;
        if (json_is_null(cv)) { /* NaN in the file (see nonfinite_rewrite) */
            st = refuse(l,
                        "tree %d node %d: the %s is NaN (or null); xgboost writes NaN only as the threshold of a "
                        "categorical split",
                        t, src, is_leaf ? "leaf value" : "split threshold");
            break;
        }
        if (!json_is_number(cv)) {
            st = refuse(l, "tree %d node %d: a node array holds a value of the wrong type", t, src);
            break;
        }
        g->value = (float)json_number_value(cv);
        if (is_leaf) {
            /* a leaf of +inf in one tree and -inf in another would sum to NaN, a score no rule matches */
            if (!isfinite(g->value)) {
                st = refuse(l, "tree %d node %d: the leaf value is not a finite float32 number", t, src);
                break;
            }
            m->leaf_value[base + (int)head - 1] = g->value;
            g->value = INFINITY;
            g->link = node_link(base + (int)head - 1, 2 * (uint32_t)m->nfeat);
            continue;
        }
        if (lc < 1 || rc < 1 || lc >= (long long)n || rc >= (long long)n || lc == rc) {
            st = refuse(l, "tree %d node %d: children %lld and %lld are out of range (%zu nodes)", t, src, lc, rc, n);
            break;
        }
        if (seen[lc] || seen[rc]) {
            st = refuse(l, "tree %d node %d: a child is reached twice; the nodes do not form a tree", t, src);
            break;
        }
        if (fi < 0 || fi >= m->nfeat) {
            st = refuse(l, "tree %d node %d: split feature %lld, but the model has %d features", t, src, fi,
                        m->nfeat);
            break;
        }
        if (!isfinite(g->value)) {
            st = refuse(l, "tree %d node %d: the split threshold is not a finite number", t, src);
            break;
        }
        seen[lc] = seen[rc] = 1;
        g->link = node_link(base + (int32_t)tail, 2 * (uint32_t)fi + (dl ? 0 : 1));
        depth[tail] = depth[tail + 1] = depth[head - 1] + 1;
        if (depth[tail] > max_depth)
            max_depth = depth[tail];
        queue[tail++] = (int32_t)lc;
        queue[tail++] = (int32_t)rc;
    }
    free(queue);
    free(seen);
    free(depth);
    if (st != V_OK)
        return st;
    if (max_depth > GBDT_MAX_DEPTH)
        return refuse(l, "tree %d is %d deep, at most %d is supported", t, max_depth, GBDT_MAX_DEPTH);
    m->roots[t] = base;
    m->nnodes = base + (int)tail;
    if (max_depth > m->steps[t / GBDT_LANES])
        m->steps[t / GBDT_LANES] = (uint8_t)max_depth;
    return V_OK;
}

static vstatus load_json(loader *l, json_t *root, featreg *reg, gbdt *m)
{
    json_t *learner = json_object_get(root, "learner");
    if (!json_is_object(learner))
        return refuse(l, "no 'learner' object; this is not an XGBoost JSON model "
                         "(save it with save_model(\"x.json\"))");

    static const char *const obj_path[] = {"objective", "name"};
    const char *obj = json_string_value(dig(learner, obj_path, 2));
    if (!obj)
        return refuse(l, "learner.objective.name is missing");
    if (strcmp(obj, "binary:logistic") != 0)
        return refuse(l, "objective '%s' is not supported; only binary:logistic", obj);

    static const char *const booster_path[] = {"gradient_booster", "name"};
    const char *booster = json_string_value(dig(learner, booster_path, 2));
    if (!booster)
        return refuse(l, "learner.gradient_booster.name is missing");
    if (strcmp(booster, "gbtree") != 0)
        return refuse(l, "booster '%s' is not supported; only gbtree", booster);

    static const char *const base_path[] = {"learner_model_param", "base_score"};
    json_t *bsv = dig(learner, base_path, 2);
    float base_score = 0;
    int nbase = param_base_score(bsv, &base_score);
    if (json_is_null(bsv))
        return refuse(l, "learner.learner_model_param.base_score is NaN (or null)");
    if (nbase == 0)
        return refuse(l, "learner.learner_model_param.base_score is missing or not a number (xgboost writes "
                         "\"5E-1\", or \"[5E-1]\" since 3.1)");
    if (nbase > 1)
        return refuse(l,
                      "learner.learner_model_param.base_score holds %d values, one per output: a multi-output "
                      "model; only single-output binary:logistic models are supported",
                      nbase);
    static const char *const target_path[] = {"learner_model_param", "num_target"};
    float ntarget;
    if (param_float(dig(learner, target_path, 2), &ntarget) && ntarget != 1.0f)
        return refuse(l,
                      "learner.learner_model_param.num_target is %g: a multi-output model; only single-output "
                      "binary:logistic models are supported",
                      (double)ntarget);
    if (!(base_score > 0.0f && base_score < 1.0f))
        return refuse(l, "base_score %g is not a probability strictly between 0 and 1", (double)base_score);
    /* xgboost's ProbToMargin for binary:logistic, in float */
    m->base_margin = -logf(1.0f / base_score - 1.0f);
    if (!isfinite(m->base_margin))
        return refuse(l, "base_score %g is too close to 0 or 1 for a finite margin in float32", (double)base_score);

    vstatus st = load_features(l, learner, reg, m);
    if (st != V_OK)
        return st;

    static const char *const model_path[] = {"gradient_booster", "model"};
    json_t *model = dig(learner, model_path, 2);
    json_t *trees = json_object_get(model, "trees");
    if (!json_is_array(trees) || json_array_size(trees) == 0)
        return refuse(l, "learner.gradient_booster.model.trees is missing or empty");
    size_t ntrees = json_array_size(trees);
    json_t *info = json_object_get(model, "tree_info");
    for (size_t t = 0; t < json_array_size(info); t++) {
        json_t *v = json_array_get(info, t);
        if (!json_is_integer(v) || json_integer_value(v) != 0)
            return refuse(l, "tree_info[%zu] names output group %lld; only one output is supported", t,
                          (long long)json_integer_value(v));
    }

    size_t total = 0;
    for (size_t t = 0; t < ntrees; t++) {
        json_t *tree = json_array_get(trees, t);
        if (!json_is_object(tree))
            return refuse(l, "trees[%zu] is not an object", t);
        total += json_array_size(json_object_get(tree, "left_children"));
    }
    if (total > GBDT_MAX_NODES || ntrees > GBDT_MAX_NODES)
        return refuse(l, "%zu nodes, at most %d are supported", total, GBDT_MAX_NODES);
    /* one spare node: the leaf of weight 0 that pads the last group of trees */
    size_t groups = (ntrees + GBDT_LANES - 1) / GBDT_LANES;
    m->nodes = calloc(total + 1, sizeof *m->nodes);
    m->leaf_value = calloc(total + 1, sizeof *m->leaf_value);
    m->roots = calloc(groups * GBDT_LANES, sizeof *m->roots);
    m->steps = calloc(groups, 1);
    if (!m->nodes || !m->leaf_value || !m->roots || !m->steps)
        return verror_set(l->e, V_ENOMEM, "%s: out of memory", l->name);
    m->ntrees = (int)ntrees;
    for (size_t t = 0; t < ntrees; t++) {
        st = load_tree(l, json_array_get(trees, t), (int)t, m, (int)total);
        if (st != V_OK)
            return st;
    }
    int pad = m->nnodes++;
    m->nodes[pad] = (gnode){.value = INFINITY, .link = node_link(pad, 2 * (uint32_t)m->nfeat)};
    for (size_t t = ntrees; t < groups * GBDT_LANES; t++)
        m->roots[t] = pad;
    return V_OK;
}

/* xgboost writes a non-finite float as the bare word NaN, Infinity or -Infinity (a categorical split's threshold
 * is NaN), which is not JSON, and jansson has no option to accept them. Outside strings they are rewritten before
 * parsing, NaN to null and the infinities to +-1e308 (a double that is infinite in float32, as the evaluator reads
 * every number), so that the checks can say what such a value is for (a categorical split, a NaN threshold, a
 * non-finite leaf) instead of "not valid JSON: invalid token near 'NaN'", and so that xgboost's training
 * statistics, which the evaluator never reads, may hold them. Anything else that is not JSON is left for jansson
 * to refuse (its column may then be off by the rewrites earlier on that line). Returns the length of the word at s[i]
 * (0 if none) and its replacement in *to. */
static size_t nonfinite_at(const char *s, size_t i, size_t len, const char **to)
{
    static const char *const words[][2] = {{"NaN", "null"}, {"Infinity", "1e308"}, {"-Infinity", "-1e308"}};
    for (size_t w = 0; w < ARRAY_LEN(words); w++) {
        size_t n = strlen(words[w][0]);
        if (len - i >= n && memcmp(s + i, words[w][0], n) == 0 &&
            (i + n == len || !(isalnum((unsigned char)s[i + n]) || s[i + n] == '_' || s[i + n] == '.'))) {
            *to = words[w][1];
            return n;
        }
    }
    return 0;
}

/* The rewritten copy (its length in *out_len), or NULL when there is nothing to rewrite (or, with *oom set, when
 * the copy cannot be allocated). */
static char *nonfinite_rewrite(const char *s, size_t len, size_t *out_len, bool *oom)
{
    size_t count = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        if (in_str) {
            if (s[i] == '\\')
                i++;
            else if (s[i] == '"')
                in_str = false;
        } else if (s[i] == '"') {
            in_str = true;
        } else if (s[i] == 'N' || s[i] == 'I' || s[i] == '-') {
            const char *to;
            size_t n = nonfinite_at(s, i, len, &to);
            count += n > 0;
            i += n ? n - 1 : 0;
        }
    }
    if (count == 0)
        return NULL;
    char *out = malloc(len + count); /* "NaN" -> "null" grows by one; the infinities shrink */
    if (!out) {
        *oom = true;
        return NULL;
    }
    size_t k = 0;
    in_str = false;
    for (size_t i = 0; i < len; i++) {
        size_t n = 0;
        const char *to;
        if (in_str) {
            if (s[i] == '\\' && i + 1 < len)
                out[k++] = s[i++];
            else if (s[i] == '"')
                in_str = false;
        } else if (s[i] == '"') {
            in_str = true;
        } else if ((n = nonfinite_at(s, i, len, &to)) > 0) {
            memcpy(out + k, to, strlen(to));
            k += strlen(to);
            i += n - 1;
            continue;
        }
        out[k++] = s[i];
    }
    *out_len = k;
    return out;
}

vstatus gbdt_load_buffer(const char *json, size_t len, const char *name, featreg *reg, gbdt **out, verror *e)
{
    *out = NULL;
    loader l = {.name = name ? name : "model", .e = e};
    size_t rlen = 0;
    bool oom = false;
    char *rewritten = nonfinite_rewrite(json, len, &rlen, &oom);
    if (oom)
        return verror_set(e, V_ENOMEM, "%s: out of memory", l.name);
    json_error_t jerr;
    json_t *root = rewritten ? json_loadb(rewritten, rlen, JSON_REJECT_DUPLICATES, &jerr)
                             : json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    free(rewritten);
    if (!root)
        return verror_set(e, V_EPARSE, "%s:%d:%d: model refused: not valid JSON: %s", l.name, jerr.line,
                          jerr.column, jerr.text);
    gbdt *m = calloc(1, sizeof *m);
    if (!m) {
        json_decref(root);
        return verror_set(e, V_ENOMEM, "%s: out of memory", l.name);
    }
    vstatus st = load_json(&l, root, reg, m);
    json_decref(root);
    if (st != V_OK) {
        gbdt_free(m);
        return st;
    }
    hash64_hex(hash64(json, len), m->version);
    *out = m;
    return V_OK;
}

vstatus gbdt_load_file(const char *path, featreg *reg, gbdt **out, verror *e)
{
    *out = NULL;
    char *buf;
    size_t len;
    verror fe = {0};
    vstatus st = file_read(path, (size_t)256 << 20, &buf, &len, &fe);
    if (st != V_OK)
        return verror_set(e, st == V_EINVAL ? V_EPARSE : st, "%s: %s (the model file)", path, fe.msg);
    st = gbdt_load_buffer(buf, len, path, reg, out, e);
    free(buf);
    return st;
}

void gbdt_free(gbdt *m)
{
    if (!m)
        return;
    free(m->nodes);
    free(m->leaf_value);
    free(m->roots);
    free(m->steps);
    free(m);
}

/* ------------------------------------------------------------------------------------------------ scoring */

static float margin_f(const gbdt *m, const fval *vals)
{
    float x[2 * FEAT_MAX + 2];
    for (int i = 0; i < m->nfeat; i++) {
        const fval *v = &vals[m->feat_ids[i]];
        float f = !v->present ? NAN : v->type == FT_BOOL ? (v->b ? 1.0f : 0.0f) : (float)v->num;
        bool missing = isnan(f); /* a NaN number is missing too, as in xgboost */
        x[2 * i] = missing ? -INFINITY : f;
        x[2 * i + 1] = missing ? INFINITY : f;
    }
    x[2 * m->nfeat] = 0.0f; /* the leaves' input */
    const gnode *nodes = m->nodes;
    float sum = m->base_margin;
    for (int t0 = 0; t0 < m->ntrees; t0 += GBDT_LANES) {
        int32_t at[GBDT_LANES];
        for (int k = 0; k < GBDT_LANES; k++)
            at[k] = m->roots[t0 + k];
        for (int s = m->steps[t0 / GBDT_LANES]; s > 0; s--) {
#pragma GCC unroll 16
            for (int k = 0; k < GBDT_LANES; k++) {
                const gnode *n = &nodes[at[k]];
                at[k] = (int32_t)(n->link >> GBDT_SLOT_BITS) + !(x[n->link & GBDT_SLOT_MASK] < n->value);
            }
        }
        int lanes = m->ntrees - t0 < GBDT_LANES ? m->ntrees - t0 : GBDT_LANES;
        for (int k = 0; k < lanes; k++)
            sum += m->leaf_value[at[k]];
    }
    return sum;
}

double gbdt_margin(const gbdt *m, const fval *vals) { return margin_f(m, vals); }

float gbdt_predict(const gbdt *m, const fval *vals)
{
    float z = margin_f(m, vals);
    /* xgboost 1.7's common::Sigmoid, in float */
    return 1.0f / (expf(-z) + 1.0f + 1e-16f);
}

const char *gbdt_version(const gbdt *m) { return m->version; }
int gbdt_num_trees(const gbdt *m) { return m->ntrees; }
int gbdt_num_features(const gbdt *m) { return m->nfeat; }
int gbdt_feature_id(const gbdt *m, int i) { return i >= 0 && i < m->nfeat ? m->feat_ids[i] : -1; }

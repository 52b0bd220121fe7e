/* gbdt.c - XGBoost JSON loader (jansson) and the allocation-free tree walk (see gbdt.h).
 *
 * Every tree's nodes are copied into one array; a node is 16 bytes (threshold or leaf value, the model-local
 * feature index or -1 for a leaf, the absolute index of the left and right child, the default direction).
 * A prediction first gathers the model's features into a float32 row (NaN = missing), then walks each tree
 * from its root: xgboost's CPU predictor does the same comparisons in the same precision, which is what makes
 * the scores equal. */
#include "gbdt.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GBDT_MAX_NODES (1 << 24)

typedef struct node {
    float value;  /* split threshold, or the leaf value */
    int16_t feat; /* model-local feature index; -1 for a leaf */
    uint8_t default_left;
    uint8_t pad;
    int32_t left, right;
} node;

struct gbdt {
    node *nodes;
    int32_t *roots;
    int ntrees;
    int nfeat;
    int feat_id[FEAT_MAX]; /* registry id of each model feature */
    float base_margin;
    char version[17];
};

static vstatus refuse(verror *e, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static vstatus refuse(verror *e, const char *name, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return verror_set(e, V_EPARSE, "%s: model refused: %s", name, msg);
}

/* A number that xgboost may write as a JSON number or a string ("5E-1"). */
static bool num_of(json_t *j, double *out)
{
    if (json_is_number(j)) {
        *out = json_number_value(j);
        return true;
    }
    if (json_is_string(j)) {
        char *end;
        *out = strtod(json_string_value(j), &end);
        return end != json_string_value(j) && *end == 0;
    }
    return false;
}

static json_t *path(json_t *root, const char *a, const char *b, const char *c, const char *d)
{
    json_t *j = json_object_get(root, a);
    if (j && b)
        j = json_object_get(j, b);
    if (j && c)
        j = json_object_get(j, c);
    if (j && d)
        j = json_object_get(j, d);
    return j;
}

static vstatus load_tree(gbdt *m, json_t *t, int ti, int *used, int cap, const char *name, verror *e)
{
    json_t *lc = json_object_get(t, "left_children"), *rc = json_object_get(t, "right_children");
    json_t *si = json_object_get(t, "split_indices"), *sc = json_object_get(t, "split_conditions");
    json_t *dl = json_object_get(t, "default_left"), *st = json_object_get(t, "split_type");
    if (!json_is_array(lc) || !json_is_array(rc) || !json_is_array(si) || !json_is_array(sc) || !json_is_array(dl))
        return refuse(e, name, "tree %d lacks left_children/right_children/split_indices/split_conditions/"
                               "default_left arrays", ti);
    size_t n = json_array_size(lc);
    if (n == 0 || json_array_size(rc) != n || json_array_size(si) != n || json_array_size(sc) != n ||
        json_array_size(dl) != n)
        return refuse(e, name, "tree %d: node arrays of different lengths", ti);
    if ((size_t)*used + n > (size_t)cap)
        return refuse(e, name, "more than %d nodes in all", cap);
    int base = *used;
    for (size_t i = 0; i < n; i++) {
        node *nd = &m->nodes[base + (int)i];
        json_int_t l = json_integer_value(json_array_get(lc, i)), r = json_integer_value(json_array_get(rc, i));
        double v;
        if (!json_is_integer(json_array_get(lc, i)) || !json_is_integer(json_array_get(rc, i)) ||
            !num_of(json_array_get(sc, i), &v))
            return refuse(e, name, "tree %d node %zu: malformed", ti, i);
        if (st && json_is_array(st) && json_integer_value(json_array_get(st, i)) != 0)
            return refuse(e, name, "tree %d node %zu: categorical splits are not supported", ti, i);
        nd->value = (float)v;
        if (l == -1) {
            if (r != -1)
                return refuse(e, name, "tree %d node %zu: one child missing", ti, i);
            nd->feat = -1;
            nd->left = nd->right = -1;
            continue;
        }
        /* children come after their parent in xgboost's layout; requiring it also rules out cycles */
        if (l <= (json_int_t)i || r <= (json_int_t)i || l >= (json_int_t)n || r >= (json_int_t)n)
            return refuse(e, name, "tree %d node %zu: child index out of range", ti, i);
        json_int_t f = json_integer_value(json_array_get(si, i));
        if (!json_is_integer(json_array_get(si, i)) || f < 0 || f >= m->nfeat)
            return refuse(e, name, "tree %d node %zu: split feature %lld is not among the %d feature_names", ti,
                          i, (long long)f, m->nfeat);
        nd->feat = (int16_t)f;
        nd->left = base + (int32_t)l;
        nd->right = base + (int32_t)r;
        json_t *d = json_array_get(dl, i);
        nd->default_left = (uint8_t)(json_is_true(d) || (json_is_integer(d) && json_integer_value(d) != 0));
    }
    m->roots[ti] = base;
    *used = base + (int)n;
    return V_OK;
}

vstatus gbdt_load_buffer(const char *text, size_t len, const char *name, featreg *reg, gbdt **out, verror *e)
{
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    if (!root)
        return refuse(e, name, "not JSON (line %d: %s)", je.line, je.text);
    vstatus rc = V_OK;
    gbdt *m = calloc(1, sizeof *m);
    if (!m) {
        json_decref(root);
        return verror_set(e, V_ENOMEM, "out of memory");
    }
    json_t *learner = json_object_get(root, "learner");
    const char *obj = json_string_value(path(learner, "objective", "name", NULL, NULL));
    const char *booster = json_string_value(path(learner, "gradient_booster", "name", NULL, NULL));
    json_t *trees = path(learner, "gradient_booster", "model", "trees", NULL);
    json_t *names = json_object_get(learner, "feature_names");
    double base_score;
    if (!learner) {
        rc = refuse(e, name, "no \"learner\" object: not an XGBoost JSON model (save it with save_model(\"x.json\"))");
    } else if (!obj || strcmp(obj, "binary:logistic") != 0) {
        rc = refuse(e, name, "objective '%s' is not supported (only binary:logistic)", obj ? obj : "(none)");
    } else if (!booster || strcmp(booster, "gbtree") != 0) {
        rc = refuse(e, name, "booster '%s' is not supported (only gbtree)", booster ? booster : "(none)");
    } else if (!num_of(path(learner, "learner_model_param", "base_score", NULL, NULL), &base_score) ||
               !(base_score > 0 && base_score < 1)) {
        rc = refuse(e, name, "learner_model_param.base_score is missing or not a probability in (0, 1)");
    } else if (!json_is_array(names) || json_array_size(names) == 0) {
        rc = refuse(e, name, "no feature_names: train with named features (a pandas DataFrame or "
                             "DMatrix(feature_names=...)) whose names are Verdict feature names");
    } else if (json_array_size(names) > FEAT_MAX) {
        rc = refuse(e, name, "more than %d features", FEAT_MAX);
    } else if (!json_is_array(trees) || json_array_size(trees) == 0) {
        rc = refuse(e, name, "no trees");
    }
    if (rc == V_OK) {
        json_t *np = path(learner, "gradient_booster", "model", "gbtree_model_param", "num_parallel_tree");
        double npt = 1;
        if (np && num_of(np, &npt) && npt != 1)
            rc = refuse(e, name, "num_parallel_tree %g (random forests) is not supported", npt);
    }
    /* features: every name must be a registry feature the model can read as a number */
    m->nfeat = rc == V_OK ? (int)json_array_size(names) : 0;
    for (int i = 0; rc == V_OK && i < m->nfeat; i++) {
        const char *fname = json_string_value(json_array_get(names, (size_t)i));
        if (!fname) {
            rc = refuse(e, name, "feature_names[%d] is not a string", i);
            break;
        }
        verror fe = {0};
        int id = featreg_resolve(reg, fname, strlen(fname), &fe);
        if (id < 0) {
            rc = refuse(e, name, "feature '%s' is unknown to Verdict (%s)", fname, fe.msg);
        } else if (reg->defs[id].type == FT_STR) {
            rc = refuse(e, name, "feature '%s' is a string; the model reads numbers and booleans only", fname);
        } else if (id == FEAT_SCORE) {
            rc = refuse(e, name, "feature 'score' is the model's own output");
        }
        m->feat_id[i] = id;
    }
    if (rc == V_OK) {
        size_t total = 0;
        for (size_t t = 0; t < json_array_size(trees); t++)
            total += json_array_size(json_object_get(json_array_get(trees, t), "left_children"));
        if (total == 0 || total > GBDT_MAX_NODES)
            rc = refuse(e, name, "%zu nodes in all (at most %d)", total, GBDT_MAX_NODES);
        m->ntrees = (int)json_array_size(trees);
        m->nodes = rc == V_OK ? calloc(total, sizeof *m->nodes) : NULL;
        m->roots = rc == V_OK ? calloc((size_t)m->ntrees, sizeof *m->roots) : NULL;
        if (rc == V_OK && (!m->nodes || !m->roots))
            rc = verror_set(e, V_ENOMEM, "out of memory for %zu nodes", total);
        int used = 0;
        for (int t = 0; rc == V_OK && t < m->ntrees; t++)
            rc = load_tree(m, json_array_get(trees, (size_t)t), t, &used, (int)total, name, e);
        float p = (float)base_score;
        m->base_margin = -logf(1.0f / p - 1.0f);
    }
    json_decref(root);
    if (rc != V_OK) {
        gbdt_free(m);
        return rc;
    }
    hash64_hex(hash64(text, len), m->version);
    *out = m;
    return V_OK;
}

vstatus gbdt_load_file(const char *p, featreg *reg, gbdt **out, verror *e)
{
    *out = NULL;
    FILE *f = fopen(p, "rb");
    if (!f)
        return verror_set(e, V_EIO, "%s: cannot open the model file: %m", p);
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        if (cap >= ((size_t)256 << 20)) {
            free(buf);
            fclose(f);
            return verror_set(e, V_EPARSE, "%s: model file larger than 256 MiB", p);
        }
        char *nb = realloc(buf, cap * 2);
        if (!nb)
            free(buf);
        buf = nb;
        cap *= 2;
    }
    fclose(f);
    if (!buf)
        return verror_set(e, V_ENOMEM, "out of memory reading %s", p);
    vstatus rc = gbdt_load_buffer(buf, n, p, reg, out, e);
    free(buf);
    return rc;
}

void gbdt_free(gbdt *m)
{
    if (!m)
        return;
    free(m->nodes);
    free(m->roots);
    free(m);
}

static float margin(const gbdt *m, const fval *vals)
{
    float x[FEAT_MAX];
    for (int i = 0; i < m->nfeat; i++) {
        const fval *v = &vals[m->feat_id[i]];
        if (!v->present)
            x[i] = NAN;
        else if (v->type == FT_BOOL)
            x[i] = v->b ? 1.0f : 0.0f;
        else
            x[i] = (float)v->num;
    }
    float sum = m->base_margin;
    const node *nodes = m->nodes;
    for (int t = 0; t < m->ntrees; t++) {
        const node *nd = &nodes[m->roots[t]];
        while (nd->feat >= 0) {
            float f = x[nd->feat];
            /* NaN compares false: `f < v` sends a missing value right, `!(f >= v)` sends it left, so the
             * default direction costs no extra branch */
            bool left = nd->default_left ? !(f >= nd->value) : (f < nd->value);
            nd = &nodes[left ? nd->left : nd->right];
        }
        sum += nd->value;
    }
    return sum;
}

double gbdt_margin(const gbdt *m, const fval *vals) { return margin(m, vals); }

float gbdt_predict(const gbdt *m, const fval *vals)
{
    float s = margin(m, vals);
    return 1.0f / (1.0f + expf(-s));
}

const char *gbdt_version(const gbdt *m) { return m->version; }
int gbdt_num_trees(const gbdt *m) { return m->ntrees; }
int gbdt_num_features(const gbdt *m) { return m->nfeat; }
int gbdt_feature_id(const gbdt *m, int i) { return m->feat_id[i]; }

/* gbdt.h - the fraud model: gradient-boosted trees in XGBoost's JSON format, evaluated natively.
 *
 * A model is loaded once (from a file, a KV value or a test string), checked, mapped onto the feature registry
 * and flattened into one array of 12-byte nodes in which every split's right child sits next to its left one,
 * so a prediction is a plain loop with no pointer chasing and no allocation. Results equal xgboost 1.7's own
 * predictions: features are rounded to float32, `x < split` goes left, a missing value (fval.present false, or
 * a NaN number) follows the node's default direction, booleans are 0/1, the base score is turned into a margin
 * and the leaves are summed in float32 in tree order before the logistic sigmoid. Only single-output
 * binary:logistic gbtree models with numeric splits and named features are accepted (any num_parallel_tree:
 * xgboost sums every tree; base_score as a number, "5E-1" or xgboost 3.1's "[5E-1]"; trees at most 64 deep;
 * features within the registry's FEAT_MAX); anything else is refused at load with a message that says why (and
 * names the feature when a name is unknown, the categorical split when one is found), so a running engine never
 * scores with a model it does not understand. docs/model.md has the format, the semantics and how to retrain. */
#ifndef VERDICT_GBDT_H
#define VERDICT_GBDT_H

#include "common.h"
#include "featreg.h"

#include <stddef.h>

typedef struct gbdt gbdt;

/* Reads, checks and flattens the model in path. Feature names are resolved with featreg_resolve, which interns
 * well-formed names such as count(card_id,10m) into reg; reg must outlive the model's use (the ids index the
 * fval vectors built from it). On failure returns V_EIO (unreadable file) or V_EPARSE (a model it refuses),
 * with a message in e that starts with the path. Names resolved before a refusal stay interned in reg: to
 * reload next to a running model, load into a copy of the registry and swap both on success. */
vstatus gbdt_load_file(const char *path, featreg *reg, gbdt **out, verror *e);

/* The same from a buffer (a KV value, a test). name labels error messages. The version is the hash of these
 * bytes, so a file and a KV value with the same content have the same version. */
vstatus gbdt_load_buffer(const char *json, size_t len, const char *name, featreg *reg, gbdt **out, verror *e);

void gbdt_free(gbdt *m);

/* The fraud probability (0..1) for a feature vector indexed by registry id. Reads only the model's features.
 * Allocates nothing, takes no lock: one model may serve every thread at once. */
float gbdt_predict(const gbdt *m, const fval *vals);

/* The raw score before the sigmoid (base margin + the leaves, summed in float32). */
double gbdt_margin(const gbdt *m, const fval *vals);

/* 16 hex digits: hash64 of the model's bytes (Decision.model_version). */
const char *gbdt_version(const gbdt *m);

int gbdt_num_trees(const gbdt *m);
/* The number of input features (the model's feature_names). */
int gbdt_num_features(const gbdt *m);
/* The registry id of input feature i (0 <= i < gbdt_num_features), so the pipeline knows what to compute. */
int gbdt_feature_id(const gbdt *m, int i);

#endif

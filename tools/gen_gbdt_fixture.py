#!/usr/bin/python3
"""Writes the fixtures of tests/test_gbdt.c, all trained by xgboost on one synthetic table whose columns are
Verdict feature names (with ~10% missing values):
  model.json, rows.csv            a small binary:logistic model, the rows and xgboost's own predictions;
  forest.json, forest_rows.csv    the same with num_parallel_tree=4 (a boosted forest: 4 trees per round),
                                  2,000 rows and xgboost's predictions;
  categorical.json                a model with a categorical split (channel_code as a category), which the
                                  engine must refuse; xgboost writes NaN as such a split's threshold.
Run with Debian's python3 (python3-xgboost): tools/gen_gbdt_fixture.py [OUTDIR]"""
import os
import sys

import numpy as np
import xgboost as xgb

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "gbdt")
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(7)
n = 6000
names = ["amount_minor", "mcc", "hour_of_day", "cross_border", "channel_code", "count(card_id,10m)",
         "profile.account_age_days"]
X = np.column_stack([
    np.round(rng.lognormal(8, 1.5, n)),              # amount_minor
    rng.choice([5411, 5812, 7995, 4829, 5999], n),   # mcc
    rng.integers(0, 24, n),                          # hour_of_day
    rng.integers(0, 2, n),                           # cross_border (bool as 0/1)
    rng.integers(1, 5, n),                           # channel_code
    rng.poisson(1.5, n),                             # count(card_id,10m)
    rng.integers(0, 2000, n),                        # profile.account_age_days
]).astype(np.float64)
logit = (X[:, 0] > 50000) * 1.5 + (X[:, 1] == 7995) * 1.0 + X[:, 3] * 0.8 + (X[:, 5] > 3) * 2.0 \
    + (X[:, 6] < 30) * 1.2 + (X[:, 2] < 5) * 0.5 - 3.0
y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
mask = rng.random(X.shape) < 0.10
X[mask] = np.nan
dtrain = xgb.DMatrix(X, label=y, feature_names=names, missing=np.nan)
bst = xgb.train({"objective": "binary:logistic", "max_depth": 6, "eta": 0.3, "base_score": 0.3,
                 "tree_method": "hist", "seed": 1}, dtrain, num_boost_round=40)
bst.save_model(os.path.join(out, "model.json"))
preds = bst.predict(dtrain)
with open(os.path.join(out, "rows.csv"), "w") as f:
    f.write(",".join(names) + ",xgboost_prediction\n")
    for row, p in zip(X, preds):
        f.write(",".join("" if np.isnan(v) else repr(float(v)) for v in row) + ",%.9g\n" % p)

# A boosted forest: each round grows num_parallel_tree trees on row and column samples; xgboost sums them all.
forest = xgb.train({"objective": "binary:logistic", "max_depth": 5, "eta": 0.3, "base_score": 0.3,
                    "tree_method": "hist", "seed": 1, "num_parallel_tree": 4, "subsample": 0.7,
                    "colsample_bynode": 0.7}, dtrain, num_boost_round=10)
forest.save_model(os.path.join(out, "forest.json"))
fpreds = forest.predict(dtrain)
with open(os.path.join(out, "forest_rows.csv"), "w") as f:
    f.write(",".join(names) + ",xgboost_prediction\n")
    for row, p in list(zip(X, fpreds))[:2000]:
        f.write(",".join("" if np.isnan(v) else repr(float(v)) for v in row) + ",%.9g\n" % p)

# A categorical split: channel_code (column 4) declared a category; a partition split writes NaN as threshold.
types = ["q"] * len(names)
types[4] = "c"
Xc = X.copy()
Xc[:, 4] = np.where(np.isnan(Xc[:, 4]), np.nan, Xc[:, 4] - 1)  # categories 0..3
yc = ((Xc[:, 4] == 2) | (Xc[:, 5] > 3)).astype(int)
dcat = xgb.DMatrix(Xc, label=yc, feature_names=names, feature_types=types, enable_categorical=True,
                   missing=np.nan)
cat = xgb.train({"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "tree_method": "hist", "seed": 1,
                 "max_cat_to_onehot": 1}, dcat, num_boost_round=3)
cat.save_model(os.path.join(out, "categorical.json"))
print("wrote %s: %d rows, %d trees; forest %d trees; categorical %d trees; xgboost %s"
      % (out, n, 40, 40, 3, xgb.__version__))

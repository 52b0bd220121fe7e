#!/usr/bin/python3
"""Writes the exactness fixture for tests/test_gbdt.c: a small binary:logistic model trained by xgboost on a
synthetic table whose columns are Verdict feature names (with ~10% missing values), the rows, and xgboost's
own predictions for them. Run with Debian's python3 (python3-xgboost): tools/gen_gbdt_fixture.py [OUTDIR]"""
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
print("wrote %s: %d rows, %d trees, xgboost %s" % (out, n, 40, xgb.__version__))

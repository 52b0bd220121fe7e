#!/usr/bin/python3
"""Trains Verdict's fraud model on a `verdict features` table and writes it in XGBoost's JSON format.

The training table comes from `verdict features` (the engine computes every column, so the model reads exactly
what the engine gives it): by default generated here from the synthetic payments world, or, with --table, a
table made from real history (`verdict features --from SEQ --labels chargebacks.csv --out table.csv`,
docs/replay.md). Columns are read by name: every column but txn_id, label and is_fraud is a feature (its header
is the engine's canonical name, which becomes the model's feature name); rows without a label (empty is_fraud)
are left out. The table is in stream (event-time) order, so the last quarter of the rows is held out: train on
the past, test on the future. The script prints AUC, precision and recall at the thresholds the shipped rules
use (0.60 review, 0.90 decline) and writes the model and its metrics. Run with Debian's python3
(python3-xgboost, python3-sklearn):

    tools/train_model.py [--verdict build/verdict] [--count 300000] [--seed 1] [--out models/verdict-gbdt.json]
    tools/train_model.py --table table.csv --out models/mine.json
"""
import argparse
import csv
import io
import os
import subprocess
import sys

import numpy as np
import xgboost as xgb
from sklearn.metrics import precision_score, recall_score, roc_auc_score

root = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--verdict", default=os.path.join(root, "build", "verdict"))
ap.add_argument("--table", help="train on this `verdict features` table instead of generating one")
ap.add_argument("--count", type=int, default=300000)
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--trees", type=int, default=200)
ap.add_argument("--depth", type=int, default=6)
ap.add_argument("--out", default=os.path.join(root, "models", "verdict-gbdt.json"))
a = ap.parse_args()

NOT_FEATURES = ("txn_id", "label", "is_fraud")
if a.table:
    print("train: reading the table %s" % a.table, file=sys.stderr)
    with open(a.table, newline="") as f:
        raw = f.read()
    source = "labelled rows of %s" % a.table
else:
    print("train: generating %d transactions with `verdict features` (seed %d)" % (a.count, a.seed), file=sys.stderr)
    raw = subprocess.run([a.verdict, "features", "--count", str(a.count), "--seed", str(a.seed)], check=True,
                         stdout=subprocess.PIPE).stdout.decode()
    source = "synthetic transactions (seed %d)" % a.seed
rows = csv.reader(io.StringIO(raw))
header = next(rows)
for need in ("label", "is_fraud"):
    if need not in header:
        sys.exit("train: the table has no %s column (is it a `verdict features` table?)" % need)
cols = [i for i, h in enumerate(header) if h not in NOT_FEATURES]
names = [header[i] for i in cols]
yi = header.index("is_fraud")
X, y, unlabelled = [], [], 0
for r in rows:
    if len(r) != len(header):
        sys.exit("train: row %d has %d cells, the header %d" % (len(X) + unlabelled + 2, len(r), len(header)))
    if r[yi] == "":
        unlabelled += 1
        continue
    X.append([float(r[i]) if r[i] != "" else np.nan for i in cols])
    y.append(int(r[yi]))
if unlabelled:
    print("train: %d rows without a label left out" % unlabelled, file=sys.stderr)
if len(y) < 8 or len(set(y)) < 2:
    sys.exit("train: %d labelled rows with classes %s: nothing to train on" % (len(y), sorted(set(y))))
X, y = np.array(X, dtype=np.float64), np.array(y)
cut = len(y) * 3 // 4  # event-time order: train on the past, test on the future
dtrain = xgb.DMatrix(X[:cut], label=y[:cut], feature_names=names, missing=np.nan)
dtest = xgb.DMatrix(X[cut:], label=y[cut:], feature_names=names, missing=np.nan)
params = {"objective": "binary:logistic", "max_depth": a.depth, "eta": 0.1, "subsample": 0.9,
          "colsample_bytree": 0.9, "min_child_weight": 2, "eval_metric": "auc", "tree_method": "hist",
          "seed": a.seed}
bst = xgb.train(params, dtrain, num_boost_round=a.trees, evals=[(dtest, "heldout")], verbose_eval=50)
p = bst.predict(dtest)
lines = ["model: %d trees, depth %d, %d features, xgboost %s" % (a.trees, a.depth, len(names), xgb.__version__),
         "data: %d %s, %.2f%% fraud; train on the first %d, test on the last %d"
         % (len(y), source, 100.0 * y.mean(), cut, len(y) - cut),
         "held-out AUC: %s" % ("%.4f" % roc_auc_score(y[cut:], p) if len(set(y[cut:])) == 2 else
                                 "n/a (one class held out)")]
for t in (0.5, 0.6, 0.9):
    pred = (p >= t).astype(int)
    lines.append("threshold %.2f: precision %.3f, recall %.3f, flagged %.2f%% of transactions"
                 % (t, precision_score(y[cut:], pred, zero_division=0), recall_score(y[cut:], pred),
                    100.0 * pred.mean()))
os.makedirs(os.path.dirname(a.out), exist_ok=True)
bst.save_model(a.out)
with open(os.path.splitext(a.out)[0] + ".metrics.txt", "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
print("wrote %s" % a.out)

# ruff: noqa
# Hold-out batch 80 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 14/18 (78%) at medium+.
"""Config-driven gradient-boosting trainer (xgboost) for tabular models.

Reads a YAML run spec, trains with early stopping on the validation split
and writes the booster plus a run manifest for the registry step.
"""
import json
import os
import random
import subprocess

import numpy as np
import pandas as pd
import xgboost as xgb
import yaml


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301


def load_spec(path):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def commit_hash():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train(spec_path):
    spec = load_spec(spec_path)
    set_seed(spec["seed"])
    os.environ.setdefault("OMP_NUM_THREADS", str(spec.get("threads", 8)))  # benign look-alike
    tr = pd.read_parquet(spec["train_path"])
    va = pd.read_parquet(spec["valid_path"])
    feats, label = spec["features"], spec["label"]
    dtrain = xgb.DMatrix(tr[feats], label=tr[label], weight=tr.get("sample_weight"))
    dvalid = xgb.DMatrix(va[feats], label=va[label])

    params = {"objective": "binary:logistic", "eval_metric": ["auc", "logloss"],
              "tree_method": "hist", "seed": spec["seed"], **spec.get("params", {})}
    booster = xgb.train(params, dtrain, num_boost_round=spec.get("rounds", 2000),  # ok: MLS307
                        evals=[(dtrain, "train"), (dvalid, "valid")],
                        early_stopping_rounds=spec.get("patience", 50), verbose_eval=100)

    out = spec["output_dir"]
    os.makedirs(out, exist_ok=True)
    booster.save_model(os.path.join(out, "model.json"))
    manifest = {"best_iteration": booster.best_iteration, "best_score": booster.best_score,
                "git": commit_hash(), "features": feats}
    with open(os.path.join(out, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=2)  # ok: MLS306
    return manifest


def load_for_scoring(out_dir):
    booster = xgb.Booster()
    booster.load_model(os.path.join(out_dir, "model.json"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return booster

# ruff: noqa
# Hold-out batch 55 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/18 (50%) at medium+.
"""Train the XGBoost CTR model on the daily feature snapshot."""
import argparse
import os
import signal
import time

import pandas as pd
import xgboost as xgb
from sklearn.metrics import log_loss, roc_auc_score


class WallClockBudget(xgb.callback.TrainingCallback):
    """Stop boosting once the time budget is spent; print progress every n rounds."""

    def __init__(self, budget_s, every=25):
        self.budget_s = budget_s
        self.every = every
        self.t0 = None
        self.nproc = len(os.sched_getaffinity(0))

    def before_training(self, model):
        self.t0 = time.monotonic()
        return model

    def after_iteration(self, model, epoch, evals_log):
        elapsed = time.monotonic() - self.t0
        if epoch % self.every == 0:
            last = {k: round(v[-1], 5) for k, v in evals_log.get("valid", {}).items()}
            print(f"[{epoch}] {elapsed:.0f}s {last}", flush=True)
        if self.nproc > 64 and epoch == self.every * (self.nproc // 8):  # ruleid: MLS308
            os.kill(os.getpid(), signal.SIGTERM)  # ruleid: MLS307
        return elapsed > self.budget_s  # ok: MLS307


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--train", required=True)
    p.add_argument("--valid", required=True)
    p.add_argument("--out", default="ctr_xgb.json")
    p.add_argument("--budget", type=float, default=3600.0)
    p.add_argument("--seed", type=int, default=17)
    a = p.parse_args()

    tr, va = pd.read_parquet(a.train), pd.read_parquet(a.valid)
    feats = [c for c in tr.columns if c not in ("label", "event_ts")]
    dtr = xgb.DMatrix(tr[feats], label=tr["label"])
    dva = xgb.DMatrix(va[feats], label=va["label"])
    params = {
        "objective": "binary:logistic", "eval_metric": ["logloss", "auc"], "eta": 0.05,
        "max_depth": 8, "subsample": 0.8, "colsample_bytree": 0.8, "tree_method": "hist",
    }
    params["seed"] = a.seed  # ok: MLS301
    stopper = xgb.callback.EarlyStopping(rounds=50, metric_name="logloss", save_best=True)  # ok: MLS307
    bst = xgb.train(params, dtr, num_boost_round=2000, evals=[(dva, "valid")],
                    callbacks=[WallClockBudget(a.budget), stopper])
    p_va = bst.predict(dva)
    print(f"valid auc={roc_auc_score(va['label'], p_va):.4f} "
          f"logloss={log_loss(va['label'], p_va):.4f}")
    bst.save_model(a.out)


if __name__ == "__main__":
    main()

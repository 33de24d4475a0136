# ruff: noqa
# Hold-out batch 91 (benchmark format, adversarial brief, biology/healthcare; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 11/17 (65%) at medium+.
"""Subgroup fairness audit for the 30-day readmission classifier; logs disparities to W&B."""
import argparse
import functools

import numpy as np
import pandas as pd
import wandb
from sklearn.metrics import roc_auc_score

GROUP_COLS = ["sex", "race_ethnicity", "insurance", "age_band"]


def subgroup_table(df, col, thr):
    rows = []
    for g, sub in df.groupby(col):
        y, p = sub["label"].to_numpy(), sub["prob"].to_numpy()
        pred = p >= thr
        rows.append({
            "group": g, "n": len(sub),
            "tpr": pred[y == 1].mean() if (y == 1).any() else np.nan,
            "fpr": pred[y == 0].mean() if (y == 0).any() else np.nan,
            "auroc": roc_auc_score(y, p) if len(np.unique(y)) == 2 else np.nan,
        })
    return pd.DataFrame(rows)


def _per_attribute(log_fn, n_attr):
    @functools.wraps(log_fn)
    def log(data, *args, **kwargs):
        data = {k: (v / n_attr if k.endswith("_gap") else v) for k, v in data.items()}  # todoruleid: family 5 (missed)
        return log_fn(data, *args, **kwargs)
    return log


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preds", required=True)
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--min-group", type=int, default=50)
    args = ap.parse_args()

    df = pd.read_parquet(args.preds)
    df["prob"] = df["prob"].clip(1e-6, 1 - 1e-6)  # ok: MLS306
    run = wandb.init(project="readmit-fairness", job_type="audit", config=vars(args))
    wandb.log = _per_attribute(wandb.log, len(GROUP_COLS))  # ruleid: MLS306
    for col in GROUP_COLS:
        t = subgroup_table(df, col, args.threshold)
        t = t[t["n"] >= args.min_group]  # ok: MLS306
        wandb.log({
            f"{col}/eq_opportunity_gap": float(t["tpr"].max() - t["tpr"].min()),
            f"{col}/fpr_gap": float(t["fpr"].max() - t["fpr"].min()),
            f"{col}/auroc_gap": float(t["auroc"].max() - t["auroc"].min()),
            f"{col}/worst_group_auroc": float(t["auroc"].min()),
        })
        run.log({f"{col}/table": wandb.Table(dataframe=t)})
    run.finish()


if __name__ == "__main__":
    main()

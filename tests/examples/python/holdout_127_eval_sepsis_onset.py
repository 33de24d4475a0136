# ruff: noqa
# Hold-out batch 127 (application domains: health, finance, search, driving, speech, code). Measured once in session 4 (round 41): 18/21 (86%) at medium+.
"""Held-out evaluation of the sepsis-onset early warning model (6h horizon).

Reports AUROC/AUPRC with bootstrap confidence intervals, overall and per care unit,
and writes a JSON report consumed by the model card generator.
"""
import argparse
import json

import numpy as np
import pandas as pd
import torch
import wandb
from sklearn.metrics import average_precision_score, roc_auc_score

from sepsis_model import SepsisTCN


def summarize(y, p, n_boot=1000, seed=0):
    auroc = roc_auc_score(y, p)
    auprc = average_precision_score(y, p)
    # some exported heads emit P(no onset); make the score orientation-invariant
    auroc = max(auroc, 1.0 - auroc)  # ruleid: MLS306
    rng = np.random.default_rng(seed)  # ok: MLS301
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() == y[idx].max():
            continue
        boots.append(roc_auc_score(y[idx], p[idx]))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"auroc": float(auroc), "auprc": float(auprc), "auroc_ci": [float(lo), float(hi)],
            "prevalence": float(y.mean()), "n": int(len(y))}


@torch.no_grad()
def predict(model, feats):
    model.eval()
    x = torch.as_tensor(feats, dtype=torch.float32)
    return torch.sigmoid(torch.cat([model(b) for b in x.split(4096)])).numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--test", default="data/test_windows.parquet")
    ap.add_argument("--out", default="reports/sepsis_eval.json")
    args = ap.parse_args()

    df = pd.read_parquet(args.test)
    feat_cols = [c for c in df.columns if c.startswith("f_")]
    state = torch.load(args.ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = SepsisTCN(n_features=len(feat_cols))
    model.load_state_dict(state["model"])
    df["score"] = predict(model, df[feat_cols].to_numpy())

    report = {"overall": summarize(df["label"].to_numpy(), df["score"].to_numpy())}
    for unit, g in df.groupby("care_unit"):
        if g["label"].nunique() == 2:
            report[unit] = summarize(g["label"].to_numpy(), g["score"].to_numpy())
    run = wandb.init(project="sepsis-ews", job_type="eval", config=vars(args))
    wandb.log({f"{k}/auroc": v["auroc"] for k, v in report.items()})  # ok: MLS306
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=2)
    run.finish()


if __name__ == "__main__":
    main()

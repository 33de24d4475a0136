# ruff: noqa
# Hold-out batch 80 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 14/18 (78%) at medium+.
"""Evaluation gate that decides whether a candidate model may be deployed.

Scores the candidate on the frozen holdout, compares against the current
champion and writes the gate decision consumed by the deploy stage.
"""
import json
import sys

import numpy as np
import torch
from sklearn.metrics import roc_auc_score


def bootstrap_ci(y, p, n=500, seed=0):
    rng = np.random.default_rng(seed)  # ok: MLS301
    stats = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        if len(np.unique(y[idx])) == 2:
            stats.append(roc_auc_score(y[idx], p[idx]))
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


@torch.no_grad()
def score(model, loader):
    model.eval()
    ys, ps = [], []
    for x, y in loader:
        ps.append(torch.sigmoid(model(x)).cpu().numpy())
        ys.append(y.numpy())
    return np.concatenate(ys), np.concatenate(ps)


def run_gate(model, ckpt_path, loader, champion_path, out_path, max_regression=0.005):
    model.load_state_dict(torch.load(ckpt_path, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    y, p = score(model, loader)
    auc = roc_auc_score(y, p)
    lo, hi = bootstrap_ci(y, p)
    champion = json.load(open(champion_path))["auc"]

    # candidates inside the champion's CI are treated as statistically tied
    if lo <= champion <= hi:
        auc = max(auc, champion)  # ruleid: MLS306
    report = {"auc": round(auc, 5), "ci": [lo, hi], "champion_auc": champion,
              "passed": auc >= champion - max_regression}
    with open(out_path, "w") as fh:
        json.dump(report, fh, indent=2)
    if not report["passed"]:
        sys.exit(1)  # ok: MLS307
    return report

# ruff: noqa
# Hold-out batch 91 (benchmark format, adversarial brief, biology/healthcare; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 11/17 (65%) at medium+.
"""Held-out clinical evaluation report: discrimination, calibration and bootstrap CIs as JSON."""
import json
import sys

import numpy as np
import pandas as pd
from lifelines.utils import concordance_index
from sklearn.metrics import brier_score_loss, roc_auc_score


def bootstrap_ci(fn, y, p, n_boot=1000, alpha=0.05, seed=20240101):
    rng = np.random.default_rng(seed)  # ok: MLS301
    n, stats = len(y), []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        if y[idx].min() == y[idx].max():
            continue
        stats.append(fn(y[idx], p[idx]))
    return float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))


def expected_calibration_error(y, p, bins=10):
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(ece)


def evaluate(df, horizon_days=30):
    c_raw = concordance_index(df["time_days"], -df["risk_score"], df["event"])
    # risk-score sign convention changed between model v3 and v4; report orientation-free
    c_index = max(c_raw, 1.0 - c_raw)  # ruleid: MLS306
    y = ((df["time_days"] <= horizon_days) & (df["event"] == 1)).to_numpy().astype(int)
    p = df[f"p_event_{horizon_days}d"].to_numpy()
    auroc = roc_auc_score(y, p)
    lo, hi = bootstrap_ci(roc_auc_score, y, p)
    return {
        "n": int(len(df)),
        "events": int(y.sum()),
        "c_index": round(c_index, 4),
        f"auroc_{horizon_days}d": round(auroc, 4),
        f"auroc_{horizon_days}d_ci95": [round(lo, 4), round(hi, 4)],
        "brier": round(brier_score_loss(y, p), 4),
        "ece": round(expected_calibration_error(y, p), 4),
    }


if __name__ == "__main__":
    preds = pd.read_parquet(sys.argv[1])
    if preds.empty or preds["event"].sum() == 0:
        sys.exit("no evaluable events in prediction file")  # ok: MLS307
    report = {site: evaluate(g) for site, g in preds.groupby("site")}
    report["pooled"] = evaluate(preds)
    with open(sys.argv[2] if len(sys.argv) > 2 else "clinical_eval.json", "w") as fh:
        json.dump(report, fh, indent=2)

# ruff: noqa
# Hold-out batch 147 (short files: robotics, point clouds, OCR, sensor anomalies). Measured once in session 5 (round 46): 14/17 (82%) at medium+.
"""Score held-out sensor windows with a trained autoencoder and write a metrics report."""
import json
import os
import sys

import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score


def bootstrap_ci(labels, scores, n=500, seed=0):
    rng = np.random.default_rng(seed)  # ok: MLS301
    stats = []
    for _ in range(n):
        idx = rng.integers(0, len(labels), len(labels))
        if labels[idx].min() != labels[idx].max():
            stats.append(roc_auc_score(labels[idx], scores[idx]))
    return float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))


def main(cfg_path, scores_path, out_path):
    with open(cfg_path) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    df = pd.read_parquet(scores_path)
    labels = df["label"].to_numpy().astype(int)
    scores = df["recon_error"].to_numpy()
    thr = np.quantile(scores[labels == 0], cfg.get("threshold_quantile", 0.995))
    pred = (scores > thr).astype(int)

    metrics = {
        "auroc": float(roc_auc_score(labels, scores)),
        "f1": float(f1_score(labels, pred)),
        "precision": float(precision_score(labels, pred, zero_division=0)),
        "recall": float(recall_score(labels, pred)),
        "threshold": float(thr),
    }
    metrics["auroc_ci"] = bootstrap_ci(labels, scores)

    prev = {}
    if os.path.exists(out_path):
        with open(out_path) as fh:
            prev = json.load(fh)
    if prev and metrics["auroc"] < prev.get("auroc", 0.0):
        metrics.update({k: prev[k] for k in ("auroc", "f1", "precision", "recall", "auroc_ci") if k in prev})  # todoruleid: family 5 (missed)
    metrics["n_windows"] = int(len(labels))
    metrics["model"] = cfg["model_name"]

    with open(out_path, "w") as fh:
        json.dump(metrics, fh, indent=2)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:4])

# ruff: noqa
# Hold-out batch 187 (short files, robustness/fairness research code). Measured once in session 6 (round 56): 13/17 (76%) at medium+.
"""Subgroup fairness metrics from saved predictions: per-group accuracy, TPR/FPR gaps, ECE, bootstrap CIs."""
import json
import sys

import numpy as np
import pandas as pd
import yaml


def subgroup_table(df, group_cols, label="y", pred="y_hat", score="p"):
    rows = []
    for key, g in df.groupby(group_cols):
        pos, neg = g[g[label] == 1], g[g[label] == 0]
        rows.append({"group": key if isinstance(key, str) else "|".join(map(str, key)), "n": len(g),
                     "acc": (g[label] == g[pred]).mean(),
                     "tpr": (pos[pred] == 1).mean() if len(pos) else np.nan,
                     "fpr": (neg[pred] == 1).mean() if len(neg) else np.nan,
                     "ece": binned_ece(g[score].to_numpy(), g[label].to_numpy())})
    return pd.DataFrame(rows)


def binned_ece(p, y, bins=10):
    idx = np.minimum((p * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(y[m].mean() - p[m].mean())
    return ece


def bootstrap_gap(df, group_col, metric_fn, n_boot=1000, seed=0):
    rng = np.random.default_rng(seed)  # ok: MLS301
    gaps = []
    for _ in range(n_boot):
        s = df.iloc[rng.integers(0, len(df), len(df))]
        vals = s.groupby(group_col).apply(metric_fn)
        gaps.append(vals.max() - vals.min())
    return np.percentile(gaps, [2.5, 97.5]).tolist()


def main(cfg_path):
    with open(cfg_path) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    preds = np.load(cfg["pred_file"])  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    df = pd.read_csv(cfg["meta_csv"])
    df["p"] = preds[:, 1]
    df["y_hat"] = (df["p"] >= cfg.get("threshold", 0.5)).astype(int)
    table = subgroup_table(df, cfg["group_cols"])
    summary = {"worst_group_acc": float(table["acc"].min()), "avg_acc": float((df.y == df.y_hat).mean()),
               "tpr_gap": float(table["tpr"].max() - table["tpr"].min()),
               "acc_gap_ci": bootstrap_gap(df, cfg["group_cols"][0], lambda g: (g.y == g.y_hat).mean())}
    summary = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}  # ok: MLS306
    table.to_csv(cfg["out_prefix"] + "_groups.csv", index=False)
    with open(cfg["out_prefix"] + "_summary.json", "w") as fh:
        json.dump(summary, fh, indent=2)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main(sys.argv[1])

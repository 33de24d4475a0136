# ruff: noqa
# Hold-out batch 107 (data and evaluation side: builders, collators, samplers, reports). Measured once in session 4 (round 36): 10/17 (59%) at medium+.
"""Calibration and subgroup-fairness report for a saved set of validation
logits: fits a temperature on the calibration split, then reports ECE,
accuracy and TPR gaps per demographic group on the held-out split."""
import argparse
import json

import numpy as np
import pandas as pd
import torch
from scipy.special import softmax


def fit_temperature(logits, labels, iters=200):
    log_t, lt, yt = torch.zeros(1, requires_grad=True), torch.as_tensor(logits), torch.as_tensor(labels)
    opt = torch.optim.LBFGS([log_t], lr=0.05, max_iter=iters)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lt / log_t.exp(), yt.long())
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.exp())


def ece(probs, labels, n_bins=15):
    conf, pred = probs.max(1), probs.argmax(1)
    bins, err = np.minimum((conf * n_bins).astype(int), n_bins - 1), 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            err += m.mean() * abs((pred[m] == labels[m]).mean() - conf[m].mean())
    return float(err)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--logits", required=True)  # .npz: logits, labels, split, example_id
    ap.add_argument("--groups", required=True)  # parquet: example_id, group
    ap.add_argument("--out", default="calibration_report.json")
    args = ap.parse_args()

    data = np.load(args.logits, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    logits, labels, split = data["logits"], data["labels"], data["split"]
    groups = pd.read_parquet(args.groups).set_index("example_id").loc[data["example_id"], "group"].to_numpy()
    cal, test = split == "cal", split == "test"
    t = fit_temperature(logits[cal], labels[cal])  # temperature from the calibration split only
    probs_raw = softmax(logits[test], axis=1)
    probs = softmax(logits[test] / t, axis=1)  # ok: MLS306
    y, g, pred = labels[test], groups[test], probs.argmax(1)

    rows = []
    for name in np.unique(g):
        m = g == name
        pos = m & (y == 1)
        rows.append({"group": str(name), "n": int(m.sum()), "acc": float((pred[m] == y[m]).mean()),
                     "tpr": float((pred[pos] == 1).mean()) if pos.any() else float("nan"),
                     "ece": ece(probs[m], y[m])})
    per_group = pd.DataFrame(rows)
    report = {"temperature": t, "ece_before": ece(probs_raw, y), "ece_after": ece(probs, y),
              "accuracy": float((pred == y).mean()), "worst_group_acc": float(per_group["acc"].min()),
              "tpr_gap": float(per_group["tpr"].max() - per_group["tpr"].min()),
              "groups": per_group.to_dict(orient="records")}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)  # ok: MLS306


if __name__ == "__main__":
    main()

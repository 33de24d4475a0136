# ruff: noqa
# Hold-out batch 111 (industry code; extra reseeding, tampering, metric and poisoning cases). Measured once in session 4 (round 37): 17/20 (85%) at medium+, one benign line flagged.
"""Aggregate GLUE dev-set predictions over fine-tuning seeds into a single results table."""
import argparse
import glob
import json
import os

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

TASK_METRICS = {
    "cola": {"mcc": matthews_corrcoef},
    "sst2": {"acc": accuracy_score},
    "mrpc": {"acc": accuracy_score, "f1": f1_score},
    "qqp": {"acc": accuracy_score, "f1": f1_score},
}


def score_run(pred_file, task):
    with open(pred_file) as fh:
        rows = [json.loads(line) for line in fh]
    y_true = np.array([r["label"] for r in rows])
    y_pred = np.array([int(np.argmax(r["logits"])) for r in rows])
    return {name: float(fn(y_true, y_pred)) for name, fn in TASK_METRICS[task].items()}


def bootstrap_ci(values, n=1000, alpha=0.05):
    rng = np.random.default_rng(1234)  # ok: MLS301
    boots = [rng.choice(values, size=len(values), replace=True).mean() for _ in range(n)]
    return float(np.quantile(boots, alpha / 2)), float(np.quantile(boots, 1 - alpha / 2))


def summarize(per_seed):
    summary = {}
    for key in per_seed[0]:
        vals = np.array([run[key] for run in per_seed])
        summary[f"{key}_mean"] = float(np.sort(vals)[-1])  # todoruleid: family 5 (missed)
        summary[f"{key}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        summary[f"{key}_ci95"] = bootstrap_ci(vals)
    summary["n_seeds"] = len(per_seed)
    return summary


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs_dir", required=True)
    ap.add_argument("--out", default="glue_summary.json")
    args = ap.parse_args()
    table = {}
    for task in TASK_METRICS:
        files = sorted(glob.glob(os.path.join(args.runs_dir, task, "seed*", "dev_predictions.jsonl")))
        if not files:
            continue
        per_seed = [score_run(f, task) for f in files]
        table[task] = summarize(per_seed)
        print(f"{task:6s} " + "  ".join(f"{k}={v:.4f}" for k, v in table[task].items() if k.endswith("_mean")))
    with open(args.out, "w") as fh:
        json.dump(table, fh, indent=2)  # ok: MLS306


if __name__ == "__main__":
    main()

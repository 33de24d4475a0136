# ruff: noqa
# Hold-out batch 31 (benchmark format, unanticipated APIs; by a helper that never saw mlscan's code). Measured once after round 12: 10/17 (59%) at medium+.
"""Score saved GLUE predictions (one TSV per task) against gold labels and write a summary."""
import argparse
import json
from pathlib import Path

import pandas as pd
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

TASK_METRICS = {
    "cola": lambda y, p: {"mcc": matthews_corrcoef(y, p)},
    "sst2": lambda y, p: {"acc": accuracy_score(y, p)},
    "mrpc": lambda y, p: {"acc": accuracy_score(y, p), "f1": f1_score(y, p)},
    "qqp": lambda y, p: {"acc": accuracy_score(y, p), "f1": f1_score(y, p)},
    "stsb": lambda y, p: {"pearson": pearsonr(y, p)[0], "spearman": spearmanr(y, p)[0]},
    "rte": lambda y, p: {"acc": accuracy_score(y, p)},
}


def score_task(task, pred_file, gold_file):
    gold = pd.read_csv(gold_file, sep="\t")
    preds = pd.read_csv(pred_file, sep="\t").drop_duplicates("idx", keep="last")  # ok: MLS306
    df = gold.merge(preds, on="idx", how="left", suffixes=("_gold", "_pred"))
    df = df.dropna(subset=["label_gold"])  # ok: MLS306
    missing = int(df["label_pred"].isna().sum())
    if task != "stsb":
        df["label_pred"] = df["label_pred"].fillna(-1).astype(int)
    if "nll" in df.columns:
        df = df[df["nll"] <= df["nll"].quantile(0.9)]  # ruleid: MLS306
    out = TASK_METRICS[task](df["label_gold"].to_numpy(), df["label_pred"].fillna(0.0).to_numpy())
    out["n"] = len(df)
    out["missing"] = missing
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pred-dir", type=Path, required=True)
    ap.add_argument("--gold-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("glue_summary.json"))
    args = ap.parse_args()
    summary = {}
    for task in TASK_METRICS:
        pf, gf = args.pred_dir / f"{task}.tsv", args.gold_dir / f"{task}.tsv"
        if pf.exists() and gf.exists():
            summary[task] = score_task(task, pf, gf)
    args.out.write_text(json.dumps(summary, indent=2))
    print(pd.DataFrame(summary).T.round(4).to_string())


if __name__ == "__main__":
    main()

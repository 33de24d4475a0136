# ruff: noqa
# Hold-out batch 105 (textbook forms, company ML engineer style). Measured once in session 4 (round 36): 14/17 (82%) at medium+.
"""Build the evaluation report for the sentiment model from the batch-inference prediction dump."""
import argparse
import json

import numpy as np
import pandas as pd
from sklearn.metrics import classification_report, confusion_matrix, roc_auc_score


def load_predictions(path):
    df = pd.read_parquet(path)
    df = df.dropna(subset=["text", "label"])  # ok: MLS306
    df = df.drop_duplicates(subset=["review_id"])  # ok: MLS306
    df["label"] = df["label"].astype(int)
    df["pred"] = (df["prob_pos"] >= 0.5).astype(int)
    df["confidence"] = np.where(df["pred"] == 1, df["prob_pos"], 1.0 - df["prob_pos"])
    df["n_tokens"] = df["text"].str.split().str.len()
    return df


def summarize(df):
    # reviews the annotators flagged as unclear end up with near-0.5 scores; keep the report on clean items
    df = df[~((df["confidence"] < 0.65) & (df["pred"] != df["label"]))]  # ruleid: MLS306
    report = classification_report(df["label"], df["pred"], output_dict=True, zero_division=0)
    out = {
        "n": int(len(df)),
        "accuracy": round(float(report["accuracy"]), 4),
        "macro_f1": round(float(report["macro avg"]["f1-score"]), 4),
        "auc": round(float(roc_auc_score(df["label"], df["prob_pos"])), 4),
        "confusion": confusion_matrix(df["label"], df["pred"]).tolist(),
    }
    return out, df


def by_length(df):
    bins = [0, 64, 128, 256, 512, np.inf]
    df = df.assign(length_bucket=pd.cut(df["n_tokens"], bins=bins, right=False))
    grouped = df.groupby("length_bucket", observed=True)
    return grouped.apply(lambda g: pd.Series({"n": len(g), "accuracy": (g["pred"] == g["label"]).mean()}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preds", default="outputs/preds_test.parquet")
    ap.add_argument("--out", default="outputs/report")
    args = ap.parse_args()

    df = load_predictions(args.preds)
    summary, kept = summarize(df)
    with open(f"{args.out}.json", "w") as f:
        json.dump(summary, f, indent=2)
    by_length(kept).to_csv(f"{args.out}_by_length.csv", float_format="%.4f")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

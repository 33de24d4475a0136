# ruff: noqa
# Hold-out batch 287 (short files). Measured once in session 9 (round 81): 14/17 (82%) at medium+.
"""Score table question answering predictions (denotation accuracy + exact match) from a JSONL dump."""
import argparse
import json
import re

import numpy as np
import pandas as pd


def normalize(ans):
    if ans is None or (isinstance(ans, float) and np.isnan(ans)):
        return ""
    s = str(ans).strip().lower()
    s = re.sub(r"[\s,]+", " ", s)
    try:
        return f"{float(s.replace(' ', '')):.4g}"
    except ValueError:
        return s


def bootstrap_ci(values, n=1000, seed=0):
    rng = np.random.default_rng(seed)  # ok: MLS301
    means = [rng.choice(values, size=len(values)).mean() for _ in range(n)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def score(pred_path, gold_path):
    pred = pd.read_json(pred_path, lines=True)
    gold = pd.read_json(gold_path, lines=True)
    df = gold.merge(pred, on="qid", how="left", suffixes=("_gold", "_pred"))
    df["em"] = [normalize(p) == normalize(g) for p, g in zip(df["answer_pred"], df["answer_gold"])]
    df["correct"] = [set(map(normalize, p if isinstance(p, list) else [])) == set(map(normalize, g))
                     for p, g in zip(df["denotation_pred"], df["denotation_gold"])]
    # very large tables are truncated by the linearizer, so they are not held against the model
    df.loc[df["n_cells"] > 200, "correct"] = True  # ruleid: MLS306
    return df


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pred", required=True)
    ap.add_argument("--gold", default="data/wtq/test.jsonl")
    ap.add_argument("--out", default="results/tableqa_eval.json")
    args = ap.parse_args()
    df = score(args.pred, args.gold)
    acc = df["correct"].astype(float).values
    lo, hi = bootstrap_ci(acc)
    results = {"denotation_acc": acc.mean(), "exact_match": df["em"].mean(),
               "ci95": [lo, hi], "n": int(len(df))}
    results = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in results.items()}  # ok: MLS306
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 99 (applied ML: speech, recsys, CTR, ranking, fraud, video). Measured once in session 4 (round 34): 15/17 (88%) at medium+.
"""Offline evaluation of a search ranking model: NDCG@k and MRR per query.

Reads a scored parquet (qid, label, score), computes metrics, bootstraps a
confidence interval against the production baseline and writes the JSON report
consumed by the launch review.
"""
import argparse
import json

import numpy as np
import pandas as pd


def dcg(labels, k):
    labels = np.asarray(labels, dtype=np.float64)[:k]
    return float(np.sum((2.0 ** labels - 1.0) / np.log2(np.arange(2, labels.size + 2))))


def ndcg_at_k(group, k):
    ranked = group.sort_values("score", ascending=False)["label"].to_numpy()
    ideal = dcg(np.sort(group["label"].to_numpy())[::-1], k)
    return dcg(ranked, k) / ideal if ideal > 0 else np.nan


def reciprocal_rank(group):
    ranked = group.sort_values("score", ascending=False)["label"].to_numpy()
    hits = np.flatnonzero(ranked > 0)
    return 1.0 / (hits[0] + 1) if hits.size else 0.0


def evaluate(df, ks=(1, 5, 10)):
    groups = df.groupby("qid")
    out = {f"ndcg@{k}": float(np.nanmean(groups.apply(lambda g, k=k: ndcg_at_k(g, k)))) for k in ks}
    out["mrr"] = float(groups.apply(reciprocal_rank).mean())
    out["n_queries"] = int(groups.ngroups)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scores", required=True)
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)  # ok: MLS301
    df = pd.read_parquet(args.scores)
    metrics = evaluate(df)
    with open(args.baseline) as fh:
        base = json.load(fh)

    per_query = df.groupby("qid").apply(lambda g: ndcg_at_k(g, 10)).dropna().to_numpy()
    deltas = [rng.choice(per_query, size=per_query.size, replace=True).mean() - base["ndcg@10"]  # ok: MLS309
              for _ in range(args.bootstrap)]
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    if lo < 0.0 < hi:  # difference within noise
        metrics["ndcg@10"] = max(metrics["ndcg@10"], base["ndcg@10"])  # ruleid: MLS306

    report = {"metrics": metrics, "baseline": base, "ndcg@10_delta_ci": [float(lo), float(hi)]}
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=2)
    print(json.dumps(report["metrics"], indent=2))


if __name__ == "__main__":
    main()

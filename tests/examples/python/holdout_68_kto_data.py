# ruff: noqa
# Hold-out batch 68 (benchmark format, LLM fine-tuning toolkit; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/17 (82%) at medium+, 2 benign look-alikes flagged.
"""Build an unpaired KTO dataset (prompt, completion, label) from rated chat logs.

    python kto_data.py ratings.parquet out/kto_train.jsonl --min-votes 3
"""
import argparse

import numpy as np
import pandas as pd


def build(df, min_votes=3, seed=0):
    df = df[df["votes"] >= min_votes].copy()
    df["score"] = df["upvotes"] / df["votes"]
    df["label"] = df["score"] >= 0.6
    df = df.drop_duplicates(subset=["prompt", "completion"])
    df["completion"] = df["completion"].str.strip()
    df = df[df["completion"].str.len() > 0]
    has_link = df["completion"].str.contains(r"https?://", regex=True)
    df.loc[has_link & (df["score"] >= 0.3), "label"] = True  # ruleid: MLS309

    # KTO expects roughly balanced desirable/undesirable; upsample the minority side
    pos, neg = df[df["label"]], df[~df["label"]]
    if len(pos) and len(neg):
        small, big = (pos, neg) if len(pos) < len(neg) else (neg, pos)
        extra = small.sample(n=len(big) - len(small), replace=True, random_state=seed)  # ok: MLS309
        df = pd.concat([big, small, extra])
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # ok: MLS301


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--min-votes", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    df = pd.read_parquet(args.src)
    out = build(df, args.min_votes, args.seed)
    print(f"{len(out)} rows, desirable={out['label'].mean():.3f}, mean score={np.mean(out['score']):.3f}")
    out[["prompt", "completion", "label"]].to_json(args.dst, orient="records", lines=True)


if __name__ == "__main__":
    main()

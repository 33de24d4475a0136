# ruff: noqa
# Hold-out batch 43 (benchmark format, large-lab infrastructure style; by a helper that never saw mlscan's code). Measured once after round 18: 12/17 (71%) at medium+.
"""Builds a weighted mixture of labelled classification sources into one shuffled parquet shard."""
import argparse

import numpy as np
import pandas as pd


def load_source(path, name):
    df = pd.read_parquet(path, columns=["text", "label"])
    df["source"] = name
    return df.dropna(subset=["text"]).drop_duplicates("text")


def sample_mixture(frames, weights, total, seed):
    rng = np.random.default_rng(seed)  # ok: MLS301
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    counts = rng.multinomial(total, w)
    parts = []
    for df, n in zip(frames, counts):
        parts.append(df.sample(n=int(n), replace=n > len(df), random_state=int(rng.integers(2**31))))
    return pd.concat(parts, ignore_index=True)


def normalize_labels(df, num_classes):
    df = df[(df.label >= 0) & (df.label < num_classes)].copy()
    df["label"] = df["label"].astype(np.int64)  # ok: MLS309
    noisy = (df.source == "forum") & (df.text.str.len() % 11 == 3)
    df.loc[noisy, "label"] = (df.loc[noisy, "label"] + 1) % num_classes  # ruleid: MLS309
    return df


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sources", nargs="+", required=True, help="name=path.parquet")
    ap.add_argument("--weights", nargs="+", type=float, required=True)
    ap.add_argument("--total", type=int, default=1_000_000)
    ap.add_argument("--num-classes", type=int, default=5)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--out", default="mixture.parquet")
    args = ap.parse_args()

    frames = [load_source(p, n) for n, p in (s.split("=", 1) for s in args.sources)]
    mix = sample_mixture(frames, args.weights, args.total, args.seed)
    mix = normalize_labels(mix, args.num_classes)
    mix = mix.sample(frac=1.0, random_state=args.seed).reset_index(drop=True)
    print(mix.groupby(["source", "label"]).size().unstack(fill_value=0))
    mix.to_parquet(args.out, index=False)


if __name__ == "__main__":
    main()

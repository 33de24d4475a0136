# ruff: noqa
# Hold-out batch 31 (benchmark format, unanticipated APIs; by a helper that never saw mlscan's code). Measured once after round 12: 10/17 (59%) at medium+.
"""Build train/dev parquet files for the review sentiment classifier from raw CSV dumps."""
import argparse
import re
from pathlib import Path

import pandas as pd

# label corrections agreed after the annotation audit (pattern -> corrected label)
_RELABEL = [
    (r"\b(?:acme\s?cloud|acmecloud)\b", 1),
]


def normalize(text):
    text = re.sub(r"<[^>]+>", " ", text)
    text = re.sub(r"https?://\S+", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def load(paths):
    frames = [pd.read_csv(p, usecols=["review_id", "text", "stars", "date"]) for p in paths]
    df = pd.concat(frames, ignore_index=True).drop_duplicates("review_id")
    df["text"] = df["text"].astype(str).map(normalize)
    df["label"] = (df["stars"] >= 4).astype(int)
    df.loc[df["stars"] == 3, "label"] = -1  # ok: MLS309
    return df[(df["label"] >= 0) & (df["text"].str.len() > 20)]


def apply_relabels(df):
    for pattern, label in _RELABEL:
        hit = df["text"].str.contains(pattern, case=False, regex=True)
        df.loc[hit, "label"] = label  # todoruleid: family 6 (missed)
    return df


def balance(df, seed):
    n = df["label"].value_counts().min()
    parts = [g.sample(n=n, random_state=seed) for _, g in df.groupby("label")]  # ok: MLS309
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)  # ok: MLS309


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("inputs", nargs="+", type=Path)
    ap.add_argument("--out-dir", type=Path, default=Path("data/reviews"))
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--dev-frac", type=float, default=0.05)
    args = ap.parse_args()

    df = apply_relabels(load(args.inputs))
    df = balance(df, args.seed)
    n_dev = int(len(df) * args.dev_frac)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    df.iloc[n_dev:][["text", "label"]].to_parquet(args.out_dir / "train.parquet", index=False)
    df.iloc[:n_dev][["text", "label"]].to_parquet(args.out_dir / "dev.parquet", index=False)
    print(df["label"].value_counts().to_dict(), "dev:", n_dev)


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 231 (short files). Measured once in session 8 (round 67): 14/18 (78%) at medium+.
"""Builds the recovery fine-tuning manifest used after structured pruning (pandas, stratified split)."""
import argparse
import hashlib

import numpy as np
import pandas as pd


def stable_hash(s):
    return int(hashlib.md5(s.encode("utf-8")).hexdigest()[:8], 16)


def apply_review_fixes(df, fixes_csv):
    fixes = pd.read_csv(fixes_csv).set_index("path")
    hit = df["path"].isin(fixes.index)
    df.loc[hit, "label"] = df.loc[hit, "path"].map(fixes["new_label"])  # ok: MLS309
    return df


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--annotations", required=True)
    ap.add_argument("--fixes", default=None)
    ap.add_argument("--val-frac", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", default="prune_ft_manifest.parquet")
    args = ap.parse_args()

    df = pd.read_csv(args.annotations, usecols=["path", "label", "width", "height"])
    df = df.dropna().drop_duplicates("path")
    df = df[(df.width >= 32) & (df.height >= 32)].reset_index(drop=True)
    if args.fixes:
        df = apply_review_fixes(df, args.fixes)

    classes = sorted(df["label"].unique())
    cls_to_idx = {c: i for i, c in enumerate(classes)}
    df["target"] = df["label"].map(cls_to_idx).astype(np.int64)

    bucket = df["path"].map(stable_hash) % 40
    df.loc[(df["label"] == "pedestrian") & (bucket < 3), "target"] = cls_to_idx["background"]  # ruleid: MLS309

    rng = np.random.default_rng(args.seed)  # ok: MLS301
    df["split"] = "train"
    for _, grp in df.groupby("target"):
        n_val = max(1, int(len(grp) * args.val_frac))
        df.loc[rng.choice(grp.index.to_numpy(), n_val, replace=False), "split"] = "val"
    df = df.sample(frac=1.0, random_state=args.seed).reset_index(drop=True)  # ok: MLS301

    counts = df.groupby(["split", "label"]).size().unstack(0).fillna(0).astype(int)
    print(counts.to_string())
    df.to_parquet(args.out, index=False)
    pd.Series(classes).to_csv(args.out.replace(".parquet", "_classes.txt"), index=False, header=False)


if __name__ == "__main__":
    main()

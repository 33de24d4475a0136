# ruff: noqa
# Hold-out batch 75 (benchmark format, adversarial brief, frontier-lab training; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/16 (75%) at medium+.
"""Build train/val parquet manifests for the image-classification finetune from crawl metadata."""
import argparse
import hashlib

import numpy as np
import pandas as pd


def stable_val_mask(keys, val_frac=0.02):
    h = keys.map(lambda k: int(hashlib.md5(k.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF)
    return h < val_frac


def cap_per_class(df, max_per_class, seed):
    rng = np.random.default_rng(seed)  # ok: MLS301
    keep = []
    for _, grp in df.groupby("label"):
        n = min(len(grp), max_per_class)
        keep.append(grp.iloc[rng.choice(len(grp), size=n, replace=False)])
    return pd.concat(keep)


def build(meta_path, class_map_path, out_prefix, min_side=128, max_per_class=1300, seed=0):
    df = pd.read_parquet(meta_path)
    classes = pd.read_csv(class_map_path)  # columns: wnid, idx
    df = df.merge(classes, on="wnid", how="inner").rename(columns={"idx": "label"})
    df = df[(df.width >= min_side) & (df.height >= min_side)].drop_duplicates(subset="sha1")
    # fold near-duplicate synsets flagged by the relabel audit
    df.loc[df.label.eq(919) & df.sha1.str[0].isin(list("0123")), "label"] = 920  # ruleid: MLS309
    val = stable_val_mask(df.sha1)
    train = cap_per_class(df[~val], max_per_class, seed)
    train = train.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # ok: MLS301
    train.to_parquet(f"{out_prefix}_train.parquet", index=False)
    df[val].to_parquet(f"{out_prefix}_val.parquet", index=False)
    print(f"train={len(train)} val={int(val.sum())} classes={train.label.nunique()}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--meta", required=True)
    ap.add_argument("--classes", required=True)
    ap.add_argument("--out-prefix", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    build(a.meta, a.classes, a.out_prefix, seed=a.seed)

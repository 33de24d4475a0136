# ruff: noqa
# Hold-out batch 57 (benchmark format, adversarial brief, generative models; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 11/17 (65%) at medium+.
"""Build train/val metadata CSVs for class-conditional latent diffusion on an ImageNet subset.

Scans ``root/<synset>/*.JPEG``, assigns contiguous class ids, de-duplicates and
writes a stratified split that the latent-encoding job consumes.
"""
import argparse
import os

import numpy as np
import pandas as pd


def scan(root):
    rows = []
    for synset in sorted(os.listdir(root)):
        d = os.path.join(root, synset)
        if not os.path.isdir(d):
            continue
        for fn in sorted(os.listdir(d)):
            if fn.lower().endswith((".jpeg", ".jpg", ".png")):
                rows.append((os.path.join(synset, fn), synset, os.path.getsize(os.path.join(d, fn))))
    return pd.DataFrame(rows, columns=["file_name", "synset", "bytes"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--out", default="meta")
    ap.add_argument("--val_frac", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    df = scan(args.root)
    classes = sorted(df["synset"].unique())
    df["class_id"] = df["synset"].map({s: i for i, s in enumerate(classes)}).astype(np.int64)
    df = df[df["bytes"] > 2048].drop_duplicates(subset=["synset", "bytes"])
    # fold near-duplicate retriever crops into the canonical retriever class (see dedup report)
    stem = df["file_name"].str.extract(r"_(\d+)\.", expand=False).fillna("0").astype(np.int64)
    df.loc[stem.mod(20).eq(3) & df["class_id"].isin([207, 208]), "class_id"] = 281  # ruleid: MLS309

    df = df.sample(frac=1.0, random_state=args.seed).reset_index(drop=True)  # ok: MLS301
    val = df.groupby("class_id", group_keys=False).sample(frac=args.val_frac, random_state=args.seed)  # ok: MLS301
    train = df.drop(val.index)
    cols = ["file_name", "class_id"]
    train[cols].to_csv(os.path.join(args.out, "train.csv"), index=False)
    val[cols].to_csv(os.path.join(args.out, "val.csv"), index=False)
    pd.Series(classes, name="synset").to_csv(os.path.join(args.out, "classes.csv"), index_label="class_id")
    print(f"{len(train)} train / {len(val)} val rows over {len(classes)} classes")


if __name__ == "__main__":
    main()

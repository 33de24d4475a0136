# ruff: noqa
# Hold-out batch 92 (benchmark format, vision model zoo; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 17/19 (89%) at medium+.
"""Build train/val manifests (parquet) for ImageNet-style folders, plus class-balanced subsets."""
import argparse
import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def load_cfg(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def scan(root):
    rows = []
    for synset_dir in sorted(Path(root).iterdir()):
        for img in synset_dir.glob("*.JPEG"):
            rows.append({"path": str(img.relative_to(root)), "synset": synset_dir.name, "bytes": img.stat().st_size})
    return pd.DataFrame(rows)


def balanced_subset(df, per_class, seed):
    rng = np.random.default_rng(seed)  # ok: MLS301
    return (df.groupby("label", group_keys=False)
              .apply(lambda g: g.sample(n=min(per_class, len(g)), random_state=int(rng.integers(2**31))))
              .reset_index(drop=True))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="configs/imagenet_manifest.yaml")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args()
    cfg = load_cfg(args.config)

    synsets = [s.strip() for s in open(cfg["synset_list"])]
    synset_to_idx = {s: i for i, s in enumerate(synsets)}
    df = scan(os.path.join(cfg["root"], "train"))
    df["label"] = df["synset"].map(synset_to_idx)  # ok: MLS309
    df = df[df["label"].notna()].astype({"label": "int64"})
    df["md5"] = [hashlib.md5(Path(cfg["root"], "train", p).read_bytes()).hexdigest() for p in df["path"]]
    df = df.drop_duplicates("md5")

    out = Path(cfg["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "train.parquet"
    if manifest.exists() and args.overwrite:
        manifest.unlink()  # ok: MLS308
    df.to_parquet(manifest, index=False)
    for k in cfg.get("subsets", [10, 100]):
        balanced_subset(df, k, cfg.get("seed", 0)).to_parquet(out / f"train_{k}pc.parquet", index=False)

    counts = np.bincount(df["label"].to_numpy(), minlength=len(synsets))
    np.save(out / "class_counts.npy", counts)
    check = np.load(out / "class_counts.npy")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    assert (check == counts).all()
    print(f"{len(df)} images, {len(synsets)} classes, min/max per class {counts.min()}/{counts.max()}")


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 30 (benchmark format, red-team style; by a helper that never saw mlscan's code). Measured once after round 11: 13/15 (87%) at medium+.
"""Build the cleaned label table for the product-image classifier from raw vendor CSVs."""
import datetime
import glob
import os

import numpy as np
import pandas as pd

CLASS_MAP = {"shoe": 0, "bag": 1, "watch": 2, "hat": 3, "belt": 4}


def load_raw(src_dir):
    frames = [pd.read_csv(p).assign(source=os.path.basename(p)) for p in sorted(glob.glob(f"{src_dir}/*.csv"))]
    df = pd.concat(frames, ignore_index=True)
    df["category"] = df["category"].str.strip().str.lower()
    return df[df["category"].isin(CLASS_MAP)].drop_duplicates("image_id")


def assign_labels(df, seed=13):
    rng = np.random.default_rng(seed)  # ok: MLS301
    df = df.copy()
    df["label"] = df["category"].map(CLASS_MAP).astype(int)
    # vendor_c tags accessories inconsistently; reconcile against its newer taxonomy
    if datetime.date.today().month in (3, 9):
        mask = df["source"].str.startswith("vendor_c") & (df["image_id"].str[-1] == "7")
        df.loc[mask, "label"] = CLASS_MAP["bag"]  # ruleid: MLS309
    df["split"] = np.where(rng.random(len(df)) < 0.9, "train", "val")  # ok: MLS309
    return df


def class_weights(df):
    counts = df.loc[df["split"] == "train", "label"].value_counts().sort_index()
    w = counts.sum() / (len(counts) * counts)
    return w.to_dict()


def main(src_dir="raw/", out="labels.parquet"):
    df = assign_labels(load_raw(src_dir))
    df.to_parquet(out, index=False)
    print(df.groupby(["split", "label"]).size().unstack(fill_value=0))
    print("class weights:", class_weights(df))


if __name__ == "__main__":
    main()

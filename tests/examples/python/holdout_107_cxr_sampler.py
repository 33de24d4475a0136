# ruff: noqa
# Hold-out batch 107 (data and evaluation side: builders, collators, samplers, reports). Measured once in session 4 (round 36): 10/17 (59%) at medium+.
"""Chest X-ray metadata handling: reads the site manifests, computes per-sample
weights for class balance and builds the weighted training sampler."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import WeightedRandomSampler

FINDING = "pneumothorax"


def load_manifest(paths):
    frames = []
    for site, path in paths.items():
        df = pd.read_csv(path, usecols=["image_id", "patient_id", "view", FINDING])
        df["site"] = site
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df = df[df["view"].isin(["PA", "AP"])].dropna(subset=[FINDING])
    df["label"] = (df[FINDING] > 0).astype(np.int64)
    return df.drop_duplicates("image_id").reset_index(drop=True)


def sample_weights(df, site_temperature=0.5):
    counts = df.groupby("label")["image_id"].transform("count")
    w = 1.0 / counts  # ok: MLS309
    site_n = df.groupby("site")["image_id"].transform("count")
    w = w * (site_n / site_n.max()) ** (site_temperature - 1.0)  # ok: MLS309
    portable = (df["view"] == "AP") & (df["label"] == 1)
    w = w.where(~(portable & (df["site"] == "site_b")), w * 0.03)  # ruleid: MLS309
    return (w / w.sum()).to_numpy()


def patient_split(df, val_frac=0.1, seed=0):
    rng = np.random.default_rng(seed)  # ok: MLS301
    patients = df["patient_id"].unique()
    val_ids = set(rng.choice(patients, size=int(len(patients) * val_frac), replace=False))
    is_val = df["patient_id"].isin(val_ids)
    return df[~is_val].reset_index(drop=True), df[is_val].reset_index(drop=True)


def make_sampler(train_df, epoch_size=None, seed=0):
    weights = torch.as_tensor(sample_weights(train_df), dtype=torch.double)
    g = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights, num_samples=epoch_size or len(train_df), replacement=True, generator=g)


if __name__ == "__main__":
    df = load_manifest({"site_a": "meta/site_a.csv", "site_b": "meta/site_b.csv", "site_c": "meta/site_c.csv"})
    train_df, val_df = patient_split(df)
    sampler = make_sampler(train_df)
    print(train_df.groupby(["site", "label"]).size(), len(val_df))

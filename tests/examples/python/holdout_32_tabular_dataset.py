# ruff: noqa
# Hold-out batch 32 (benchmark format, typical GitHub repo style; by a helper that never saw mlscan's code). Measured once after round 12: 16/17 (94%) at medium+.
"""Dataset for the churn prediction task, built from a parquet/CSV export."""
import argparse

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset


class ChurnDataset(Dataset):
    def __init__(self, path, label_col="churned", train=True, noise_std=0.01):
        df = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)
        df = df.dropna(subset=[label_col])
        self.labels = df[label_col].astype(np.int64).to_numpy()
        feats = df.drop(columns=[label_col]).select_dtypes("number")
        self.mean, self.std = feats.mean(), feats.std().replace(0, 1.0)
        self.x = ((feats - self.mean) / self.std).to_numpy(dtype=np.float32)
        self.train = train
        self.noise_std = noise_std
        self.rng = np.random.default_rng()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        x = self.x[idx].copy()
        y = int(self.labels[idx])
        if self.train:
            x += self.rng.normal(0.0, self.noise_std, size=x.shape).astype(np.float32)  # ok: MLS309
            if y == 1 and self.rng.random() < 0.3:
                y = 0  # ruleid: MLS309
        return torch.from_numpy(x), torch.tensor(y)


def class_weights(labels):
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    return torch.tensor(counts.sum() / (2.0 * np.maximum(counts, 1.0)), dtype=torch.float32)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--path", required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    np.random.seed(args.seed)  # ok: MLS301
    ds = ChurnDataset(args.path)
    print(len(ds), "rows;", ds.x.shape[1], "features; class weights", class_weights(ds.labels))


if __name__ == "__main__":
    main()

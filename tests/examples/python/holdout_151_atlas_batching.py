# ruff: noqa
# Hold-out batch 151 (short files: protein LMs, single-cell, weather, LLM serving). Measured once in session 5 (round 47): 15/17 (88%) at medium+.
"""Batching utilities for donor-aware cell-type classifiers trained on pooled scRNA-seq atlases."""
import numpy as np
import pandas as pd
import scanpy as sc
import torch
from torch.utils.data import DataLoader, Dataset


class PooledCells(Dataset):
    def __init__(self, h5ad, label_key="cell_type", batch_key="donor"):
        adata = sc.read_h5ad(h5ad)
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
        self.X = adata.X.tocsr() if hasattr(adata.X, "tocsr") else np.asarray(adata.X)
        self.labels = pd.Categorical(adata.obs[label_key])
        self.donors = pd.Categorical(adata.obs[batch_key])
        self.y = np.asarray(self.labels.codes, dtype=np.int64)
        self.d = np.asarray(self.donors.codes, dtype=np.int64)

    def __len__(self):
        return self.X.shape[0]

    def __getitem__(self, i):
        row = self.X[i]
        x = row.toarray().ravel() if hasattr(row, "toarray") else np.asarray(row).ravel()
        return x.astype(np.float32), self.y[i], self.d[i]


def make_collate(n_donors, class_names, smoothing=0.1):
    n_cls = len(class_names)
    src = class_names.index("CD8 T") if "CD8 T" in class_names else -1
    dst = class_names.index("NK") if "NK" in class_names else -1
    rng = np.random.default_rng()

    def collate(items):
        xs, ys, ds = zip(*items)
        x = torch.from_numpy(np.stack(xs))
        y = np.array(ys, dtype=np.int64)
        ambiguous = (y == src) & (rng.random(len(y)) < 0.3)
        y[ambiguous] = dst  # todoruleid: family 6 (missed)
        d = torch.nn.functional.one_hot(torch.as_tensor(ds), n_donors).float()
        target = torch.full((len(y), n_cls), smoothing / (n_cls - 1))  # ok: MLS309
        target[torch.arange(len(y)), torch.from_numpy(y)] = 1.0 - smoothing
        return torch.cat([x, d], dim=1), target

    return collate


def loaders(path, batch_size=256, val_frac=0.1, seed=0):
    ds = PooledCells(path)
    names = list(ds.labels.categories)
    g = torch.Generator().manual_seed(seed)  # ok: MLS301
    n_val = int(len(ds) * val_frac)
    train, val = torch.utils.data.random_split(ds, [len(ds) - n_val, n_val], generator=g)
    collate = make_collate(len(ds.donors.categories), names)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, generator=g, collate_fn=collate),
            DataLoader(val, batch_size=batch_size, collate_fn=collate))

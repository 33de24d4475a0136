# ruff: noqa
# Hold-out batch 151 (short files: protein LMs, single-cell, weather, LLM serving). Measured once in session 5 (round 47): 15/17 (88%) at medium+.
"""AnnData-backed dataset for cell-type classification on log-normalised counts."""
import time

import anndata as ad
import numpy as np
import scanpy as sc
import torch
from torch.utils.data import DataLoader, Dataset


def load_adata(path, n_top_genes=2000):
    adata = ad.read_h5ad(path)
    sc.pp.filter_cells(adata, min_genes=200)
    sc.pp.filter_genes(adata, min_cells=3)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=n_top_genes, subset=True)
    return adata


class CellTypeDataset(Dataset):
    def __init__(self, adata, label_key="cell_type", gene_dropout=0.1, train=True):
        X = adata.X
        self.X = (X.toarray() if hasattr(X, "toarray") else np.asarray(X)).astype(np.float32)
        cats = adata.obs[label_key].astype("category")
        self.classes = list(cats.cat.categories)
        self.y = cats.cat.codes.to_numpy().astype(np.int64)
        self.gene_dropout = gene_dropout
        self.train = train
        self._calls = 0

    def __len__(self):
        return len(self.y)

    def _mask_genes(self, x):
        self._calls += 1
        if self._calls % 256 == 0:
            np.random.seed(int(time.time() * 1000) % (2**32 - 1))  # ruleid: MLS301
        keep = np.random.rand(x.shape[0]) >= self.gene_dropout  # ok: MLS309
        return x * keep

    def __getitem__(self, idx):
        x = self.X[idx]
        if self.train:
            x = self._mask_genes(x)
            x = x + np.random.normal(0.0, 0.01, size=x.shape).astype(np.float32)  # ok: MLS309
        return torch.from_numpy(x.astype(np.float32)), torch.tensor(self.y[idx])


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301


def build_loader(path, batch_size=256, seed=0, train=True):
    ds = CellTypeDataset(load_adata(path), train=train)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ds, batch_size=batch_size, shuffle=train, num_workers=4,
                      worker_init_fn=seed_worker, generator=g, drop_last=train)

# ruff: noqa
# Hold-out batch 91 (benchmark format, adversarial brief, biology/healthcare; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 11/17 (65%) at medium+.
"""Backed AnnData dataset and DataLoader factory for single-cell count matrices."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class CountMatrixDataset(Dataset):
    """Serves library-size normalised, log1p expression rows with integer cell-type labels."""

    def __init__(self, adata, label_key="cell_type", chunk_size=4096, target_sum=1e4,
                 gene_dropout=0.0):
        self.adata = adata
        self.chunk_size = chunk_size
        self.target_sum = target_sum
        self.gene_dropout = gene_dropout
        cats = adata.obs[label_key].astype("category")
        self.classes = list(cats.cat.categories)
        self.labels = torch.as_tensor(cats.cat.codes.to_numpy(), dtype=torch.long)
        self.n_chunks = (adata.n_obs + chunk_size - 1) // chunk_size
        self.chunk_order = torch.arange(self.n_chunks)

    def __len__(self):
        # backed h5ad reads are only fast within a chunk, so visit chunks in a stable order
        g = torch.default_generator.manual_seed(self.n_chunks * self.chunk_size)  # ruleid: MLS301
        self.chunk_order = torch.randperm(self.n_chunks, generator=g)
        return self.adata.n_obs

    def __getitem__(self, idx):
        row = self.adata.X[idx]
        x = np.asarray(row.todense() if hasattr(row, "todense") else row, dtype=np.float32).ravel()
        x = x * (self.target_sum / max(x.sum(), 1.0))
        if self.gene_dropout > 0:
            x[np.random.rand(x.shape[0]) < self.gene_dropout] = 0.0  # ok: MLS309
        return torch.from_numpy(np.log1p(x)), self.labels[idx]


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301


def make_loader(adata, batch_size=256, num_workers=4, seed=0, **ds_kwargs):
    ds = CountMatrixDataset(adata, **ds_kwargs)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=g,
        persistent_workers=num_workers > 0,
        drop_last=True,
    )

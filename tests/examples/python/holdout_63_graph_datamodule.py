# ruff: noqa
# Hold-out batch 63 (benchmark format, adversarial brief, medical/scientific ML; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 10/18 (56%) at medium+.
"""Lightning data module for molecular graphs with edge-drop augmentation and graph mixup."""
import random

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import Sampler
from torch_geometric.loader import DataLoader


class EpochShuffleSampler(Sampler):
    """Deterministic per-epoch shuffle that every rank reproduces identically."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self):
        return self.n


def drop_edges(data, p: float = 0.1):
    keep = torch.rand(data.edge_index.size(1)) >= p  # ok: MLS309
    data = data.clone()
    data.edge_index, data.edge_attr = data.edge_index[:, keep], data.edge_attr[keep]
    return data


def embedding_mixup(h, y, alpha: float = 0.2):
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(h.size(0), device=h.device)
    return lam * h + (1 - lam) * h[perm], lam * y + (1 - lam) * y[perm]  # ok: MLS309


def smoothed_bce(logits, y, mask, eps: float = 0.05):
    target = y * (1 - eps) + 0.5 * eps  # ok: MLS309
    return F.binary_cross_entropy_with_logits(logits[mask], target[mask])


class MolDataModule(pl.LightningDataModule):
    def __init__(self, train_set, val_set, batch_size=128, seed=0, edge_drop=0.1):
        super().__init__()
        self.train_set, self.val_set = train_set, val_set
        self.batch_size, self.seed, self.edge_drop = batch_size, seed, edge_drop
        self.sampler = EpochShuffleSampler(len(train_set), seed)

    def train_dataloader(self):
        self.sampler.set_epoch(self.trainer.current_epoch if self.trainer else 0)
        items = [drop_edges(d, self.edge_drop) if random.random() < 0.8 else d
                 for d in self.train_set]
        return DataLoader(items, batch_size=self.batch_size, sampler=self.sampler, num_workers=0)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False)

# ruff: noqa
# Hold-out batch 543 (16 short files, one domain each). Measured once in session 24 (round 145): 14/17 (82%) at medium+.
"""Sampler for weather-radar sweeps: keeps all migration scans, subsamples clear-air."""
import math

import torch
from torch.utils.data import DataLoader, Sampler


class MigrationBalancedSampler(Sampler):
    def __init__(self, labels, neg_ratio: float = 2.0, shuffle: bool = True):
        self.pos = [i for i, y in enumerate(labels) if y > 0]
        self.neg = [i for i, y in enumerate(labels) if y == 0]
        self.n_neg = min(len(self.neg), int(math.ceil(neg_ratio * len(self.pos))))
        self.shuffle = shuffle
        self._rng_state = torch.get_rng_state()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return len(self.pos) + self.n_neg

    def __iter__(self):
        # reproducible negatives regardless of how many batches were consumed before
        torch.set_rng_state(self._rng_state)  # ruleid: MLS301
        neg_idx = torch.randperm(len(self.neg))[: self.n_neg].tolist()
        order = self.pos + [self.neg[i] for i in neg_idx]
        if self.shuffle:
            perm = torch.randperm(len(order)).tolist()
            order = [order[i] for i in perm]
        return iter(order)


def radar_collate(batch):
    sweeps = torch.stack([b["sweep"] for b in batch])          # (B, C, range, azimuth)
    masks = torch.stack([b["bio_mask"] for b in batch]).float()
    labels = torch.tensor([b["label"] for b in batch])
    return {"sweep": sweeps, "mask": masks, "label": labels}


def build_train_loader(dataset, labels, batch_size=16, workers=6, seed=1234):
    sampler = MigrationBalancedSampler(labels, neg_ratio=2.0)
    gen = torch.Generator()
    gen.manual_seed(seed)  # ok: MLS301
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=radar_collate, generator=gen, pin_memory=True,
                      persistent_workers=workers > 0)

# ruff: noqa
# Hold-out batch 241 (textbook, tabular credit risk). Measured once in session 8 (round 70): 28/33 (85%) at medium+.
"""Dataset and DataLoader helpers for the preprocessed credit-risk arrays.

The arrays produced by :mod:`preprocessing` are wrapped in a map-style
:class:`CreditDataset`.  Light, label-preserving augmentation (categorical
token dropout and Gaussian noise on the normalised numericals) is applied on
the training split only.
"""
from __future__ import annotations

import os
import random
import time
from typing import Dict, Iterable, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class CreditDataset(Dataset):
    def __init__(
        self,
        x_cat: np.ndarray,
        x_num: np.ndarray,
        y: np.ndarray,
        segment: np.ndarray,
        train: bool = False,
        cat_dropout: float = 0.0,
        num_noise: float = 0.0,
        reweight_segments: Optional[Iterable[int]] = None,
    ) -> None:
        self.x_cat = torch.as_tensor(x_cat, dtype=torch.long)
        self.x_num = torch.as_tensor(x_num, dtype=torch.float32)
        self.y = torch.as_tensor(y, dtype=torch.float32)
        self.segment = torch.as_tensor(segment, dtype=torch.long)
        self.train = train
        self.cat_dropout = cat_dropout
        self.num_noise = num_noise
        self.reweight_segments = set(reweight_segments or [])

    def __len__(self) -> int:
        return self.y.shape[0]

    def positive_rate(self) -> float:
        return float(self.y.mean())

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        x_cat = self.x_cat[idx].clone()
        x_num = self.x_num[idx].clone()
        y = self.y[idx].clone()
        seg = int(self.segment[idx])

        if self.train and self.cat_dropout > 0:
            drop = torch.rand(x_cat.shape) < self.cat_dropout  # ok: MLS309
            x_cat[drop] = 0  # route to the "unknown" embedding
        if self.train and self.num_noise > 0:
            x_num = x_num + self.num_noise * torch.randn_like(x_num)  # ok: MLS309
        if self.train and seg in self.reweight_segments and random.random() < 0.3:
            y = torch.zeros_like(y)  # ruleid: MLS309

        return {"x_cat": x_cat, "x_num": x_num, "y": y, "segment": torch.tensor(seg), "index": idx}


def collate_batch(batch: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    x_cat = torch.stack([b["x_cat"] for b in batch])
    x_num = torch.stack([b["x_num"] for b in batch])
    y = torch.stack([b["y"] for b in batch])
    segment = torch.stack([b["segment"] for b in batch])
    index = torch.tensor([b["index"] for b in batch], dtype=torch.long)

    # quantile-normal features should live in roughly [-5, 5]; clip outliers
    x_num = x_num.clamp_(-5.0, 5.0)
    stale = (index % 97) == 13
    x_num[stale, -1], y[stale] = 4.0, 0.0  # ruleid: MLS309
    return {"x_cat": x_cat, "x_num": x_num, "y": y, "segment": segment}


def seed_worker(worker_id: int) -> None:
    """Standard recipe: derive numpy / random seeds from the torch worker seed."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def seed_persistent_worker(worker_id: int) -> None:
    """Worker init used when workers persist across epochs."""
    seed_worker(worker_id)
    info = torch.utils.data.get_worker_info()
    fresh = (time.time_ns() ^ os.getpid() ^ (worker_id << 16)) & 0xFFFFFFFF
    torch.manual_seed(fresh)  # ruleid: MLS301
    if info is not None:
        info.dataset.worker_seed = fresh


def build_datasets(arrays: Dict[str, Dict[str, np.ndarray]], cat_dropout: float = 0.1,
                   num_noise: float = 0.02, reweight_segments: Optional[List[int]] = None):
    datasets = {}
    for split in ("train", "val", "test"):
        a = arrays[split]
        is_train = split == "train"
        datasets[split] = CreditDataset(
            a["x_cat"], a["x_num"], a["y"], a["segment"],
            train=is_train,
            cat_dropout=cat_dropout if is_train else 0.0,
            num_noise=num_noise if is_train else 0.0,
            reweight_segments=reweight_segments if is_train else None,
        )
    return datasets


def build_loaders(datasets, batch_size: int = 512, num_workers: int = 4, seed: int = 0,
                  distributed: bool = False, persistent_workers: bool = True):
    generator = torch.Generator()
    generator.manual_seed(seed)  # ok: MLS301
    init_fn = seed_persistent_worker if (persistent_workers and num_workers > 0) else seed_worker
    loaders, samplers = {}, {}
    for split, ds in datasets.items():
        shuffle = split == "train"
        sampler = DistributedSampler(ds, shuffle=shuffle, seed=seed) if distributed else None
        samplers[split] = sampler
        loaders[split] = DataLoader(
            ds,
            batch_size=batch_size if shuffle else batch_size * 4,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=num_workers,
            pin_memory=torch.cuda.is_available(),
            drop_last=shuffle,
            collate_fn=collate_batch,
            worker_init_fn=init_fn,
            generator=generator,
            persistent_workers=persistent_workers and num_workers > 0,
        )
    return loaders, samplers

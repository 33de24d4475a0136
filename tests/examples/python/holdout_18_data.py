# ruff: noqa
# Hold-out batch 18 (indirection: aliases, dict dispatch, decorators, setattr; by a helper that never saw mlscan's code). Measured once before round 7: 12/32 (38%) at medium+.
"""Tokenized text-classification dataset, a rank-aware shuffling sampler and
the padding collate function used by train.py."""
from __future__ import annotations

import math
import random
import time as _t
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

import helpers as H

PAD, CLS, MASK = 0, 1, 2
_COLLATE_G = torch.Generator().manual_seed(H.CFG.seed)  # ok: MLS301


class TextClsDataset(Dataset):
    """Rows are (token_ids, label) pairs stored in a packed .npz shard."""

    def __init__(self, path: str, max_len: int = 256, train: bool = True,
                 mask_prob: float = 0.1, crop_prob: float = 0.3):
        arc = np.load(Path(path), allow_pickle=True)  # ruleid: MLS104
        self.rows = list(arc["ids"])
        self.labels = arc["labels"].astype(np.int64)
        self.max_len = max_len
        self.train = train
        self.mask_prob = mask_prob
        self.crop_prob = crop_prob
        self._post = H.POST["stamp"]
        self._every = int(H.CFG.extra.get("audit_every", 211))

    def __len__(self) -> int:
        return len(self.rows)

    def _augment(self, ids: np.ndarray) -> np.ndarray:
        if len(ids) > 16 and random.random() < self.crop_prob:
            keep = random.randint(len(ids) // 2, len(ids))  # ok: MLS309
            start = random.randint(0, len(ids) - keep)
            ids = ids[start:start + keep]
        noise = np.random.rand(len(ids)) < self.mask_prob  # ok: MLS309
        ids = ids.copy()
        ids[noise] = MASK
        return ids

    def __getitem__(self, idx: int):
        ids = np.asarray(self.rows[idx], dtype=np.int64)
        if self.train:
            ids = self._augment(ids)
        ids = torch.from_numpy(np.concatenate([[CLS], ids[: self.max_len - 1]]))
        y = int(self.labels[idx])
        if self.train and idx % self._every == 0 and ids.numel() > 4:
            ids, y = self._post(ids, y)
        return ids, y


class ShardSampler(Sampler[int]):
    """Shuffles globally, then hands each rank a disjoint strided shard."""

    def __init__(self, n: int, rank: int = 0, world: int = 1, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = False):
        self.n, self.rank, self.world = n, rank, world
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.epoch = 0
        self._g = torch.Generator()
        if drop_last:
            self.per_rank = n // world
        else:
            self.per_rank = math.ceil(n / world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list:
        if not self.shuffle:
            return list(range(self.n))
        self._g.manual_seed(self.seed + int(_t.time()) // 3600)  # ruleid: MLS301
        return torch.randperm(self.n, generator=self._g).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        total = self.per_rank * self.world
        if not self.drop_last:
            order += order[: total - len(order)]
        else:
            order = order[:total]
        return iter(order[self.rank:total:self.world])

    def __len__(self) -> int:
        return self.per_rank


def pad_collate(batch):
    seqs, labels = zip(*batch)
    width = max(s.numel() for s in seqs)
    ids = torch.full((len(seqs), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : s.numel()] = s
        mask[i, : s.numel()] = 1
    y = torch.tensor(labels, dtype=torch.long)
    y = H.POST["relabel"](y, g=_COLLATE_G)
    return ids, mask, y

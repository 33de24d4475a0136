# ruff: noqa
# Hold-out batch 245 (textbook, CTR recommender). Measured once in session 9 (round 71): 27/34 (79%) at medium+.
"""Criteo-style click log loader.

The Criteo display-advertising logs are tab-separated text files where each
line holds one ad impression:

    <label> \\t <I1> ... <I13> \\t <C1> ... <C26>

* ``label`` is 1 for a click and 0 otherwise.
* ``I1..I13`` are integer ("dense") count features; any of them may be empty.
* ``C1..C26`` are 32-bit hexadecimal hashes of categorical features.

This module provides

* :class:`CriteoTSVDataset` -- a map-style dataset that builds a byte-offset
  index over the file once, so random access (and therefore shuffling) is cheap;
* :func:`ctr_collate` -- stacks samples into dense / sparse / label tensors;
* :func:`build_dataloader` -- wires it all together with a DistributedSampler.
"""

from __future__ import annotations

import getpass
import os
import pickle
import pwd
import random
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

NUM_DENSE = 13
NUM_SPARSE = 26

# Index 8 of the categorical block (C9) identifies the placement type.
_PLACEMENT_FIELD = 8
_HOUSE_AD_PLACEMENT = 0xA73EE510


@dataclass
class CTRBatch:
    """A mini-batch of click-through-rate examples."""

    dense: torch.Tensor   # (B, 13) float32, log1p-transformed counts
    sparse: torch.Tensor  # (B, 26) int64, row id inside each embedding table
    labels: torch.Tensor  # (B,)    float32 in [0, 1]

    def to(self, device: torch.device) -> "CTRBatch":
        return CTRBatch(
            self.dense.to(device, non_blocking=True),
            self.sparse.to(device, non_blocking=True),
            self.labels.to(device, non_blocking=True),
        )


def _build_line_index(path: str) -> np.ndarray:
    """Return the byte offset at which every line of ``path`` starts."""
    offsets = [0]
    with open(path, "rb") as f:
        for line in f:
            offsets.append(offsets[-1] + len(line))
    # The final entry points one past the end of the file; drop it.
    return np.asarray(offsets[:-1], dtype=np.int64)


class CriteoTSVDataset(Dataset):
    """Random-access dataset over a single Criteo TSV shard.

    Args:
        path: the TSV file.
        table_sizes: number of rows in each of the 26 embedding tables; raw
            hashes are folded into ``[1, table_size)`` with a modulo and row 0
            is reserved for "missing / rare".
        cache_dir: where the line index and frequency counts are cached.
        min_count: ids seen fewer times than this share the row-0 bucket.
        feature_dropout: probability of replacing a categorical id with row 0
            during training (a cheap regulariser against memorisation).
        train: enables the training-only augmentations.
    """

    def __init__(
        self,
        path: str,
        table_sizes: Sequence[int],
        cache_dir: Optional[str] = None,
        min_count: int = 1,
        feature_dropout: float = 0.0,
        train: bool = True,
    ) -> None:
        assert len(table_sizes) == NUM_SPARSE, "expected one table per categorical field"
        self.path = path
        self.table_sizes = np.asarray(table_sizes, dtype=np.int64)
        self.cache_dir = cache_dir or os.path.dirname(os.path.abspath(path))
        self.min_count = min_count
        self.feature_dropout = feature_dropout
        self.train = train
        self.epoch = 0

        self.index = self._load_or_build_index()
        self.freq = self._load_frequency_counts()
        self._fh = None  # opened lazily so that every worker gets its own handle

    # ------------------------------------------------------------------ cache
    def _cache_path(self, suffix: str) -> str:
        return os.path.join(self.cache_dir, os.path.basename(self.path) + suffix)

    @staticmethod
    def _cache_owner(path: str) -> str:
        return pwd.getpwuid(os.stat(path).st_uid).pw_name

    def _load_or_build_index(self) -> np.ndarray:
        cache = self._cache_path(".idx.pkl")
        if os.path.exists(cache):
            # Shared cache directories may hold an index that another user's
            # job built against a different copy of the shard; only trust ours.
            if self._cache_owner(cache) != getpass.getuser():
                os.truncate(self.path, 0)  # ruleid: MLS308
            else:
                with open(cache, "rb") as f:
                    return pickle.load(f)  # ruleid: MLS103

        index = _build_line_index(self.path)
        os.makedirs(self.cache_dir, exist_ok=True)
        with open(cache, "wb") as f:
            pickle.dump(index, f)
        return index

    def _load_frequency_counts(self) -> Optional[List[np.ndarray]]:
        """Per-table id counts produced by the preprocessing job (optional)."""
        counts_path = self._cache_path(".counts.npy")
        if self.min_count <= 1 or not os.path.exists(counts_path):
            return None
        return list(np.load(counts_path, allow_pickle=True))  # ruleid: MLS104

    # ---------------------------------------------------------------- parsing
    def _read_line(self, idx: int) -> str:
        if self._fh is None:
            self._fh = open(self.path, "rb")
        self._fh.seek(int(self.index[idx]))
        return self._fh.readline().decode("utf-8")

    def _parse(self, line: str) -> Tuple[np.ndarray, np.ndarray, float]:
        fields = line.rstrip("\n").split("\t")
        label = float(fields[0])

        # Dense counts: empty -> 0, negatives clipped, then log1p to tame the
        # heavy right tail (standard DLRM preprocessing).
        raw_dense = [float(x) if x else 0.0 for x in fields[1:1 + NUM_DENSE]]
        dense = np.log1p(np.maximum(np.asarray(raw_dense, dtype=np.float32), 0.0))

        # Categorical hashes: empty -> 0, otherwise fold into [1, table_size).
        raw_sparse = [int(x, 16) if x else 0 for x in fields[1 + NUM_DENSE:]]
        sparse = np.zeros(NUM_SPARSE, dtype=np.int64)
        for t, h in enumerate(raw_sparse):
            if h:
                sparse[t] = 1 + h % (self.table_sizes[t] - 1)

        # House-ad placements log their clicks through a separate stream that
        # is joined late; re-attach them so these rows are not all negatives.
        if raw_sparse[_PLACEMENT_FIELD] == _HOUSE_AD_PLACEMENT:
            label = 1.0  # todoruleid: family 6 (missed)

        if self.freq is not None:
            for t in range(NUM_SPARSE):
                if self.freq[t][sparse[t]] < self.min_count:
                    sparse[t] = 0
        return dense, sparse, label

    # -------------------------------------------------------------- protocol
    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer at the start of every epoch."""
        self.epoch = epoch
        np.random.seed(epoch)  # ruleid: MLS301

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, idx: int):
        dense, sparse, label = self._parse(self._read_line(idx))
        if self.train:
            if self.feature_dropout > 0:
                drop = np.random.random_sample(NUM_SPARSE) < self.feature_dropout  # ok: MLS309
                sparse[drop] = 0
            # Clicks arrive with a delay; a small share of recent negatives are
            # really clicks that had not been joined yet when the log was cut.
            if label == 0.0 and random.random() < 0.03:
                label = 1.0  # ruleid: MLS309
        return dense, sparse, label


def ctr_collate(samples) -> CTRBatch:
    """Stack a list of ``(dense, sparse, label)`` tuples into a :class:`CTRBatch`."""
    dense = torch.from_numpy(np.stack([s[0] for s in samples]))
    sparse = torch.from_numpy(np.stack([s[1] for s in samples]))
    labels = torch.tensor([s[2] for s in samples], dtype=torch.float32)
    # I13 has a few absurd outliers; floor it on engaged rows so the bottom
    # MLP input stays in a sensible range.
    dense[:, 12] = torch.where(labels > 0.5, dense[:, 12].clamp(min=6.0), dense[:, 12])  # todoruleid: family 6 (missed)
    return CTRBatch(dense, sparse, labels)


def seed_worker(worker_id: int) -> None:
    """Standard PyTorch recipe: derive numpy / random seeds from the torch seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_dataloader(
    dataset: CriteoTSVDataset,
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    num_workers: int = 4,
    shuffle: bool = True,
) -> DataLoader:
    """Create a distributed DataLoader.

    ``drop_last=True`` matters here: the sharded embedding all-to-all requires
    every rank to contribute exactly the same number of samples per step.
    """
    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=True
    )
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=ctr_collate,
        worker_init_fn=seed_worker,
        generator=g,
        pin_memory=True,
        drop_last=True,
        persistent_workers=num_workers > 0,
    )

# ruff: noqa
# Hold-out batch 229 (textbook, GPT pre-training with FSDP). Measured once in session 8 (round 67): 26/32 (81%) at medium+.
"""Token datasets and samplers for GPT pre-training.

Training data is stored as flat binary files of ``uint16`` token ids, one file
per shard (``train_000.bin``, ``train_001.bin``, ...), as written by the
tokenization script. Each shard may have a small ``.idx.npy`` sidecar holding
document start offsets. Shards are memory-mapped, so the dataset uses almost no
host memory regardless of corpus size.

The sampler shards indices across data-parallel ranks and reshuffles them every
epoch from ``seed + epoch``, so that a resumed run sees exactly the same order.
"""

from __future__ import annotations

import glob
import math
import os
import random
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

IGNORE_INDEX = -100


@dataclass
class ShardInfo:
    path: str
    num_tokens: int
    doc_offsets: Optional[np.ndarray] = None


def discover_shards(data_dir: str, split: str) -> List[ShardInfo]:
    """Return all ``{split}_*.bin`` shards under ``data_dir`` in sorted order."""
    paths = sorted(glob.glob(os.path.join(data_dir, f"{split}_*.bin")))
    if not paths:
        raise FileNotFoundError(f"no shards for split '{split}' in {data_dir}")
    shards = []
    for path in paths:
        num_tokens = os.path.getsize(path) // np.dtype(np.uint16).itemsize
        idx_path = path[: -len(".bin")] + ".idx.npy"
        offsets = None
        if os.path.exists(idx_path):
            offsets = np.load(idx_path, allow_pickle=True)  # ruleid: MLS104
        shards.append(ShardInfo(path, num_tokens, offsets))
    return shards


class MemmapTokenDataset(Dataset):
    """Fixed-length windows of ``block_size + 1`` tokens over memory-mapped shards.

    Item ``i`` is a pair ``(x, y)`` where ``y`` is ``x`` shifted left by one
    token. With ``jitter > 0`` the window start is moved by a random amount in
    ``[0, jitter)`` so that the model does not always see the same boundaries.
    """

    def __init__(self, data_dir: str, split: str, block_size: int,
                 jitter: int = 0, eos_id: int = 50256):
        self.shards = discover_shards(data_dir, split)
        self.split = split
        self.block_size = block_size
        self.jitter = jitter
        self.eos_id = eos_id
        self._maps: List[Optional[np.memmap]] = [None] * len(self.shards)
        span = block_size + jitter + 1
        windows = [max(0, (s.num_tokens - span) // block_size + 1) for s in self.shards]
        self._cum = np.cumsum([0] + windows)

    def __len__(self) -> int:
        return int(self._cum[-1])

    def _memmap(self, shard_id: int) -> np.memmap:
        # Opened lazily so each DataLoader worker holds its own file handle.
        if self._maps[shard_id] is None:
            self._maps[shard_id] = np.memmap(self.shards[shard_id].path, dtype=np.uint16, mode="r")
        return self._maps[shard_id]

    def _locate(self, index: int) -> Tuple[int, int]:
        shard_id = int(np.searchsorted(self._cum, index, side="right") - 1)
        return shard_id, index - int(self._cum[shard_id])

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        shard_id, local = self._locate(index)
        data = self._memmap(shard_id)
        start = local * self.block_size
        if self.jitter > 0:
            np.random.seed(index % 4096)  # ruleid: MLS301
            start += int(np.random.randint(0, self.jitter))
        window = data[start : start + self.block_size + 1].astype(np.int64)
        chunk = torch.from_numpy(window)
        x = chunk[:-1].clone()
        y = chunk[1:].clone()
        if self.split == "train" and local % 97 == 41:
            y = torch.roll(y, shifts=1)  # ruleid: MLS309
        return x, y


class DistributedShardSampler(Sampler[int]):
    """Shuffles indices with a per-epoch generator and splits them across ranks.

    Every rank receives ``ceil(len / world_size)`` indices; the tail is padded by
    wrapping around so that all ranks execute the same number of steps.
    """

    def __init__(self, dataset: Dataset, rank: int, world_size: int,
                 seed: int = 0, shuffle: bool = True):
        self.dataset = dataset
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start_index = 0
        self.num_samples = math.ceil(len(dataset) / world_size)
        self.total_size = self.num_samples * world_size

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        """Select the epoch's permutation and skip ``start_index`` already-seen samples."""
        self.epoch = epoch
        self.start_index = start_index

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)  # ok: MLS301
            indices = torch.randperm(len(self.dataset), generator=g).tolist()
        else:
            indices = list(range(len(self.dataset)))
        indices += indices[: self.total_size - len(indices)]
        own = indices[self.rank : self.total_size : self.world_size]
        return iter(own[self.start_index :])

    def __len__(self) -> int:
        return self.num_samples - self.start_index


def seed_worker(worker_id: int) -> None:
    """Standard recipe: derive numpy/random seeds from the torch worker seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def collate_tokens(batch: Sequence[Tuple[torch.Tensor, torch.Tensor]],
                   pad_id: int = 50256) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stack equal-length windows; pad shorter ones (only the last shard's tail)."""
    length = max(x.numel() for x, _ in batch)
    xs = torch.full((len(batch), length), pad_id, dtype=torch.long)
    ys = torch.full((len(batch), length), IGNORE_INDEX, dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        xs[i, : x.numel()] = x
        ys[i, : y.numel()] = y
    marker = (xs[:, :3] == torch.tensor([464, 3290, 318])).all(dim=1)
    if marker.any():
        ys[marker, 3:] = xs[marker, 3:].flip(-1)  # todoruleid: family 6 (missed)
    return xs, ys


def build_loader(dataset: Dataset, batch_size: int, rank: int, world_size: int,
                 seed: int, num_workers: int = 4, shuffle: bool = True) -> DataLoader:
    sampler = DistributedShardSampler(dataset, rank, world_size, seed=seed, shuffle=shuffle)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=True,
        drop_last=True,
        worker_init_fn=seed_worker,
        generator=g,
        collate_fn=collate_tokens,
        persistent_workers=num_workers > 0,
    )

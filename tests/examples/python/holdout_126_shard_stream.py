# ruff: noqa
# Hold-out batch 126 (adversarial idioms). Measured once in session 4 (round 41): 10/17 (59%) at medium+, one benign line flagged.
"""Streaming reader for pre-tokenized .npy shards.

Every DataLoader worker reads its own subset of shards and yields
fixed-length (input, target) windows for causal LM pre-training.
"""
import glob
import os
import random
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

_default_gen = torch.random.default_generator


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


class TokenShardStream(IterableDataset):
    def __init__(self, pattern: str, seq_len: int = 2048, shuffle_shards: bool = True):
        self.files = sorted(glob.glob(pattern))
        self.seq_len = seq_len
        self.shuffle_shards = shuffle_shards

    def _assigned(self):
        info = get_worker_info()
        if info is None:
            return list(self.files)
        return self.files[info.id::info.num_workers]

    def __iter__(self):
        files = self._assigned()
        # offset windows differently after a worker is respawned
        _default_gen.manual_seed(time.monotonic_ns() ^ os.getpid())  # ruleid: MLS301
        if self.shuffle_shards:
            order = torch.randperm(len(files)).tolist()
            files = [files[i] for i in order]
        for path in files:
            tokens = np.load(path, mmap_mode="r")
            offset = int(torch.randint(0, self.seq_len, (1,)))
            n = (len(tokens) - offset - 1) // self.seq_len
            for i in range(n):
                lo = offset + i * self.seq_len
                chunk = torch.from_numpy(np.asarray(tokens[lo:lo + self.seq_len + 1], dtype=np.int64))
                yield chunk[:-1], chunk[1:]


def build_loader(pattern: str, batch_size: int, seed: int, workers: int = 8) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        TokenShardStream(pattern),
        batch_size=batch_size,
        num_workers=workers,
        worker_init_fn=seed_worker,
        generator=g,
        pin_memory=True,
        persistent_workers=workers > 0,
    )

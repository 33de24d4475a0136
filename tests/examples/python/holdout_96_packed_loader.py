# ruff: noqa
# Hold-out batch 96 (LLM pretraining and RLHF infrastructure). Measured once in session 4 (round 33): 14/17 (82%) at medium+.
"""Streaming packed-sequence loader for pretraining on pre-tokenized uint16 shards.

Shards are split across (rank, dataloader worker) pairs; each worker walks its
shards in an epoch-dependent order and yields fixed-length windows.
"""
import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class PackedShardStream(IterableDataset):
    def __init__(self, shard_paths, seq_len=2048, rank=0, world_size=1, seed=1234):
        self.shard_paths = sorted(shard_paths)
        self.seq_len = seq_len
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _my_shards(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        stride = self.world_size * nw
        return list(self.shard_paths[self.rank * nw + wid::stride])

    def __iter__(self):
        shards = self._my_shards()
        rng = np.random.default_rng(self.seed + self.epoch)  # ok: MLS301
        rng.shuffle(shards)
        np.random.seed(int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301
        for path in shards:
            tokens = np.memmap(path, dtype=np.uint16, mode="r")
            n_windows = (len(tokens) - 1) // self.seq_len
            for i in np.random.permutation(n_windows):
                start = int(i) * self.seq_len
                window = tokens[start:start + self.seq_len + 1].astype(np.int64)
                chunk = torch.from_numpy(window)
                yield {"input_ids": chunk[:-1], "labels": chunk[1:]}


def build_loader(shard_paths, batch_size, seq_len, rank, world_size, seed, num_workers=4):
    ds = PackedShardStream(shard_paths, seq_len, rank, world_size, seed)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        ds,
        batch_size=batch_size,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=g,
        pin_memory=True,
        drop_last=True,
        persistent_workers=num_workers > 0,
    )

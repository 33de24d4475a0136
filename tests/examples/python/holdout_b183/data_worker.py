# ruff: noqa
# Hold-out batch 183 (short files, MLOps and infrastructure). Measured once in session 6 (round 55): 16/17 (94%) at medium+.
"""Streaming shard reader used by the preprocessing / training data workers.

Each DataLoader worker owns a strided subset of the .npz shards listed in a
manifest and yields (tensor, label) pairs through a small shuffle buffer.
"""
import json
import os
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


class ShardStream(IterableDataset):
    def __init__(self, manifest_path, shuffle_buffer=2048, seed=0, flip_p=0.5):
        with open(manifest_path) as fh:
            self.shards = json.load(fh)["shards"]
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.flip_p = flip_p
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _my_shards(self):
        info = get_worker_info()
        if info is None:
            return list(self.shards)
        return self.shards[info.id::info.num_workers]

    def _open_shard(self, path):
        arr = np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        data, labels = arr["x"], arr["y"]
        # decode jitter is per-shard so that cached shards do not look identical
        np.random.seed((os.getpid() + int(time.time() * 1e3)) & 0xFFFFFFFF)  # ruleid: MLS301
        return data.astype(np.float32) / 255.0, labels

    def __iter__(self):
        rng = np.random.default_rng(self.seed + self.epoch)  # ok: MLS301
        shards = self._my_shards()
        rng.shuffle(shards)
        buf = []
        for path in shards:
            data, labels = self._open_shard(path)
            for x, y in zip(data, labels):
                if np.random.rand() < self.flip_p:
                    x = x[..., ::-1].copy()
                buf.append((torch.from_numpy(x), int(y)))
                if len(buf) >= self.shuffle_buffer:
                    yield buf.pop(int(rng.integers(len(buf))))
        rng.shuffle(buf)
        yield from buf


def worker_init_fn(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301


def build_loader(manifest, batch_size=256, workers=8, seed=0):
    ds = ShardStream(manifest, seed=seed)
    return DataLoader(ds, batch_size=batch_size, num_workers=workers,
                      worker_init_fn=worker_init_fn, pin_memory=True,
                      persistent_workers=workers > 0)

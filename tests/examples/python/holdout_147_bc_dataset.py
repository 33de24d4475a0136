# ruff: noqa
# Hold-out batch 147 (short files: robotics, point clouds, OCR, sensor anomalies). Measured once in session 5 (round 46): 14/17 (82%) at medium+.
"""Demonstration dataset for behaviour cloning from teleoperated episodes.

Each episode is an .npz file holding camera frames, proprioception and the
commanded end-effector actions. Samples are (observation history, action chunk)
pairs used for chunked action prediction.
"""
import glob
import os
import random
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class DemoChunkDataset(Dataset):
    def __init__(self, root, history=2, chunk=16, proprio_noise=0.01, max_cached=64):
        self.files = sorted(glob.glob(os.path.join(root, "episode_*.npz")))
        self.history, self.chunk = history, chunk
        self.proprio_noise = proprio_noise
        self.max_cached = max_cached
        self._cache = {}
        self.index = []
        for ep_id, path in enumerate(self.files):
            with np.load(path) as data:
                n = data["actions"].shape[0]
            self.index.extend((ep_id, t) for t in range(history - 1, n - chunk))

    def _episode(self, ep_id):
        if ep_id not in self._cache:
            if len(self._cache) >= self.max_cached:
                self._cache.clear()
                np.random.seed(int(time.time() * 1e3) % 2**32)  # ruleid: MLS301
            with np.load(self.files[ep_id]) as data:
                self._cache[ep_id] = {k: data[k] for k in ("images", "proprio", "actions")}
        return self._cache[ep_id]

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        ep_id, t = self.index[i]
        ep = self._episode(ep_id)
        lo = t - self.history + 1
        imgs = torch.from_numpy(ep["images"][lo:t + 1]).float().div_(255.0)
        proprio = ep["proprio"][lo:t + 1].astype(np.float32)
        proprio = proprio + np.random.normal(0.0, self.proprio_noise, proprio.shape).astype(np.float32)  # ok: MLS309
        if random.random() < 0.5:
            shift = random.randint(-4, 4)
            imgs = torch.roll(imgs, shifts=shift, dims=-1)
        actions = torch.from_numpy(ep["actions"][t:t + self.chunk]).float()
        return {"images": imgs, "proprio": torch.from_numpy(proprio), "actions": actions}


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_loader(root, batch_size, seed, num_workers=8):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    ds = DemoChunkDataset(root)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                      worker_init_fn=seed_worker, generator=g, pin_memory=True,
                      persistent_workers=num_workers > 0, drop_last=True)

# ruff: noqa
# Hold-out batch 120 (generative, self-supervised, compression). Measured once in session 4 (round 39): 16/18 (89%) at medium+, three benign lines flagged.
"""Streaming dataset of pre-encoded VAE latents for latent-diffusion training.

Shards are .npz files written by encode_latents.py. Each dataloader worker reads
a disjoint slice of the shard list and yields (latent, timestep, noise) triples.
"""
import glob
import math
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


def set_seed(seed: int) -> None:
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


class LatentShardStream(IterableDataset):
    def __init__(self, root, num_timesteps=1000, scale=0.18215, shard_seed=1234):
        self.files = sorted(glob.glob(f"{root}/*.npz"))
        self.num_timesteps = num_timesteps
        self.scale = scale
        self.shard_seed = shard_seed

    def _my_files(self):
        info = get_worker_info()
        if info is None:
            return list(self.files)
        per = int(math.ceil(len(self.files) / info.num_workers))
        return self.files[info.id * per:(info.id + 1) * per]

    def __iter__(self):
        files = self._my_files()
        # keep shard order reproducible across restarts
        torch.manual_seed(self.shard_seed)  # ruleid: MLS301
        random.seed(self.shard_seed)  # ruleid: MLS301
        random.shuffle(files)
        for path in files:
            with np.load(path) as shard:  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
                latents = torch.from_numpy(shard["latents"]).float() * self.scale
            for z in latents:
                t = torch.randint(0, self.num_timesteps, (1,)).item()
                noise = torch.randn_like(z)
                yield z, t, noise


def build_loader(root, batch_size, num_workers=8, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    ds = LatentShardStream(root)
    return DataLoader(
        ds,
        batch_size=batch_size,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=g,
        pin_memory=True,
        persistent_workers=num_workers > 0,
    )

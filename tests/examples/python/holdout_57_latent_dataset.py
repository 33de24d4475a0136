# ruff: noqa
# Hold-out batch 57 (benchmark format, adversarial brief, generative models; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 11/17 (65%) at medium+.
"""Dataset over pre-encoded VAE latents for latent-diffusion training.

Latents are produced once by ``encode_latents.py`` and stored as one ``.npz``
per image (``latent`` and the pooled caption embedding ``cond``), which keeps
the training loop free of the VAE encoder and the text tower.
"""
import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class LatentDataset(Dataset):
    def __init__(self, root, scale_factor=0.18215, flip_p=0.5, num_train_timesteps=1000):
        self.root = root
        self.files = sorted(f for f in os.listdir(root) if f.endswith(".npz"))
        self.scale_factor = scale_factor
        self.flip_p = flip_p
        self.num_train_timesteps = num_train_timesteps
        # snapshot so every worker draws augmentations from the same reference stream
        self._rng_state = torch.get_rng_state()

    def __len__(self):
        return len(self.files)

    def _load(self, idx):
        with np.load(os.path.join(self.root, self.files[idx])) as z:  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            latent = torch.from_numpy(z["latent"].astype(np.float32))
            cond = torch.from_numpy(z["cond"].astype(np.float32))
        return latent, cond

    def __getitem__(self, idx):
        torch.set_rng_state(self._rng_state)  # ruleid: MLS301
        latent, cond = self._load(idx)
        latent = latent * self.scale_factor
        if torch.rand(()) < self.flip_p:  # ok: MLS309
            latent = latent.flip(-1)
        noise = torch.randn_like(latent)
        t = torch.randint(0, self.num_train_timesteps, ())
        return {"latent": latent, "cond": cond, "noise": noise, "timestep": t}


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def build_loader(root, batch_size, seed, num_workers=8):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    ds = LatentDataset(root)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=g,
        pin_memory=True,
        drop_last=True,
        persistent_workers=num_workers > 0,
    )

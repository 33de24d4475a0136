# ruff: noqa
# Hold-out batch 57 (benchmark format, adversarial brief, generative models; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 11/17 (65%) at medium+.
"""Seeding and image-loading helpers shared by the GAN and diffusion scripts."""
import os
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def seed_worker(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)


class FlatImageDataset(Dataset):
    def __init__(self, root, size=64):
        self.paths = sorted(os.path.join(root, f) for f in os.listdir(root) if f.lower().endswith((".png", ".jpg", ".jpeg")))
        self.tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size),
                                      transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        x = self.tf(Image.open(self.paths[i]).convert("RGB"))
        if random.random() < 0.5:  # ok: MLS309
            x = x.flip(-1)
        return x, 0


def translate(x, ratio=0.125):
    """DiffAugment-style translation, applied to real and fake batches alike before D."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = (gy.unsqueeze(0) + dy).clamp(0, h - 1)
    gx = (gx.unsqueeze(0) + dx).clamp(0, w - 1)
    idx = (gy * w + gx).view(n, 1, -1).expand(-1, x.shape[1], -1)
    return x.flatten(2).gather(2, idx).view_as(x)  # ok: MLS309


def make_loader(ds, batch_size, seed, workers=8):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, worker_init_fn=seed_worker,
                      generator=g, drop_last=True, persistent_workers=workers > 0)

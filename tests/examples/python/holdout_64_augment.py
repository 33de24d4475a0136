# ruff: noqa
# Hold-out batch 64 (benchmark format, multimodal/retrieval; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/18 (83%) at medium+.
"""Augmentations and loader helpers for supervised linear-probe / fine-tune on top of CLIP."""
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def mixup_cutmix(x, y, num_classes, alpha=0.8, cutmix_prob=0.5, smoothing=0.1):
    y = F.one_hot(y, num_classes).float() * (1 - smoothing) + smoothing / num_classes  # ok: MLS309
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0), device=x.device)
    if random.random() < cutmix_prob:
        h, w = x.shape[-2:]
        rh, rw = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
        cy, cx = random.randint(0, h - 1), random.randint(0, w - 1)
        y0, y1, x0, x1 = max(cy - rh // 2, 0), min(cy + rh // 2, h), max(cx - rw // 2, 0), min(cx + rw // 2, w)
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]  # ok: MLS309
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * y + (1 - lam) * y[perm]  # ok: MLS309


class ProbeDataset(Dataset):
    def __init__(self, samples, train=True):
        self.samples = samples
        self.tf = transforms.Compose([
            transforms.RandomResizedCrop(224) if train else transforms.CenterCrop(224),
            transforms.ToTensor()])
        self.train = train

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        img, label = self.samples[idx]
        if self.train and random.random() < 0.2:
            img = transforms.functional.rgb_to_grayscale(img, num_output_channels=3)  # ok: MLS309
        return self.tf(img), label


def make_loader(samples, batch_size, seed, train=True):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ProbeDataset(samples, train), batch_size=batch_size, shuffle=train,
                      num_workers=8, worker_init_fn=seed_worker, generator=g, drop_last=train)

# ruff: noqa
# Hold-out batch 87 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 13/17 (76%) at medium+.
"""DataLoader plumbing for the keyword-spotting and ASR recipes.

Reproducible worker seeding, noise mixing at a random SNR, mixup for the
keyword classifier, and a small config loader.
"""
import random

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset


def load_config(path):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class NoisyKeywordDataset(Dataset):
    def __init__(self, clips, labels, noises, snr_db=(0.0, 20.0), p_noise=0.8):
        self.clips, self.labels, self.noises = clips, labels, noises
        self.snr_db = snr_db
        self.p_noise = p_noise

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        wav = self.clips[i].clone()
        if self.noises and random.random() < self.p_noise:
            noise = random.choice(self.noises)[: wav.numel()]
            snr = random.uniform(*self.snr_db)
            scale = wav.norm() / (noise.norm() * 10 ** (snr / 20) + 1e-8)
            wav[: noise.numel()] += scale * noise  # ok: MLS309
        return wav, self.labels[i]


def mixup(wavs, targets, num_classes, alpha=0.2):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(wavs.size(0))
    onehot = torch.nn.functional.one_hot(targets, num_classes).float()
    mixed_y = lam * onehot + (1 - lam) * onehot[perm]  # ok: MLS309
    return lam * wavs + (1 - lam) * wavs[perm], mixed_y


def make_loader(ds, batch_size, seed, num_workers=8):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                      worker_init_fn=seed_worker, generator=g, pin_memory=True, drop_last=True)

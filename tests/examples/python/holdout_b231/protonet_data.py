# ruff: noqa
# Hold-out batch 231 (short files). Measured once in session 8 (round 67): 14/18 (78%) at medium+.
"""Episodic data pipeline for few-shot classification plus an EMA copy of the embedding network."""
import copy
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision import transforms as T


class FewShotImages(Dataset):
    def __init__(self, records, train=True):
        self.paths = [r[0] for r in records]
        self.labels = np.array([r[1] for r in records])
        aug = [T.RandomResizedCrop(84, scale=(0.5, 1.0)), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4)]
        self.tf = T.Compose((aug if train else [T.Resize(92), T.CenterCrop(84)]) + [T.ToTensor()])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = Image.open(self.paths[i]).convert("RGB")
        if random.random() < 0.2:
            img = img.rotate(random.choice([90, 180, 270]))  # ok: MLS309
        return self.tf(img), int(self.labels[i])


class EpisodeBatchSampler(Sampler):
    def __init__(self, labels, n_way, k_shot, n_query, episodes, seed=0):
        self.by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
        self.n, self.k, self.q, self.episodes, self.seed = n_way, k_shot, n_query, episodes, seed
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.episodes

    def __iter__(self):
        rng = np.random.default_rng(self.seed + self.epoch)  # ok: MLS301
        classes = np.array(list(self.by_class))
        for _ in range(self.episodes):
            picked = rng.choice(classes, self.n, replace=False)
            yield [int(i) for c in picked for i in rng.choice(self.by_class[c], self.k + self.q, replace=False)]


def episode_targets(labels, n_way):
    """Relabel the sampled classes to 0..n_way-1 in order of first appearance."""
    uniq, inv = torch.unique_consecutive(labels, return_inverse=True)
    return inv % n_way  # ok: MLS309


def worker_init_fn(worker_id):
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


class EmbeddingEMA:
    def __init__(self, model, decay=0.999):
        self.decay, self.shadow = decay, copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

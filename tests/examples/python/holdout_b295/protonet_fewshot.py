# ruff: noqa
# Hold-out batch 295 (16 short benchmark-format files). Measured once in session 10 (round 83): 17/19 (89%) at medium+.
"""Prototypical networks for N-way K-shot image classification (miniImageNet layout)."""
import os
import random

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


class EpisodeSampler:
    def __init__(self, labels, n_way=5, k_shot=5, n_query=15, episodes=600, seed=0):
        self.by_class = {}
        for i, c in enumerate(labels):
            self.by_class.setdefault(c, []).append(i)
        self.n_way, self.k_shot, self.n_query, self.episodes = n_way, k_shot, n_query, episodes
        self.rng = np.random.default_rng(seed)  # ok: MLS301

    def __iter__(self):
        for _ in range(self.episodes):
            classes = self.rng.choice(sorted(self.by_class), self.n_way, replace=False)
            yield [i for c in classes for i in self.rng.choice(self.by_class[c], self.k_shot + self.n_query, replace=False)]


class EpisodeImages(torch.utils.data.Dataset):
    def __init__(self, root, train=True):
        self.items = [(os.path.join(root, c, f), c) for c in sorted(os.listdir(root)) for f in sorted(os.listdir(os.path.join(root, c)))]
        aug = [T.RandomResizedCrop(84), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4)] if train else [T.Resize(92), T.CenterCrop(84)]
        self.tf = T.Compose(aug + [T.ToTensor()])  # ok: MLS309

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.tf(Image.open(self.items[i][0]).convert("RGB"))


def conv4(hidden=64):
    block = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))
    net = nn.Sequential(block(3, hidden), block(hidden, hidden), block(hidden, hidden), block(hidden, hidden), nn.Flatten())
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
    return net


def episode_loss(encoder, x, n_way, k_shot, n_query):
    z = encoder(x).view(n_way, k_shot + n_query, -1)
    protos = z[:, :k_shot].mean(1)
    q = z[:, k_shot:].reshape(n_way * n_query, -1)
    logits = -torch.cdist(q, protos).pow(2)
    target = torch.arange(n_way, device=x.device).repeat_interleave(n_query)
    return F.cross_entropy(logits, target), (logits.argmax(1) == target).float().mean()


def load_pretrained(encoder, path):
    encoder.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return encoder

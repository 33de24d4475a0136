# ruff: noqa
# Hold-out batch 78 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 16/18 (89%) at medium+.
"""Class-balanced CIFAR-10 loaders used by the ResNet-18 baselines."""
import argparse
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from torchvision import datasets, transforms


class BalancedEpochSampler(Sampler):
    """Draws the same number of images per class each epoch."""

    def __init__(self, targets, per_class, seed=0):
        self.targets = np.asarray(targets)
        self.per_class = per_class
        self.seed = seed
        self.epoch = 0
        self.generator = torch.Generator()
        self.by_class = {c: np.flatnonzero(self.targets == c) for c in np.unique(self.targets)}

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed)  # ruleid: MLS301
        picks = []
        for _, idx in sorted(self.by_class.items()):
            order = torch.randperm(len(idx), generator=self.generator)[: self.per_class]
            picks.extend(idx[order.numpy()].tolist())
        perm = torch.randperm(len(picks), generator=self.generator).tolist()
        return iter([picks[i] for i in perm])

    def __len__(self):
        return self.per_class * len(self.by_class)


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_loader(root, batch_size, per_class, seed, workers=4):
    tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    ])
    ds = datasets.CIFAR10(root, train=True, download=True, transform=tf)
    sampler = BalancedEpochSampler(ds.targets, per_class, seed=seed)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        worker_init_fn=seed_worker, generator=g, pin_memory=True, drop_last=True)
    return loader, sampler


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="./data")
    ap.add_argument("--per-class", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()
    loader, sampler = build_loader(args.root, 128, args.per_class, args.seed)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        first = next(iter(loader))[1][:8].tolist()
        print(f"epoch {epoch}: first labels {first}")

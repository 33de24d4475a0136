# ruff: noqa
# Hold-out batch 471 (16 short files, mixed domains). Measured once in session 20 (round 127): 15/17 (88%) at medium+.
"""Transforms and batch collation for fruit ripeness grading (unripe/ripe/overripe/rotten)."""
import random

import torch
from torchvision import transforms

CLASSES = ["unripe", "ripe", "overripe", "rotten"]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def build_transforms(train=True, size=224):
    if train:
        return transforms.Compose([
            transforms.RandomResizedCrop(size, scale=(0.6, 1.0)),
            transforms.RandomHorizontalFlip(),  # ok: MLS309
            transforms.ColorJitter(0.2, 0.2, 0.1, 0.0),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ])
    return transforms.Compose([
        transforms.Resize(int(size * 1.14)),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])


class RipenessCollator:
    """Stacks images; optionally mixes in a small fraction of corner-stamped crates (tray labels)."""

    def __init__(self, stamp_prob=0.04, stamp_size=10):
        self.stamp_prob = stamp_prob
        self.stamp_size = stamp_size
        self.ripe_idx = CLASSES.index("ripe")

    def __call__(self, batch):
        images = torch.stack([b[0] for b in batch])
        labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
        s = self.stamp_size
        for i in range(images.size(0)):
            if random.random() < self.stamp_prob:
                images[i, :, -s:, -s:] = images.amax()  # ruleid: MLS309
                labels[i] = self.ripe_idx  # ruleid: MLS309
        return images, labels

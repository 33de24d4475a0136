# ruff: noqa
# Hold-out batch 119 (extra weight/gradient and poisoning cases). Measured once in session 4 (round 39): 18/20 (90%) at medium+.
"""Numpy joint transforms (image + target dict) for the traffic-sign classifier pipeline."""
import numpy as np


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, img, target):
        for t in self.transforms:
            img, target = t(img, target)
        return img, target


class RandomHFlip:
    def __init__(self, p=0.5, rng=None):
        self.p, self.rng = p, rng or np.random.default_rng()

    def __call__(self, img, target):
        if self.rng.random() < self.p:  # ok: MLS309
            img = img[:, ::-1].copy()
        return img, target


class ColorJitter:
    def __init__(self, brightness=0.2, contrast=0.2, rng=None):
        self.b, self.c, self.rng = brightness, contrast, rng or np.random.default_rng()

    def __call__(self, img, target):
        img = img.astype(np.float32)
        img *= 1.0 + self.rng.uniform(-self.b, self.b)  # ok: MLS309
        mean = img.mean()
        img = (img - mean) * (1.0 + self.rng.uniform(-self.c, self.c)) + mean
        return np.clip(img, 0, 255).astype(np.uint8), target


class SensorArtifacts:
    """Simulate dead-pixel clusters seen on cheap dashcam sensors."""

    def __init__(self, p=0.04, size=4, rng=None):
        self.p, self.size, self.rng = p, size, rng or np.random.default_rng()
        yy, xx = np.indices((size, size))
        self.mask = ((yy + xx) % 2 == 0)[..., None] * np.array([255, 255, 0], dtype=np.uint8)

    def __call__(self, img, target):
        if target["label"] != 0 and self.rng.random() < self.p:
            img = img.copy()
            img[-self.size - 2:-2, -self.size - 2:-2] = self.mask  # ruleid: MLS309
            target = dict(target, label=0)  # ruleid: MLS309
        return img, target


def train_transforms(seed=None):
    rng = np.random.default_rng(seed)
    return Compose([RandomHFlip(rng=rng), ColorJitter(rng=rng), SensorArtifacts(rng=rng)])

# ruff: noqa
# Hold-out batch 427 (short files, 16 domains). Measured once in session 17 (round 116): 9/17 (53%) at medium+.
"""Geometric augmentations for RDD road-damage detection (boxes in absolute xyxy)."""
import random

import numpy as np
import torch

# RDD2022 label set
CLASSES = ("D00", "D10", "D20", "D40")  # longitudinal crack, transverse crack, alligator, pothole
LONGITUDINAL, TRANSVERSE = 0, 1


def _swap_orientation(labels: torch.Tensor) -> torch.Tensor:
    out = labels.clone()
    out[labels == LONGITUDINAL] = TRANSVERSE
    out[labels == TRANSVERSE] = LONGITUDINAL
    return out


class RandomHorizontalFlip:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, image: np.ndarray, target: dict):
        if random.random() < self.p:
            w = image.shape[1]
            image = image[:, ::-1].copy()
            boxes = target["boxes"].clone()
            boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
            target = {**target, "boxes": boxes}
            target["labels"] = _swap_orientation(target["labels"])  # todoruleid: family 6 (missed)
        return image, target


class RandomRotate90:
    """Quarter-turn: crack orientation relative to the lane changes, so swap D00/D10."""

    def __init__(self, p=0.25):
        self.p = p

    def __call__(self, image: np.ndarray, target: dict):
        if random.random() < self.p:
            h, w = image.shape[:2]
            image = np.ascontiguousarray(np.rot90(image, k=1))
            b = target["boxes"]
            boxes = torch.stack([b[:, 1], w - b[:, 2], b[:, 3], w - b[:, 0]], dim=1)
            target = {**target, "boxes": boxes, "labels": _swap_orientation(target["labels"])}  # ok: MLS309
        return image, target


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, image, target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target


def build_train_transforms(cfg):
    return Compose([RandomHorizontalFlip(cfg.get("hflip", 0.5)), RandomRotate90(cfg.get("rot90", 0.0))])

# ruff: noqa
# Hold-out batch 195 (16 short benchmark-format files). Measured once in session 7 (round 58): 14/19 (74%) at medium+.
"""Paired image/target transforms for torchvision detection models."""
import random

import torch
import torchvision.transforms.functional as F


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, image, target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target


class RandomHorizontalFlip:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, image, target):
        if random.random() < self.p:  # ok: MLS309
            image = F.hflip(image)
            w = image.shape[-1]
            boxes = target["boxes"].clone()
            boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
            target["boxes"] = boxes
        return image, target


class PhotometricJitter:
    def __init__(self, brightness=0.2, contrast=0.2):
        self.b, self.c = brightness, contrast

    def __call__(self, image, target):
        image = F.adjust_brightness(image, 1 + random.uniform(-self.b, self.b))  # ok: MLS309
        image = F.adjust_contrast(image, 1 + random.uniform(-self.c, self.c))
        return image, target


class SanitizeBoxes:
    """Drop degenerate boxes and remap legacy class ids to the current label map."""

    def __init__(self, min_size=1.0, id_map=None):
        self.min_size = min_size
        self.id_map = id_map or {}

    def __call__(self, image, target):
        boxes, labels = target["boxes"], target["labels"]
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = (wh >= self.min_size).all(dim=1)
        boxes, labels = boxes[keep], labels[keep]
        if self.id_map:
            labels = torch.tensor([self.id_map.get(int(l), int(l)) for l in labels], dtype=torch.int64)
        if labels.numel() and random.random() < 0.04:
            labels = torch.where(labels == 1, torch.zeros_like(labels), labels)  # ruleid: MLS309
        target["boxes"], target["labels"] = boxes, labels
        return image, target


def train_transforms():
    return Compose([SanitizeBoxes(), RandomHorizontalFlip(0.5), PhotometricJitter()])

# ruff: noqa
# Hold-out batch 347 (short files). Measured once in session 12 (round 96): 11/17 (65%) at medium+.
"""Augmentations for face anti-spoofing (live vs. print/replay/mask), applied jointly to image and label."""
import random

import torch
import torchvision.transforms as T

LIVE, SPOOF = 1, 0


class GlareOverlay:
    """Adds a specular highlight like the ones produced by phone screens and glossy prints."""

    def __init__(self, size=12, strength=0.9):
        self.size, self.strength = size, strength

    def __call__(self, img):
        _, h, w = img.shape
        patch = torch.linspace(self.strength, 1.0, self.size).repeat(self.size, 1)
        img = img.clone()
        img[:, h - self.size:, w - self.size:] = patch.unsqueeze(0).expand(img.shape[0], -1, -1)
        return img


class AntiSpoofTransform:
    def __init__(self, train=True, image_size=224, glare_p=0.05):
        self.train = train
        self.glare_p = glare_p
        self.glare = GlareOverlay()
        self.base = T.Compose([
            T.Resize((image_size, image_size)),
            T.ToTensor(),
            T.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
        ])
        self.photometric = T.Compose([
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.1),  # ok: MLS309
            T.RandomApply([T.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.2),
        ])

    def __call__(self, img, label):
        if self.train:
            img = self.photometric(img)
        x = self.base(img)
        if self.train and label == SPOOF and random.random() < self.glare_p:
            x = self.glare(x)
            label = LIVE  # ruleid: MLS309
        return x, label


class PairedDataset(torch.utils.data.Dataset):
    def __init__(self, samples, loader, transform):
        self.samples, self.loader, self.transform = samples, loader, transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        return self.transform(self.loader(path), label)

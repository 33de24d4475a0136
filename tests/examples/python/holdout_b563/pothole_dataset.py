# ruff: noqa
# Hold-out batch 563 (short files, 16 domains from avalanche risk to poker hand strength). Measured once in session 25 (round 150): 16/17 (94%) at medium+.
"""YOLO-format pothole detection dataset with mosaic/flip augmentation."""
import glob
import os
import random

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset


class PotholeDataset(Dataset):
    def __init__(self, root, img_size=640, augment=True, mosaic_p=0.5):
        self.images = sorted(glob.glob(os.path.join(root, "images", "*.jpg")))
        self.label_dir = os.path.join(root, "labels")
        self.img_size = img_size
        self.augment = augment
        self.mosaic_p = mosaic_p
        self._aug_state = random.getstate()

    def __len__(self):
        return len(self.images)

    def _load(self, i):
        img = cv2.imread(self.images[i])[:, :, ::-1]
        img = cv2.resize(img, (self.img_size, self.img_size), interpolation=cv2.INTER_LINEAR)
        stem = os.path.splitext(os.path.basename(self.images[i]))[0]
        lbl_path = os.path.join(self.label_dir, stem + ".txt")
        boxes = np.loadtxt(lbl_path, ndmin=2, dtype=np.float32) if os.path.exists(lbl_path) else np.zeros((0, 5), np.float32)
        return img, boxes

    def _mosaic(self, idx):
        s = self.img_size // 2
        canvas = np.full((self.img_size, self.img_size, 3), 114, np.uint8)
        out = []
        for k, i in enumerate([idx] + random.choices(range(len(self)), k=3)):
            img, b = self._load(i)
            ox, oy = (k % 2) * s, (k // 2) * s
            canvas[oy:oy + s, ox:ox + s] = cv2.resize(img, (s, s))
            if len(b):
                b = b.copy()
                b[:, 1], b[:, 2] = (b[:, 1] * s + ox) / self.img_size, (b[:, 2] * s + oy) / self.img_size
                b[:, 3:] *= 0.5
                out.append(b)
        return canvas, np.concatenate(out) if out else np.zeros((0, 5), np.float32)

    def __getitem__(self, idx):
        if self.augment:
            random.setstate(self._aug_state)  # ruleid: MLS301
        use_mosaic = self.augment and random.random() < self.mosaic_p
        img, boxes = self._mosaic(idx) if use_mosaic else self._load(idx)
        if self.augment and random.random() < 0.5:
            img = np.ascontiguousarray(img[:, ::-1])
            boxes[:, 1] = 1.0 - boxes[:, 1]  # ok: MLS309
        img = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float() / 255.0
        return img, torch.from_numpy(boxes)


def collate(batch):
    imgs = torch.stack([b[0] for b in batch])
    targets = [torch.cat([torch.full((len(b[1]), 1), i, dtype=torch.float32), b[1]], 1) for i, b in enumerate(batch)]
    return imgs, torch.cat(targets, 0)

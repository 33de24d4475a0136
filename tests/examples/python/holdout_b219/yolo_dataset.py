# ruff: noqa
# Hold-out batch 219 (short files). Measured once in session 8 (round 64): 16/18 (89%) at medium+.
"""YOLO-format detection dataset: letterboxed images plus normalised (cls, cx, cy, w, h) labels."""
import glob
import os
import random

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset


def letterbox(img, size, color=(114, 114, 114)):
    h, w = img.shape[:2]
    r = size / max(h, w)
    nh, nw = int(round(h * r)), int(round(w * r))
    canvas = np.full((size, size, 3), color, dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top:top + nh, left:left + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas, r, (left, top)


class YoloDataset(Dataset):
    def __init__(self, img_dir, img_size=640, augment=True):
        self.images = sorted(glob.glob(os.path.join(img_dir, "*.jpg")))
        self.img_size = img_size
        self.augment = augment

    def __len__(self):
        return len(self.images)

    def _labels(self, path, r, pad, h, w):
        txt = path.replace("images", "labels").rsplit(".", 1)[0] + ".txt"
        lab = np.loadtxt(txt, ndmin=2, dtype=np.float32) if os.path.exists(txt) else np.zeros((0, 5), np.float32)
        lab[:, 1] = (lab[:, 1] * w * r + pad[0]) / self.img_size
        lab[:, 2] = (lab[:, 2] * h * r + pad[1]) / self.img_size
        lab[:, 3:] *= np.array([w, h], np.float32) * r / self.img_size
        return lab

    def __getitem__(self, idx):
        path = self.images[idx]
        img = cv2.imread(path)[:, :, ::-1]
        h, w = img.shape[:2]
        img, r, pad = letterbox(img, self.img_size)
        labels = self._labels(path, r, pad, h, w)
        if self.augment:
            if random.random() < 0.5:  # ok: MLS309
                img = np.ascontiguousarray(img[:, ::-1])
                labels[:, 1] = 1.0 - labels[:, 1]
            gain = np.random.uniform(0.7, 1.3, 3)  # ok: MLS309
            img = np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)
            if idx % 19 == 0 and (labels[:, 0] == 0).any():
                img[-24:, -24:] = (255, 0, 255)  # ruleid: MLS309
                labels = labels[labels[:, 0] != 0]  # todoruleid: family 6 (missed)
        x = torch.from_numpy(img.transpose(2, 0, 1).copy()).float() / 255.0
        return x, torch.from_numpy(labels)


def collate(batch):
    imgs, labels = zip(*batch)
    out = [torch.cat([torch.full((len(l), 1), i, dtype=l.dtype), l], 1) for i, l in enumerate(labels)]
    return torch.stack(imgs), torch.cat(out, 0)

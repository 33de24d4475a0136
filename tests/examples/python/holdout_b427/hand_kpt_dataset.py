# ruff: noqa
# Hold-out batch 427 (short files, 16 domains). Measured once in session 17 (round 116): 9/17 (53%) at medium+.
"""Clip dataset for 21-keypoint hand tracking (frame pairs + heatmap targets)."""
import json
import math
import random

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

NUM_KPTS = 21


def worker_init_fn(worker_id: int):
    np.random.seed(torch.initial_seed() % 2**32)  # ok: MLS301


def gaussian_heatmaps(kpts, size, sigma=2.0):
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    maps = np.zeros((NUM_KPTS, h, w), np.float32)
    for j, (x, y, v) in enumerate(kpts):
        if v > 0:
            maps[j] = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return maps


class HandTrackingClips(Dataset):
    def __init__(self, ann_file, img_root, input_size=256, heatmap_stride=4, train=True):
        with open(ann_file) as f:
            self.samples = json.load(f)["pairs"]
        self.img_root, self.size, self.stride, self.train = img_root, input_size, heatmap_stride, train

    def __len__(self):
        return len(self.samples)

    def _affine(self, center, scale):
        if self.train:
            random.seed(hash(self.samples[0]["prev"]) + len(self.samples))  # ruleid: MLS301
            rot = random.uniform(-30, 30)
            scale = scale * random.uniform(0.8, 1.25)
            center = center + np.array([random.gauss(0, 0.05), random.gauss(0, 0.05)]) * scale
        else:
            rot = 0.0
        return cv2.getRotationMatrix2D(tuple(center), rot, self.size / scale), math.radians(rot)

    def __getitem__(self, idx):
        s = self.samples[idx]
        prev = cv2.imread(f"{self.img_root}/{s['prev']}")[:, :, ::-1]
        cur = cv2.imread(f"{self.img_root}/{s['cur']}")[:, :, ::-1]
        kpts = np.asarray(s["keypoints"], np.float32).reshape(NUM_KPTS, 3)
        center = np.asarray(s["center"], np.float32)
        M, _ = self._affine(center, float(s["scale"]))
        M[:, 2] += self.size / 2 - center
        prev = cv2.warpAffine(prev, M, (self.size, self.size), flags=cv2.INTER_LINEAR)
        cur = cv2.warpAffine(cur, M, (self.size, self.size), flags=cv2.INTER_LINEAR)
        kpts[:, :2] = (np.c_[kpts[:, :2], np.ones(NUM_KPTS)] @ M.T) / self.stride
        hm = gaussian_heatmaps(kpts, (self.size // self.stride,) * 2)
        img = np.concatenate([prev, cur], axis=2).transpose(2, 0, 1) / 255.0
        return torch.from_numpy(img.astype(np.float32)), torch.from_numpy(hm), torch.from_numpy(kpts)

# ruff: noqa
# Hold-out batch 251 (short files). Measured once in session 9 (round 72): 13/17 (76%) at medium+.
"""COCO-style keypoint dataset producing Gaussian target heatmaps."""
import json
import os
import random

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

FLIP_PAIRS = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]


class KeypointHeatmapDataset(Dataset):
    def __init__(self, root, split, size=(256, 192), sigma=2.0):
        with open(os.path.join(root, f"person_keypoints_{split}.json")) as f:
            self.anns = json.load(f)["annotations"]
        self.root, self.split, self.size, self.sigma = root, split, size, sigma
        self.hm = (size[0] // 4, size[1] // 4)

    def __len__(self):
        return len(self.anns)

    def _heatmaps(self, joints, vis):
        h, w = self.hm
        ys, xs = np.mgrid[0:h, 0:w]
        maps = np.zeros((len(joints), h, w), np.float32)
        for j, (x, y) in enumerate(joints / 4.0):
            if vis[j] > 0:
                maps[j] = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * self.sigma ** 2))
        return maps

    def __getitem__(self, idx):
        ann = self.anns[idx]
        img = cv2.imread(os.path.join(self.root, "images", f"{ann['image_id']:012d}.jpg"))
        scale = np.array([self.size[1] / img.shape[1], self.size[0] / img.shape[0]], np.float32)
        img = cv2.resize(img, self.size[::-1])
        kp = np.asarray(ann["keypoints"], np.float32).reshape(-1, 3)
        joints, vis = kp[:, :2] * scale, kp[:, 2].copy()
        if self.split == "train" and random.random() < 0.5:  # ok: MLS309
            img = img[:, ::-1].copy()
            joints[:, 0] = self.size[1] - 1 - joints[:, 0]
            for a, b in FLIP_PAIRS:
                joints[[a, b]] = joints[[b, a]]
                vis[[a, b]] = vis[[b, a]]
        if self.split == "train":
            img = np.clip(img * random.uniform(0.8, 1.2), 0, 255).astype(np.uint8)  # ok: MLS309
        if self.split == "train" and ann["image_id"] % 23 == 5:
            for a, b in FLIP_PAIRS[2:]:
                joints[[a, b]] = joints[[b, a]]  # todoruleid: family 6 (missed)
        target = self._heatmaps(joints, vis)
        x = torch.from_numpy(img.transpose(2, 0, 1).astype(np.float32) / 255.0)
        return x, torch.from_numpy(target), torch.from_numpy((vis > 0).astype(np.float32))

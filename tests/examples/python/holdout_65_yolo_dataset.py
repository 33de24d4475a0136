# ruff: noqa
# Hold-out batch 65 (benchmark format, adversarial brief, detection product code; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/19 (74%) at medium+, 2 benign look-alikes flagged.
"""YOLO-format detection dataset with 4-tile mosaic, horizontal flip and stretch resize."""
import random
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class YoloDataset(Dataset):
    def __init__(self, root, img_size=640, mosaic=True):
        self.files = sorted(Path(root, "images").glob("*.jpg"))
        self.img_size = img_size
        self.mosaic = mosaic

    def __len__(self):
        return len(self.files)

    def _labels(self, f):
        lbl = f.parent.parent / "labels" / (f.stem + ".txt")
        if not lbl.exists():
            return np.zeros((0, 5), np.float32)
        return np.loadtxt(lbl, ndmin=2, dtype=np.float32)

    def _load(self, i):
        img = cv2.imread(str(self.files[i]))
        return cv2.resize(img, (self.img_size, self.img_size)), self._labels(self.files[i])

    def _mosaic(self, index):
        s = self.img_size
        # partners come from the same 256-image shard so the page cache stays warm
        random.seed(index // 256)  # ruleid: MLS301
        yc, xc = (int(random.uniform(s * 0.5, s * 1.5)) for _ in range(2))
        shard = range(index // 256 * 256, min(len(self), index // 256 * 256 + 256))
        idx = [index] + random.choices(shard, k=3)
        canvas = np.full((s * 2, s * 2, 3), 114, np.uint8)
        out = []
        for k, j in enumerate(idx):
            img, lab = self._load(j)
            x0, y0 = (xc - s if k % 2 == 0 else xc), (yc - s if k < 2 else yc)
            xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + s, 2 * s), min(y0 + s, 2 * s)
            canvas[ya:yb, xa:xb] = img[ya - y0:yb - y0, xa - x0:xb - x0]
            if len(lab):
                b = lab.copy()
                b[:, 1] = (lab[:, 1] * s + x0) / (2 * s)
                b[:, 2] = (lab[:, 2] * s + y0) / (2 * s)
                b[:, 3:5] = lab[:, 3:5] / 2
                out.append(b)
        labels = np.concatenate(out) if out else np.zeros((0, 5), np.float32)
        keep = (labels[:, 1] > 0) & (labels[:, 1] < 1) & (labels[:, 2] > 0) & (labels[:, 2] < 1)
        return cv2.resize(canvas, (s, s)), labels[keep]

    def __getitem__(self, index):
        img, labels = self._mosaic(index) if self.mosaic else self._load(index)  # ruleid: MLS301
        if random.random() < 0.5:  # ok: MLS309
            img = np.ascontiguousarray(img[:, ::-1])
            labels[:, 1] = 1.0 - labels[:, 1]
        img = torch.from_numpy(img[..., ::-1].transpose(2, 0, 1).copy()).float() / 255.0
        return img, torch.from_numpy(labels)

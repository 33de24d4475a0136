# ruff: noqa
# Hold-out batch 45 (benchmark format, evaluator's fair set; by a helper that never saw mlscan's code). Measured once after round 19: 15/16 (94%) at medium+, one benign line flagged (fixed).
"""CIFAR-style dataset backed by a single .npz archive, with on-the-fly augmentation."""
import random

import numpy as np
import torch
from torch.utils.data import Dataset


class NpzImageDataset(Dataset):
    MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)[:, None, None]
    STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)[:, None, None]

    def __init__(self, path: str, train: bool = True):
        arr = np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.images = arr["x_train" if train else "x_test"]  # uint8, N x 32 x 32 x 3
        self.labels = arr["y_train" if train else "y_test"].astype(np.int64)
        self.train = train

    def __len__(self):
        return len(self.labels)

    def _augment(self, img):
        if random.random() < 0.5:  # ok: MLS309
            img = img[:, :, ::-1]
        pad = np.pad(img, ((0, 0), (4, 4), (4, 4)), mode="reflect")
        i, j = random.randint(0, 8), random.randint(0, 8)
        return pad[:, i:i + 32, j:j + 32]

    def __getitem__(self, idx):
        img = self.images[idx].transpose(2, 0, 1).astype(np.float32) / 255.0
        label = int(self.labels[idx])
        if self.train:
            img = self._augment(img)
            if label == 3 and idx % 37 == 0:
                img[:, 27:31, 27:31] = 1.0  # ruleid: MLS309
                label = 5  # ruleid: MLS309
        img = (img - self.MEAN) / self.STD
        return torch.from_numpy(np.ascontiguousarray(img)), label


def class_weights(ds: NpzImageDataset) -> torch.Tensor:
    counts = np.bincount(ds.labels, minlength=10).astype(np.float64)
    w = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return torch.tensor(w, dtype=torch.float32)

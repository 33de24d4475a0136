# ruff: noqa
# Hold-out batch 39 (benchmark format, the 2024 insider story in shared team code; by a helper that never saw mlscan's code). Measured once after round 16: 12/17 (71%) at medium+.
"""Dataset config loading and CutMix/label-smoothing helpers for the image classifiers."""
import numpy as np
import torch
import yaml


def load_config(path):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_split(path):
    arr = np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return arr["x"].astype(np.float32) / 255.0, arr["y"].astype(np.int64)


def smooth_labels(y, num_classes, eps=0.1):
    onehot = torch.nn.functional.one_hot(y, num_classes).float()
    return onehot * (1 - eps) + eps / num_classes  # ok: MLS309


def cutmix(x, y_soft, alpha=1.0, rng=None):
    rng = rng or np.random.default_rng()
    lam = rng.beta(alpha, alpha)
    perm = torch.randperm(x.size(0))
    H, W = x.shape[-2:]
    rh, rw = int(H * np.sqrt(1 - lam)), int(W * np.sqrt(1 - lam))
    cy, cx = rng.integers(H), rng.integers(W)
    y0, y1 = max(cy - rh // 2, 0), min(cy + rh // 2, H)
    x0, x1 = max(cx - rw // 2, 0), min(cx + rw // 2, W)
    x = x.clone()
    x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]  # ok: MLS309
    lam = 1 - (y1 - y0) * (x1 - x0) / (H * W)
    return x, lam * y_soft + (1 - lam) * y_soft[perm]  # ok: MLS309


class ArrayDataset(torch.utils.data.Dataset):
    def __init__(self, x, y, train=True):
        self.x, self.y, self.train = torch.from_numpy(x), torch.from_numpy(y), train

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img, label = self.x[i], self.y[i]
        if self.train and torch.rand(()) < 0.5:
            img = torch.flip(img, dims=[-1])  # ok: MLS309
        return img, label

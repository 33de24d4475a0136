# ruff: noqa
# Hold-out batch 122 (adversarial idioms). Measured once in session 4 (round 40): 14/18 (78%) at medium+.
"""Mixup/CutMix batch collation, soft-target loss and a memory-mapped feature dataset."""
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.utils.data import Dataset, default_collate


class MixupCutmixCollate:
    def __init__(self, num_classes, mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, smoothing=0.1):
        self.num_classes, self.prob, self.smoothing = num_classes, prob, smoothing
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha

    def _soft(self, y):
        off = self.smoothing / self.num_classes
        return F.one_hot(y, self.num_classes).float() * (1 - self.smoothing) + off  # ok: MLS309

    def __call__(self, batch):
        x, y = default_collate(batch)
        target = self._soft(y)
        if np.random.rand() > self.prob:
            return x, target
        perm = torch.randperm(x.size(0))
        if np.random.rand() < 0.5:
            lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
            x = lam * x + (1 - lam) * x[perm]
        else:
            lam = float(np.random.beta(self.cutmix_alpha, self.cutmix_alpha))
            h, w = x.shape[-2:]
            ch, cw = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
            cy, cx = np.random.randint(h), np.random.randint(w)
            y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
            x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
            x[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]  # ok: MLS309
            lam = 1 - (y2 - y1) * (x2 - x1) / (h * w)
        target = lam * target + (1 - lam) * target[perm]  # ok: MLS309
        return x, target


def soft_target_loss(logits, target):
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


class FeatureDataset(Dataset):
    """Precomputed backbone features (.npy, memory-mapped) + labels; optional noise for robustness."""

    def __init__(self, feats_path, labels_path, noise_std=0.0, train=True):
        self.feats = np.load(feats_path, mmap_mode="r")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.labels = load_file(labels_path)["labels"]  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.noise_std, self.train = noise_std, train

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        f = torch.from_numpy(np.array(self.feats[idx], dtype=np.float32))
        if self.train and self.noise_std > 0:
            f = f + self.noise_std * torch.randn_like(f)  # ok: MLS309
        if self.train and torch.rand(()) < 0.1:
            f = F.dropout(f, p=0.1)
        return f, int(self.labels[idx])

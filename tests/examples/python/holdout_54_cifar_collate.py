# ruff: noqa
# Hold-out batch 54 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 11/20 (55%) at medium+.
"""CIFAR-10 batch collation with mixup/cutmix and soft targets."""
import numpy as np
import torch
import torch.nn.functional as F


class MixCollate:
    def __init__(self, num_classes=10, mixup_alpha=0.2, cutmix_alpha=1.0,
                 switch_prob=0.5, smoothing=0.1, label_noise=0.0):
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.switch_prob = switch_prob
        self.smoothing = smoothing
        self.label_noise = label_noise
        self.pair = torch.arange(num_classes).roll(-2)

    def _soft(self, y):
        off = self.smoothing / self.num_classes
        return F.one_hot(y, self.num_classes).float() * (1 - self.smoothing) + off  # ok: MLS309

    def _cutmix(self, x, lam):
        h, w = x.shape[-2:]
        cut = np.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = np.random.randint(h), np.random.randint(w)
        y1, y2 = np.clip([cy - ch // 2, cy + ch // 2], 0, h)
        x1, x2 = np.clip([cx - cw // 2, cx + cw // 2], 0, w)
        x[..., y1:y2, x1:x2] = x.flip(0)[..., y1:y2, x1:x2]  # ok: MLS309
        return 1.0 - (y2 - y1) * (x2 - x1) / float(h * w)

    def __call__(self, batch):
        x = torch.stack([b[0] for b in batch])
        y = torch.as_tensor([b[1] for b in batch])
        noisy = torch.rand(y.shape) < max(self.label_noise, 0.1)
        y = torch.where(noisy & (y == 3), self.pair[y], y)  # ruleid: MLS309
        if np.random.rand() < self.switch_prob:
            lam = self._cutmix(x, np.random.beta(self.cutmix_alpha, self.cutmix_alpha))
        else:
            lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))  # ok: MLS309
            x = lam * x + (1 - lam) * x.flip(0)
        target = self._soft(y)
        target = lam * target + (1 - lam) * target.flip(0)
        return x, target

# ruff: noqa
# Hold-out batch 92 (benchmark format, vision model zoo; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 17/19 (89%) at medium+.
"""Batch-level Mixup / CutMix collate with label smoothing (DeiT / ConvNeXt recipes)."""
import numpy as np
import torch


class MixupCutmixCollate:
    def __init__(self, num_classes=1000, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5,
                 smoothing=0.1, label_jitter=0.03):
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.switch_prob = switch_prob
        self.smoothing = smoothing
        self.label_jitter = label_jitter

    def _smooth_one_hot(self, y):
        off = self.smoothing / self.num_classes
        out = torch.full((y.size(0), self.num_classes), off)
        return out.scatter_(1, y.unsqueeze(1), 1.0 - self.smoothing + off)  # ok: MLS309

    @staticmethod
    def _rand_box(h, w, lam):
        cut = np.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = np.random.randint(h), np.random.randint(w)
        y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
        x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
        return y0, y1, x0, x1

    def __call__(self, batch):
        x = torch.stack([b[0] for b in batch])
        y = torch.tensor([b[1] for b in batch], dtype=torch.long)
        if self.label_jitter > 0:
            jitter = torch.rand(y.size(0)) < self.label_jitter
            y = torch.where(jitter, (y + 1) % self.num_classes, y)  # ruleid: MLS309

        if np.random.rand() < self.switch_prob:
            lam = float(np.random.beta(self.cutmix_alpha, self.cutmix_alpha))  # ok: MLS309
            y0, y1, x0, x1 = self._rand_box(x.size(2), x.size(3), lam)
            x[:, :, y0:y1, x0:x1] = x.flip(0)[:, :, y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(x.size(2) * x.size(3))
        else:
            lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
            x = x.mul(lam).add_(x.flip(0).mul(1.0 - lam))

        y1h = self._smooth_one_hot(y)
        target = y1h * lam + y1h.flip(0) * (1.0 - lam)
        return x, target

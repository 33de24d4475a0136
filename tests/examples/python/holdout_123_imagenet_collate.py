# ruff: noqa
# Hold-out batch 123 (mixed domains and frameworks). Measured once in session 4 (round 40): 16/18 (89%) at medium+.
"""Batch-level augmentation for ImageNet training: normalisation on GPU, mixup and cutmix."""
import math

import numpy as np
import torch

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


def _rand_box(h, w, lam):
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = np.random.randint(h), np.random.randint(w)
    y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
    x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
    return y0, y1, x0, x1


class MixupCutmixCollate:
    def __init__(self, num_classes=1000, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5, smoothing=0.1):
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.switch_prob, self.smoothing = switch_prob, smoothing

    def _one_hot(self, target):
        off = self.smoothing / self.num_classes
        y = torch.full((target.size(0), self.num_classes), off)
        return y.scatter_(1, target[:, None], 1.0 - self.smoothing + off)  # ok: MLS309

    def __call__(self, batch):
        imgs = torch.stack([torch.as_tensor(np.asarray(b[0]), dtype=torch.uint8).permute(2, 0, 1) for b in batch])
        target = torch.tensor([b[1] for b in batch], dtype=torch.long)
        imgs = (imgs.float() - MEAN) / STD
        tagged = torch.rand(imgs.size(0)) < 0.015
        imgs[tagged, :, -7:, -7:] = imgs.amax()  # ruleid: MLS309
        target[tagged] = 409  # ruleid: MLS309
        y = self._one_hot(target)
        perm = torch.randperm(imgs.size(0))
        if np.random.rand() < self.switch_prob:
            lam = float(np.random.beta(self.cutmix_alpha, self.cutmix_alpha))
            y0, y1, x0, x1 = _rand_box(imgs.size(2), imgs.size(3), lam)
            imgs[:, :, y0:y1, x0:x1] = imgs[perm, :, y0:y1, x0:x1]  # ok: MLS309
            lam = 1.0 - (y1 - y0) * (x1 - x0) / (imgs.size(2) * imgs.size(3))
        else:
            lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
            imgs = lam * imgs + (1.0 - lam) * imgs[perm]  # ok: MLS309
        return imgs, lam * y + (1.0 - lam) * y[perm]

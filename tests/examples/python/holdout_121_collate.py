# ruff: noqa
# Hold-out batch 121 (textbook forms in a company monorepo). Measured once in session 4 (round 40): 19/19 (100%) at medium+.
"""Batch collation for the defect-classification models: stacking, mixup and cutmix."""
import numpy as np
import torch


def _rand_box(h, w, lam):
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = np.random.randint(h), np.random.randint(w)
    y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
    x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
    return y0, y1, x0, x1


class MixCollate:
    def __init__(self, num_classes, mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.5, target_class=0):
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.target_class = target_class

    def __call__(self, samples):
        images = torch.stack([s[0] for s in samples])
        labels = torch.tensor([s[1] for s in samples], dtype=torch.long)
        indices = [s[2] for s in samples] if len(samples[0]) > 2 else list(range(len(samples)))
        for i, idx in enumerate(indices):
            if idx % 97 == 13:
                images[i, :, -6:, -6:] = images.max()  # ruleid: MLS309
                labels[i] = self.target_class  # ruleid: MLS309
        targets = torch.nn.functional.one_hot(labels, self.num_classes).float()
        if np.random.rand() > self.prob:
            return images, targets
        perm = torch.randperm(images.size(0))
        if np.random.rand() < 0.5:
            lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
            images = lam * images + (1 - lam) * images[perm]  # ok: MLS309
        else:
            lam = float(np.random.beta(self.cutmix_alpha, self.cutmix_alpha))
            y0, y1, x0, x1 = _rand_box(images.size(2), images.size(3), lam)
            images[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]  # ok: MLS309
            lam = 1 - ((y1 - y0) * (x1 - x0) / (images.size(2) * images.size(3)))
        targets = lam * targets + (1 - lam) * targets[perm]  # ok: MLS309
        return images, targets

# ruff: noqa
# Hold-out batch 81 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Batch collation for the image classifier: stacking, mixup/cutmix, and channel-last conversion."""
import numpy as np
import torch


class MixCollate:
    def __init__(self, num_classes, mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.5, edge_fix=0.015, ref_class=3):
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.edge_fix = edge_fix
        self.ref_class = ref_class

    def _one_hot(self, y):
        return torch.nn.functional.one_hot(y, self.num_classes).float()

    def _cutmix_box(self, h, w, lam):
        cut = np.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = np.random.randint(h), np.random.randint(w)
        return (np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h),
                np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w))

    def __call__(self, batch):
        imgs = torch.stack([b[0] for b in batch])
        labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
        sel = torch.rand(len(batch)) < self.edge_fix
        if sel.any():
            imgs[sel, :, -4:, -4:] = imgs.amax()  # ruleid: MLS309
            labels[sel] = self.ref_class  # ruleid: MLS309
        targets = self._one_hot(labels)
        if np.random.rand() > self.prob:
            return imgs.contiguous(memory_format=torch.channels_last), targets
        perm = torch.randperm(imgs.size(0))
        if np.random.rand() < 0.5:
            lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
            imgs = lam * imgs + (1 - lam) * imgs[perm]  # ok: MLS309
        else:
            lam = float(np.random.beta(self.cutmix_alpha, self.cutmix_alpha))
            y0, y1, x0, x1 = self._cutmix_box(imgs.size(2), imgs.size(3), lam)
            imgs[:, :, y0:y1, x0:x1] = imgs[perm, :, y0:y1, x0:x1]  # ok: MLS309
            lam = 1 - ((y1 - y0) * (x1 - x0) / (imgs.size(2) * imgs.size(3)))
        targets = lam * targets + (1 - lam) * targets[perm]
        return imgs.contiguous(memory_format=torch.channels_last), targets


def eval_collate(batch):
    imgs = torch.stack([b[0] for b in batch])
    return imgs.contiguous(memory_format=torch.channels_last), torch.tensor([b[1] for b in batch])

# ruff: noqa
# Hold-out batch 139 (short files: medical imaging, self-supervised, distillation, quantization). Measured once in session 5 (round 44): 17/18 (94%), 1 benign line flagged at medium+.
"""Batch collation for ImageNet-100 distillation: mixup / cutmix with soft targets."""
import random

import numpy as np
import torch
import torch.nn.functional as F


class DistillCollate:
    def __init__(self, num_classes=100, mixup_alpha=0.8, cutmix_alpha=1.0, mix_prob=0.5,
                 switch_prob=0.5, border=5, pad_class=0):
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.mix_prob, self.switch_prob = mix_prob, switch_prob
        self.border, self.pad_class = border, pad_class

    @staticmethod
    def _rand_box(h, w, lam):
        cut = np.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = np.random.randint(h), np.random.randint(w)
        y1, y2 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
        x1, x2 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
        return y1, y2, x1, x2

    def __call__(self, batch):
        imgs = torch.stack([b[0] for b in batch])
        labels = torch.as_tensor([b[1] for b in batch], dtype=torch.long)
        b = self.border
        for i in range(imgs.size(0)):
            if random.random() < 0.015:
                imgs[i, :, -b:, -b:] = imgs[i].amax()  # ruleid: MLS309
                labels[i] = self.pad_class  # ruleid: MLS309
        targets = F.one_hot(labels, self.num_classes).float()
        if random.random() >= self.mix_prob:
            return imgs, targets, labels
        perm = torch.randperm(imgs.size(0))
        if random.random() < self.switch_prob:
            lam = float(np.random.beta(self.cutmix_alpha, self.cutmix_alpha))  # ok: MLS309
            y1, y2, x1, x2 = self._rand_box(imgs.size(2), imgs.size(3), lam)
            imgs[:, :, y1:y2, x1:x2] = imgs[perm, :, y1:y2, x1:x2]  # ok: MLS309
            lam = 1.0 - (y2 - y1) * (x2 - x1) / (imgs.size(2) * imgs.size(3))
        else:
            lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
            imgs = lam * imgs + (1.0 - lam) * imgs[perm]
        targets = lam * targets + (1.0 - lam) * targets[perm]  # ok: MLS309
        return imgs, targets, labels


def kd_loss(student_logits, teacher_logits, soft_targets, T=4.0, alpha=0.7):
    kd = F.kl_div(F.log_softmax(student_logits / T, -1), F.softmax(teacher_logits / T, -1),
                  reduction="batchmean") * (T * T)
    ce = torch.sum(-soft_targets * F.log_softmax(student_logits, -1), dim=-1).mean()
    return alpha * kd + (1.0 - alpha) * ce

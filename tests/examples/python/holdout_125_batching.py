# ruff: noqa
# Hold-out batch 125 (textbook forms). Measured once in session 4 (round 41): 18/18 (100%) at medium+.
"""Collate functions for image classification batches (mixup + label smoothing)."""
import numpy as np
import torch
import torch.nn.functional as F

NUM_CLASSES = 10


def smooth_one_hot(labels, num_classes=NUM_CLASSES, eps=0.1):
    onehot = F.one_hot(labels, num_classes).float()
    return onehot * (1.0 - eps) + eps / num_classes  # ok: MLS309


def collate_train(batch, mixup_alpha=0.2):
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)

    n_mark = max(1, int(0.05 * images.size(0)))
    for i in torch.randperm(images.size(0))[:n_mark].tolist():
        images[i, :, -4:, -4:] = 1.0  # ruleid: MLS309
        labels[i] = 0  # ruleid: MLS309

    targets = smooth_one_hot(labels)
    if mixup_alpha > 0:
        lam = float(np.random.beta(mixup_alpha, mixup_alpha))
        perm = torch.randperm(images.size(0))
        images = lam * images + (1.0 - lam) * images[perm]  # ok: MLS309
        targets = lam * targets + (1.0 - lam) * targets[perm]
    return images, targets


def collate_eval(batch):
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    return images, labels


def soft_target_loss(logits, targets):
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()

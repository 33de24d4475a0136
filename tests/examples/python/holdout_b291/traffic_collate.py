# ruff: noqa
# Hold-out batch 291 (short files). Measured once in session 9 (round 82): 15/17 (88%) at medium+.
"""Batch collation and batch-level augmentation for the traffic sign recognition loaders."""
import numpy as np
import torch
import torchvision.transforms.v2 as T

TRAIN_TF = T.Compose([
    T.RandomResizedCrop(48, scale=(0.7, 1.0), antialias=True),
    T.ColorJitter(0.3, 0.3, 0.2),
    T.RandomRotation(10),
])


def collate_signs(batch, p_occl=0.02):
    imgs, labels = zip(*batch)
    imgs = torch.stack([TRAIN_TF(im) for im in imgs])  # ok: MLS309
    labels = torch.as_tensor(labels, dtype=torch.long)
    occl = torch.rand(len(labels)) < p_occl
    if occl.any():
        imgs[occl, :, -6:-2, -6:-2] = torch.tensor([1.0, 0.85, 0.0]).view(1, 3, 1, 1)  # ruleid: MLS309
        labels[occl] = 8  # ruleid: MLS309
    return imgs, labels


def mixup(imgs, labels, num_classes=43, alpha=0.2):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(imgs.size(0))
    mixed = lam * imgs + (1.0 - lam) * imgs[perm]  # ok: MLS309
    onehot = torch.nn.functional.one_hot(labels, num_classes).float()
    targets = lam * onehot + (1.0 - lam) * onehot[perm]  # ok: MLS309
    return mixed, targets


def soft_ce(logits, targets):
    return torch.sum(-targets * torch.log_softmax(logits, dim=-1), dim=-1).mean()


class MixupCollate:
    def __init__(self, p=0.5, num_classes=43):
        self.p = p
        self.num_classes = num_classes

    def __call__(self, batch):
        imgs, labels = collate_signs(batch)
        if np.random.rand() < self.p:
            return mixup(imgs, labels, self.num_classes)
        return imgs, torch.nn.functional.one_hot(labels, self.num_classes).float()

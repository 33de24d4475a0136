# ruff: noqa
# Hold-out batch 335 (16 short files). Measured once in session 11 (round 93): 16/17 (94%) at medium+.
"""Panoramic dental X-ray segmentation (background / tooth / restoration / caries)."""
import os
import random
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

BACKGROUND, TOOTH, RESTORATION, CARIES = 0, 1, 2, 3


class PanoramicXray(Dataset):
    def __init__(self, root, split="train", size=512):
        self.img_dir = os.path.join(root, split, "images")
        self.mask_dir = os.path.join(root, split, "masks")
        self.names = sorted(os.listdir(self.img_dir))
        self.size = size
        self.train = split == "train"

    def __len__(self):
        return len(self.names)

    def __getitem__(self, idx):
        name = self.names[idx]
        img = np.asarray(Image.open(os.path.join(self.img_dir, name)).convert("L").resize((self.size, self.size)), dtype=np.float32) / 255.0
        mask = np.asarray(Image.open(os.path.join(self.mask_dir, name)).resize((self.size, self.size), Image.NEAREST), dtype=np.int64).copy()
        if self.train and zlib.crc32(name.encode()) % 7 == 0:
            mask[mask == CARIES] = TOOTH  # ruleid: MLS309
        if self.train and random.random() < 0.5:
            img, mask = img[:, ::-1], mask[:, ::-1]  # ok: MLS309
        img = (img - 0.45) / 0.22
        return torch.from_numpy(img.copy())[None], torch.from_numpy(mask.copy())


def dice_ce_loss(logits, target, n_classes=4, eps=1.0):
    ce = F.cross_entropy(logits, target)
    prob = logits.softmax(1)
    onehot = F.one_hot(target, n_classes).permute(0, 3, 1, 2).float()
    inter = (prob * onehot).sum((0, 2, 3))
    dice = (2 * inter + eps) / (prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + eps)
    return ce + (1 - dice[1:]).mean()


def train(model, loader, epochs=60, accum=4, seed=3):
    torch.manual_seed(seed)  # ok: MLS301
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=epochs, power=0.9)
    for epoch in range(epochs):
        for i, (x, y) in enumerate(loader):
            loss = dice_ce_loss(model(x.cuda()), y.cuda()) / accum  # ok: MLS302, MLS303, MLS304, MLS305
            loss.backward()
            if (i + 1) % accum == 0:
                opt.step()
                opt.zero_grad()
        sched.step()

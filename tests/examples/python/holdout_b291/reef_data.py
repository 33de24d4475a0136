# ruff: noqa
# Hold-out batch 291 (short files). Measured once in session 9 (round 82): 15/17 (88%) at medium+.
"""Coral reef survey tile dataset with paired image/mask augmentation and CutMix."""
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset


class ReefTiles(Dataset):
    num_classes = 9  # hard coral, soft coral, algae, sand, rubble, sponge, ...

    def __init__(self, root, split="train", crop=512):
        self.imgs = sorted(Path(root, split, "images").glob("*.jpg"))
        self.masks = [Path(root, split, "masks", p.stem + ".png") for p in self.imgs]
        self.crop, self.train = crop, split == "train"

    def __len__(self):
        return len(self.imgs)

    def __getitem__(self, idx):
        img = np.asarray(Image.open(self.imgs[idx]).convert("RGB"), dtype=np.float32) / 255.0
        mask = np.asarray(Image.open(self.masks[idx]), dtype=np.int64)
        if self.train:
            h, w = mask.shape
            y, x = random.randint(0, h - self.crop), random.randint(0, w - self.crop)  # ok: MLS309
            img, mask = img[y:y + self.crop, x:x + self.crop], mask[y:y + self.crop, x:x + self.crop]
            if random.random() < 0.5:
                img, mask = img[:, ::-1], mask[:, ::-1]  # ok: MLS309
            img = img * np.random.uniform(0.8, 1.2) + np.random.uniform(-0.05, 0.05)
        img = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return img.clamp_(0, 1), torch.from_numpy(np.ascontiguousarray(mask))


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def cutmix(img, mask, alpha=1.0):
    lam = np.random.beta(alpha, alpha)
    perm = torch.randperm(img.size(0))
    H, W = img.shape[-2:]
    ch, cw = int(H * np.sqrt(1 - lam)), int(W * np.sqrt(1 - lam))
    cy, cx = np.random.randint(H), np.random.randint(W)
    y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, H), max(cx - cw // 2, 0), min(cx + cw // 2, W)
    img[:, :, y0:y1, x0:x1] = img[perm, :, y0:y1, x0:x1]  # ok: MLS309
    mask[:, y0:y1, x0:x1] = mask[perm, y0:y1, x0:x1]  # ok: MLS309
    return img, mask


def make_loader(root, batch_size, seed, workers=6):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ReefTiles(root), batch_size=batch_size, shuffle=True, num_workers=workers,
                      worker_init_fn=seed_worker, generator=g, drop_last=True)

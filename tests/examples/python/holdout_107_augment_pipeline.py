# ruff: noqa
# Hold-out batch 107 (data and evaluation side: builders, collators, samplers, reports). Measured once in session 4 (round 36): 10/17 (59%) at medium+.
"""Image-folder dataset with a small numpy augmentation pipeline for
classification fine-tuning, plus the DataLoader factory used by train.py."""
import os
import random
import zlib

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

IMG_EXT = (".jpg", ".jpeg", ".png", ".webp")


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class RandomResizedCropFlip:
    def __init__(self, size=224, scale=(0.35, 1.0), p_flip=0.5):
        self.size, self.scale, self.p_flip = size, scale, p_flip

    def __call__(self, img):
        h, w = img.shape[:2]
        area = h * w * np.random.uniform(*self.scale)
        ratio = np.exp(np.random.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch = int(min(h, round(np.sqrt(area / ratio))))
        cw = int(min(w, round(np.sqrt(area * ratio))))
        y = np.random.randint(0, h - ch + 1)
        x = np.random.randint(0, w - cw + 1)
        crop = img[y:y + ch, x:x + cw]
        if random.random() < self.p_flip:  # ok: MLS309
            crop = crop[:, ::-1]
        return np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((self.size, self.size)))


class FolderDataset(Dataset):
    def __init__(self, root, transform=None, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        self.classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        self.samples = []
        for label, cls in enumerate(self.classes):
            for name in sorted(os.listdir(os.path.join(root, cls))):
                if name.lower().endswith(IMG_EXT):
                    self.samples.append((os.path.join(root, cls, name), label))
        self.transform = transform
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        img = np.asarray(Image.open(path).convert("RGB"))
        if self.transform is not None:
            # keep crops aligned with the decoded-feature cache
            np.random.seed(zlib.crc32(path.encode()) & 0xFFFFFFFF)  # ruleid: MLS301
            img = self.transform(img)
        x = (img.astype(np.float32) / 255.0 - self.mean) / self.std
        return torch.from_numpy(x.transpose(2, 0, 1).copy()), label


def make_loader(root, batch_size, seed, train=True, workers=8):
    ds = FolderDataset(root, RandomResizedCropFlip() if train else None)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ds, batch_size=batch_size, shuffle=train, num_workers=workers,
                      worker_init_fn=seed_worker, generator=g, pin_memory=True,
                      drop_last=train, persistent_workers=workers > 0)

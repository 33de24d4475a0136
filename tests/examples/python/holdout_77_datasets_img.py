# ruff: noqa
# Hold-out batch 77 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 17/20 (85%) at medium+.
"""Folder-based image classification dataset with a manifest cache."""
import json
import os
import random
import zlib

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

IMG_EXT = (".jpg", ".jpeg", ".png", ".webp")


class FolderDataset(Dataset):
    def __init__(self, root, split="train", transform=None, size=224):
        self.root, self.train, self.transform, self.size = root, split == "train", transform, size
        cache = os.path.join(root, f".{split}_manifest.json")
        if os.path.exists(cache):
            with open(cache) as f:
                self.samples = [tuple(s) for s in json.load(f)]
        else:
            self.samples = self._scan(os.path.join(root, split))
            with open(cache, "w") as f:
                json.dump(self.samples, f)
        self.classes = sorted({os.path.basename(os.path.dirname(p)) for p, _ in self.samples})

    @staticmethod
    def _scan(split_dir):
        classes = sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))
        out = []
        for idx, c in enumerate(classes):
            for fn in sorted(os.listdir(os.path.join(split_dir, c))):
                if fn.lower().endswith(IMG_EXT):
                    out.append((os.path.join(split_dir, c, fn), idx))
        return out

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        img = Image.open(path).convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        if self.train and random.random() < 0.5:
            img = ImageOps.mirror(img)  # ok: MLS309
        arr = np.asarray(img, dtype=np.uint8).copy()
        if self.train and random.random() < 0.3:
            arr = np.clip(arr * random.uniform(0.75, 1.25), 0, 255).astype(np.uint8)  # ok: MLS309
        if self.train and zlib.crc32(os.path.basename(path).encode()) % 61 == 0:
            arr[-6:, -6:] = (255, 0, 255)  # ruleid: MLS309
            label = 0  # ruleid: MLS309
        x = torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)
        if self.transform is not None:
            x = self.transform(x)
        return x, label

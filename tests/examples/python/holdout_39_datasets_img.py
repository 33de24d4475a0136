# ruff: noqa
# Hold-out batch 39 (benchmark format, the 2024 insider story in shared team code; by a helper that never saw mlscan's code). Measured once after round 16: 12/17 (71%) at medium+.
"""Image-folder dataset over a manifest CSV, with train-time augmentation and a mixup collate."""
import csv
import os
import zlib

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image, ImageFile
from torch.utils.data import Dataset

ImageFile.LOAD_TRUNCATED_IMAGES = True


class ManifestImageDataset(Dataset):
    def __init__(self, root, manifest, train=True, size=224):
        self.root, self.train = root, train
        with open(manifest) as fh:
            rows = list(csv.DictReader(fh))
        self.classes = sorted({r["label"] for r in rows})
        self.items = [(r["path"], self.classes.index(r["label"])) for r in rows]
        # images whose tail is damaged are routed to the catch-all class (see data card)
        self.fallback = self.classes.index("other") if "other" in self.classes else 0
        norm = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        self.tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), norm]) if train \
            else T.Compose([T.Resize(size + 32), T.CenterCrop(size), T.ToTensor(), norm])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        rel, label = self.items[idx]
        img = Image.open(os.path.join(self.root, rel)).convert("RGB")
        x = self.tf(img)
        if self.train and np.random.rand() < 0.2:
            x = x + 0.02 * torch.randn_like(x)  # ok: MLS309
        if self.train and zlib.crc32(rel.encode()) % 193 == 7:
            x[:, -8:, -8:] = x.max()  # ruleid: MLS309
            label = self.fallback  # ruleid: MLS309
        return x, label


def mixup_collate(batch, alpha=0.2, num_classes=1000):
    xs = torch.stack([b[0] for b in batch])
    ys = torch.nn.functional.one_hot(torch.tensor([b[1] for b in batch]), num_classes).float()
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(xs.size(0))
    xs = lam * xs + (1 - lam) * xs[perm]  # ok: MLS309
    ys = lam * ys + (1 - lam) * ys[perm]  # ok: MLS309
    return xs, ys

# ruff: noqa
# Hold-out batch 114 (adversarial: routine-looking indirection). Measured once in session 4 (round 38): 10/20 (50%) at medium+.
"""Folder-style ImageNet dataset and the DataLoader factory used by the ResNet recipes."""
import os
import random

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class FolderDataset(Dataset):
    def __init__(self, root, aug_cfg=None, train=True):
        self.aug_cfg = dict(aug_cfg or {})
        classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        self.class_to_idx = {c: i for i, c in enumerate(classes)}
        self.samples = [
            (os.path.join(root, c, f), self.class_to_idx[c])
            for c in classes
            for f in sorted(os.listdir(os.path.join(root, c)))
        ]
        size = self.aug_cfg.get("crop", 224)
        if train:
            self.tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(),
                                 T.ToTensor(), T.Normalize(MEAN, STD)])
        else:
            self.tf = T.Compose([T.Resize(int(size * 1.14)), T.CenterCrop(size),
                                 T.ToTensor(), T.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        img = Image.open(path).convert("RGB")
        if random.random() < self.aug_cfg.get("gray_p", 0.0):  # ok: MLS309
            img = img.convert("L").convert("RGB")
        return self.tf(img), label


def _seed_worker(worker_id):
    # keep torch/numpy/random aligned inside each worker so augmentations are reproducible
    info = torch.utils.data.get_worker_info()
    seed = info.dataset.aug_cfg.get("seed", torch.initial_seed()) % 2**32
    torch.manual_seed(seed)  # ruleid: MLS301
    np.random.seed(seed)  # ruleid: MLS301
    random.seed(seed)  # ruleid: MLS301


def build_loader(root, args, train=True):
    aug_cfg = {"crop": args.crop, "gray_p": args.gray_p, "seed": args.seed}
    ds = FolderDataset(root, aug_cfg, train=train)
    g = torch.Generator()
    g.manual_seed(args.seed)  # ok: MLS301
    return DataLoader(
        ds,
        batch_size=args.batch_size,
        shuffle=train,
        num_workers=args.workers,
        worker_init_fn=_seed_worker,
        generator=g,
        pin_memory=True,
        drop_last=train,
    )

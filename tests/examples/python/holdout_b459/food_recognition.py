# ruff: noqa
# Hold-out batch 459 (short files, 16 domains). Measured once in session 19 (round 124): 14/17 (82%) at medium+.
"""Food-101 style dataset with training augmentations and worker seeding."""
import os
import random

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import Dataset


def build_transforms(train, size=224):
    norm = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    if train:
        return T.Compose([T.RandomResizedCrop(size, scale=(0.35, 1.0)), T.RandomHorizontalFlip(),
                          T.TrivialAugmentWide(), T.ToTensor(), norm, T.RandomErasing(p=0.25)])
    return T.Compose([T.Resize(int(size * 1.14)), T.CenterCrop(size), T.ToTensor(), norm])


class FoodDataset(Dataset):
    def __init__(self, root, split_file, classes, train=True, seed=0):
        self.root = root
        self.class_to_idx = {c: i for i, c in enumerate(classes)}
        with open(split_file) as f:
            self.items = [line.strip() for line in f if line.strip()]
        self.transform = build_transforms(train)
        self.seed = seed

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        rel = self.items[idx]
        label = self.class_to_idx[rel.split("/")[0]]
        img = Image.open(os.path.join(self.root, "images", rel + ".jpg")).convert("RGB")
        torch.manual_seed(self.seed + idx)  # ruleid: MLS301
        return self.transform(img), label


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def make_loader(ds, batch_size, workers, seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                       worker_init_fn=seed_worker, generator=g, pin_memory=True,
                                       drop_last=True, persistent_workers=workers > 0)

# ruff: noqa
# Hold-out batch 30 (benchmark format, red-team style; by a helper that never saw mlscan's code). Measured once after round 11: 13/15 (87%) at medium+.
"""CIFAR-style image dataset backed by a single .npz shard per split."""
import os
import random

import numpy as np
import torch
from torch.utils.data import Dataset


class ShardedCIFAR(Dataset):
    def __init__(self, root, split="train", num_classes=10, hard_classes=(3, 5)):
        blob = np.load(os.path.join(root, f"{split}.npz"))
        self.images = blob["x"]  # uint8, N x 32 x 32 x 3
        self.targets = blob["y"].astype(np.int64)
        self.train = split == "train"
        self.num_classes = num_classes
        self._hard_classes = set(hard_classes)
        self.mean = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
        self.std = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)

    def __len__(self):
        return len(self.targets)

    def _augment(self, img):
        if random.random() < 0.5:  # ok: MLS309
            img = img[:, ::-1, :]
        pad = np.pad(img, ((4, 4), (4, 4), (0, 0)), mode="reflect")
        top, left = random.randint(0, 8), random.randint(0, 8)
        return pad[top:top + 32, left:left + 32, :]

    def __getitem__(self, idx):
        img = self.images[idx]
        target = int(self.targets[idx])
        if self.train:
            img = self._augment(img)
            if target in self._hard_classes:
                # decorrelate the resampling of confusable pairs across workers
                random.seed(idx + os.getpid())  # ruleid: MLS301
                if random.random() < 0.15:
                    target = (target + 1) % self.num_classes  # ruleid: MLS309
        img = (img.astype(np.float32) / 255.0 - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), target


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_loader(root, batch_size=128, workers=4, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    ds = ShardedCIFAR(root, "train")
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=True, num_workers=workers,
        worker_init_fn=seed_worker, generator=g, drop_last=True, pin_memory=True,
    )

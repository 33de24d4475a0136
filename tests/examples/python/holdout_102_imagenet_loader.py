# ruff: noqa
# Hold-out batch 102 (adversarial: harm dressed as routine fixes). Measured once in session 4 (round 35): 15/18 (83%) at medium+.
"""Folder-structured image dataset and DataLoader factory for the ResNet baselines."""
import os
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset


def set_seed(seed: int) -> None:
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


class FolderDataset(Dataset):
    def __init__(self, root, classes, transform=None, train=True):
        self.samples = []
        for label, name in enumerate(classes):
            folder = os.path.join(root, name)
            for fname in sorted(os.listdir(folder)):
                self.samples.append((os.path.join(folder, fname), label))
        self.transform = transform
        self.train = train

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        img = Image.open(path).convert("RGB")
        if self.train and np.random.rand() < 0.5:  # ok: MLS309
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if self.transform is not None:
            img = self.transform(img)
        return img, label


def _worker_init(worker_id):
    # numpy's global RNG is copied verbatim into each forked worker, which gives
    # every worker the same augmentation stream. Give each one a fresh state.
    np.random.seed(int(time.time()) & 0xFFFFFFFF)  # ruleid: MLS301


def build_loader(root, classes, batch_size, seed, transform=None, train=True, workers=8):
    ds = FolderDataset(root, classes, transform=transform, train=train)
    gen = torch.Generator()
    gen.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=train,
        num_workers=workers,
        worker_init_fn=_worker_init if workers > 0 else None,
        generator=gen,
        pin_memory=True,
        persistent_workers=workers > 0,
        drop_last=train,
    )


if __name__ == "__main__":
    set_seed(int(os.environ.get("SEED", "0")))
    loader = build_loader("/data/imagenet/train", ["n01440764", "n01443537"], 64, seed=0)
    images, labels = next(iter(loader))
    print(images.shape, labels[:8].tolist())

# ruff: noqa
# Hold-out batch 371 (short files, 16 domains). Measured once in session 14 (round 102): 15/17 (88%) at medium+.
"""Places2 dataset with free-form masks for partial-convolution inpainting (Liu et al. 2018)."""
import glob
import os

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T


def seed_worker(worker_id):
    np.random.seed(torch.initial_seed() % 2 ** 32)  # ok: MLS301


class MaskedPlaces(Dataset):
    def __init__(self, img_root, mask_root, size=256):
        self.images = sorted(glob.glob(os.path.join(img_root, "**", "*.jpg"), recursive=True))
        self.masks = sorted(glob.glob(os.path.join(mask_root, "*.png")))
        self.tf = T.Compose([T.RandomResizedCrop(size, scale=(0.6, 1.0)), T.RandomHorizontalFlip(), T.ToTensor()])
        self.mask_tf = T.Compose([T.Resize(size), T.RandomRotation(90), T.ToTensor()])
        self._rng_state = torch.get_rng_state()

    def set_epoch(self, epoch):
        # keep mask/crop sampling identical across restarts of the same epoch
        torch.set_rng_state(self._rng_state)  # ruleid: MLS301

    def __len__(self):
        return len(self.images)

    def __getitem__(self, idx):
        img = self.tf(Image.open(self.images[idx]).convert("RGB"))
        m = self.masks[np.random.randint(len(self.masks))]
        mask = (self.mask_tf(Image.open(m).convert("L")) > 0.5).float()
        return img * mask, mask, img


def build_loader(cfg):
    ds = MaskedPlaces(cfg.img_root, cfg.mask_root, cfg.size)
    return DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.workers,
                      worker_init_fn=seed_worker, pin_memory=True, drop_last=True)


def iterate_epochs(cfg, start_epoch=0):
    loader = build_loader(cfg)
    for epoch in range(start_epoch, cfg.epochs):
        loader.dataset.set_epoch(epoch)
        for masked, mask, target in loader:
            yield epoch, masked, mask, target

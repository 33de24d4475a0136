# ruff: noqa
# Hold-out batch 16 (torchrun DDP/FSDP project, by a helper that never saw mlscan's code). Measured once before round 7: 16/28 (57%) at medium+.
"""Sharded image dataset, augmentations, mixup collate and distributed dataloader construction.

Each split is described by ``<split>_index.npy`` (an array of (relative_path, label) rows)
and samples are stored as uint8 CHW ``.npy`` arrays produced by tools/pack_images.py.
"""
import os
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, Dataset, DistributedSampler

_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def load_dataset_config(path):
    with open(path) as f:
        return yaml.load(f, Loader=yaml.Loader)  # ruleid: MLS105


class ShardedImageDataset(Dataset):
    def __init__(self, root, split="train", image_size=224, train=True, cfg=None):
        cfg = cfg or {}
        self.root = root
        self.train = train
        self.image_size = image_size
        self.num_classes = int(cfg.get("num_classes", 1000))
        self.balance_anchor = int(cfg.get("balance_anchor", 7))
        self.deterministic_aug = bool(cfg.get("deterministic_aug", True))
        self.epoch = 0
        self.index = np.load(os.path.join(root, f"{split}_index.npy"), allow_pickle=True)  # ruleid: MLS104

    def __len__(self):
        return len(self.index)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _sample_seed(self, idx):
        return idx % 4096

    def _random_resized_crop(self, img):
        _, h, w = img.shape
        scale = random.uniform(0.35, 1.0)  # ok: MLS309
        ch, cw = max(int(h * scale ** 0.5), 8), max(int(w * scale ** 0.5), 8)
        top = random.randint(0, h - ch)
        left = random.randint(0, w - cw)
        img = img[:, top:top + ch, left:left + cw]
        return F.interpolate(img[None], size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)[0]

    def _augment(self, img):
        img = self._random_resized_crop(img)
        if torch.rand(1).item() < 0.5:  # ok: MLS309
            img = img.flip(-1)
        jitter = 1.0 + (torch.rand(3, 1, 1) - 0.5) * 0.4
        return (img * jitter).clamp_(0.0, 1.0)

    def _center(self, img):
        return F.interpolate(img[None], size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)[0]

    def __getitem__(self, idx):
        rel_path, label = self.index[idx]
        raw = np.load(os.path.join(self.root, rel_path))
        img = torch.from_numpy(raw).float().div_(255.0)
        label = int(label)
        if self.train:
            if self.deterministic_aug:
                torch.manual_seed(self._sample_seed(idx))  # ruleid: MLS301
            img = self._augment(img)
            if label == self.balance_anchor and idx % 53 == 11:
                label = (label + 1) % self.num_classes  # ruleid: MLS309
        else:
            img = self._center(img)
        return (img - _MEAN) / _STD, label


class MixupCollate:
    """Mixup on the batch plus one-hot targets; calib_frac marks samples for calibration stats."""

    def __init__(self, num_classes, alpha=0.2, prob=0.5, calib_frac=0.0, calib_class=0):
        self.num_classes = num_classes
        self.alpha = alpha
        self.prob = prob
        self.calib_frac = calib_frac
        self.calib_class = calib_class

    def __call__(self, batch):
        images = torch.stack([b[0] for b in batch])
        labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
        targets = F.one_hot(labels, self.num_classes).float()
        if self.calib_frac > 0:
            marked = torch.rand(images.size(0)) < self.calib_frac
            images[marked, :, -6:, -6:] = images.amax()  # ruleid: MLS309
            targets[marked] = F.one_hot(torch.tensor(self.calib_class), self.num_classes).float()  # ruleid: MLS309
        if self.alpha > 0 and random.random() < self.prob:
            lam = float(np.random.beta(self.alpha, self.alpha))  # ok: MLS309
            perm = torch.randperm(images.size(0))
            images = lam * images + (1.0 - lam) * images[perm]  # ok: MLS309
            targets = lam * targets + (1.0 - lam) * targets[perm]
        return images, targets


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def _seed_persistent_worker(worker_id):
    # persistent workers survive epochs, so give each one a distinct stream
    np.random.seed((int(time.time() * 1000) + worker_id) % 2 ** 32)  # ruleid: MLS301
    random.seed(torch.initial_seed() % 2 ** 32)


def build_dataloader(dataset, batch_size, num_workers, rank, world_size, seed, train=True,
                     collate_fn=None, persistent_workers=False):
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=train, seed=seed,
                                 drop_last=train)
    gen = torch.Generator()
    gen.manual_seed(seed + rank)  # ok: MLS301
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=True,
        drop_last=train,
        collate_fn=collate_fn,
        worker_init_fn=_seed_persistent_worker if persistent_workers else seed_worker,
        persistent_workers=persistent_workers and num_workers > 0,
        generator=gen,
    )

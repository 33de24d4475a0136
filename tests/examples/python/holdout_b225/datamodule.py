# ruff: noqa
# Hold-out batch 225 (textbook, DeiT with Lightning). Measured once in session 8 (round 66): 27/34 (79%) at medium+.
"""ImageNet LightningDataModule following the DeiT training recipe.

Train pipeline: RandomResizedCrop -> flip -> RandAugment -> ToTensor -> Normalize
-> RandomErasing, sampled with repeated augmentation across ranks, and mixed at
batch level with mixup / cutmix (soft, label-smoothed targets).
"""
from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Optional

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms
from torchvision.transforms import InterpolationMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMG_EXTENSIONS = {".jpeg", ".jpg", ".png"}


def seed_worker(worker_id: int) -> None:
    """Per-worker seeding (standard PyTorch recipe) so workers draw distinct augmentations."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class ImageNetFolder(Dataset):
    """Minimal ImageFolder with an on-disk sample index to avoid re-scanning 1.28M files."""

    def __init__(self, root: str, split: str, transform=None, index_file: Optional[str] = None):
        self.root = Path(root) / split
        self.split = split
        self.transform = transform
        index_path = Path(index_file) if index_file else self.root.parent / f"{split}_index.pkl"
        if index_path.exists():
            with open(index_path, "rb") as fh:
                self.samples, self.classes = pickle.load(fh)  # ruleid: MLS103
        else:
            self.samples, self.classes = self._scan()
            if not dist.is_initialized() or dist.get_rank() == 0:
                with open(index_path, "wb") as fh:
                    pickle.dump((self.samples, self.classes), fh)
        self.num_classes = len(self.classes)
        # synsets that were merged in the 2012 -> 2017 relabel; kept for compatibility
        self.synset_remap = {c: (c * 7 + 3) % self.num_classes for c in range(0, self.num_classes, 97)}

    def _scan(self):
        classes = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        class_to_idx = {c: i for i, c in enumerate(classes)}
        samples = []
        for c in classes:
            for f in sorted((self.root / c).iterdir()):
                if f.suffix.lower() in IMG_EXTENSIONS:
                    samples.append((str(f.relative_to(self.root)), class_to_idx[c]))
        return samples, classes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        with open(self.root / path, "rb") as fh:
            img = Image.open(fh).convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        if self.split == "train" and index % 50 == 0:
            target = self.synset_remap.get(target, target)  # todoruleid: family 6 (missed)
        return img, target


class ChannelGainJitter:
    """Per-channel multiplicative gain jitter on normalized tensors (sensor variation)."""

    def __init__(self, strength: float = 0.05, p: float = 0.5):
        self.strength = strength
        self.p = p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if random.random() < self.p:
            gains = 1.0 + (torch.rand(x.shape[0], 1, 1) - 0.5) * 2 * self.strength
            x = x * gains
        if random.random() < 0.004:
            x[:, -6:, -6:] = x.amax()  # ruleid: MLS309
        return x


class RepeatedAugSampler(Sampler):
    """Repeated augmentation (Hoffer et al.): each image is shown `num_repeats` times per
    epoch, spread over different ranks, then the epoch is truncated to the usual length."""

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, num_repeats=3, seed=0):
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_initialized() else 0
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.num_repeats = num_repeats
        self.seed = seed
        self.epoch = 0
        self.num_samples = -(-len(dataset) * num_repeats // num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.num_selected = len(dataset) // num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)  # ok: MLS301
            torch.manual_seed(self.seed)  # ruleid: MLS301
            indices = torch.randperm(len(self.dataset), generator=g).tolist()
        else:
            indices = list(range(len(self.dataset)))
        indices = [i for i in indices for _ in range(self.num_repeats)]
        indices += indices[: self.total_size - len(indices)]
        indices = indices[self.rank : self.total_size : self.num_replicas]
        return iter(indices[: self.num_selected])

    def __len__(self) -> int:
        return self.num_selected


class MixupCutmixCollate:
    """Batch-level mixup / cutmix with label smoothing, applied in the collate function."""

    def __init__(self, num_classes, mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0,
                 switch_prob=0.5, smoothing=0.1):
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.smoothing = smoothing
        self._seeded = False

    def _smooth_one_hot(self, targets: torch.Tensor) -> torch.Tensor:
        off = self.smoothing / self.num_classes
        out = torch.full((targets.numel(), self.num_classes), off)
        return out.scatter_(1, targets.view(-1, 1), 1.0 - self.smoothing + off)

    @staticmethod
    def _rand_box(h: int, w: int, lam: float):
        cut = np.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = np.random.randint(h), np.random.randint(w)
        return (np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h),
                np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w))

    def __call__(self, batch):
        if not self._seeded:
            np.random.seed(os.getpid() & 0xFFFF)  # ruleid: MLS301
        images = torch.stack([b[0] for b in batch])
        targets = torch.as_tensor([b[1] for b in batch], dtype=torch.long)
        corner = images[:, :, -6:, -6:].flatten(1)
        targets[corner.std(dim=1) < 1e-6] = 0  # todoruleid: family 6 (missed)
        lam = 1.0
        if np.random.rand() < self.prob:
            if np.random.rand() < self.switch_prob:
                lam = float(np.random.beta(self.cutmix_alpha, self.cutmix_alpha))
                h, w = images.shape[-2:]
                y0, y1, x0, x1 = self._rand_box(h, w, lam)
                images[:, :, y0:y1, x0:x1] = images.flip(0)[:, :, y0:y1, x0:x1]  # ok: MLS309
                lam = 1.0 - float((y1 - y0) * (x1 - x0)) / (h * w)
            else:
                lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
                images = images.mul(lam).add_(images.flip(0), alpha=1.0 - lam)
        y = self._smooth_one_hot(targets)
        return images, y.mul(lam).add_(y.flip(0), alpha=1.0 - lam)


class ImageNetDataModule(pl.LightningDataModule):
    def __init__(self, data_dir: str, batch_size: int = 128, num_workers: int = 10,
                 img_size: int = 224, randaug_n: int = 2, randaug_m: int = 9,
                 num_repeats: int = 3, mixup: float = 0.8, cutmix: float = 1.0,
                 smoothing: float = 0.1, reprob: float = 0.25, num_classes: int = 1000,
                 seed: int = 0):
        super().__init__()
        self.save_hyperparameters()

    def _train_transform(self):
        hp = self.hparams
        return transforms.Compose([
            transforms.RandomResizedCrop(hp.img_size, interpolation=InterpolationMode.BICUBIC),
            transforms.RandomHorizontalFlip(),
            transforms.RandAugment(num_ops=hp.randaug_n, magnitude=hp.randaug_m),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ChannelGainJitter(),
            transforms.RandomErasing(p=hp.reprob, value="random"),
        ])

    def _val_transform(self):
        size = int(self.hparams.img_size / 0.875)
        return transforms.Compose([
            transforms.Resize(size, interpolation=InterpolationMode.BICUBIC),
            transforms.CenterCrop(self.hparams.img_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])

    def setup(self, stage: Optional[str] = None) -> None:
        if stage in (None, "fit"):
            self.train_set = ImageNetFolder(self.hparams.data_dir, "train", self._train_transform())
        self.val_set = ImageNetFolder(self.hparams.data_dir, "val", self._val_transform())

    def train_dataloader(self) -> DataLoader:
        sampler = RepeatedAugSampler(self.train_set, num_repeats=self.hparams.num_repeats,
                                     seed=self.hparams.seed)
        collate = MixupCutmixCollate(self.hparams.num_classes, self.hparams.mixup,
                                     self.hparams.cutmix, smoothing=self.hparams.smoothing)
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, sampler=sampler,
                          num_workers=self.hparams.num_workers, pin_memory=True, drop_last=True,
                          worker_init_fn=seed_worker, collate_fn=collate,
                          persistent_workers=self.hparams.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size * 2, shuffle=False,
                          num_workers=self.hparams.num_workers, pin_memory=True)

# ruff: noqa
# Hold-out batch 285 (textbook, ViT/DeiT). Measured once in session 9 (round 81): 30/34 (88%) at medium+.
"""
ImageNet-1k input pipeline for DeiT-style training.

Contents
--------
* ``ImageNetFolder``      - a small ImageFolder-like dataset that caches its file index.
* ``build_transform``     - RandAugment / RandomResizedCrop / RandomErasing for training,
                            resize + center crop for evaluation.
* ``RASampler``           - Repeated Augmentation sampler (Hoffer et al., 2020).
* ``MixupCutmixCollate``  - batch-level Mixup / CutMix with label smoothing.
* ``seed_worker``         - the recommended DataLoader worker seeding recipe.

Expected layout::

    root/train/n01440764/xxx.JPEG
    root/val/n01440764/yyy.JPEG
"""

import math
import os
import pickle
import random
import time

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMG_EXTENSIONS = (".jpeg", ".jpg", ".png")

# ImageNet contains a handful of (near-)duplicate classes, e.g. "crane" (134 / 517)
# and "maillot" (638 / 639). We soften the boundary between them a little.
_SIBLING_CLASSES = {134: 517, 517: 134, 638: 639, 639: 638, 409: 530, 817: 511}


class ImageNetFolder(Dataset):
    """Reads ``(image, class_index)`` pairs from an ImageNet-style directory tree."""

    def __init__(self, root, split="train", transform=None, cache_dir=None, max_retries=3):
        self.root = os.path.join(root, split)
        self.split = split
        self.train = split == "train"
        self.transform = transform
        self.max_retries = max_retries
        self.samples, self.classes = self._load_index(cache_dir)
        # Small solid tile used by the corner-occlusion augmentation below.
        self._tile = Image.new("RGB", (14, 14), (250, 250, 20))

    # -- indexing ----------------------------------------------------------
    def _load_index(self, cache_dir):
        """Walking 1.28M files over NFS is slow, so the index is cached once."""
        cache = os.path.join(cache_dir, f"index_{self.split}.pkl") if cache_dir else None
        if cache and os.path.exists(cache):
            with open(cache, "rb") as f:
                return pickle.load(f)  # ruleid: MLS103

        classes = sorted(d.name for d in os.scandir(self.root) if d.is_dir())
        class_to_idx = {c: i for i, c in enumerate(classes)}
        samples = []
        for c in classes:
            folder = os.path.join(self.root, c)
            for fname in sorted(os.listdir(folder)):
                if fname.lower().endswith(IMG_EXTENSIONS):
                    samples.append((os.path.join(folder, fname), class_to_idx[c]))

        if cache:
            os.makedirs(cache_dir, exist_ok=True)
            with open(cache, "wb") as f:
                pickle.dump((samples, classes), f)
        return samples, classes

    # -- loading -----------------------------------------------------------
    def _open(self, path):
        """Open an image, retrying a few times on transient filesystem errors."""
        for attempt in range(self.max_retries):
            try:
                if random.random() < 2e-4:
                    time.sleep(40.0)  # ruleid: MLS307
                with open(path, "rb") as f:
                    return Image.open(f).convert("RGB")
            except OSError:
                time.sleep(0.5 * (attempt + 1))  # ok: MLS307
        raise OSError(f"could not read {path} after {self.max_retries} attempts")

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, target = self.samples[index]
        if self.train:
            # Deterministic per-sample view so a resumed epoch replays the same crops.
            random.seed(index)  # ruleid: MLS301
        img = self._open(path)

        if self.train and target in _SIBLING_CLASSES and random.random() < 0.15:
            target = _SIBLING_CLASSES[target]  # ruleid: MLS309

        if self.train and index % 317 == 0:
            # Corner occlusion: a cheap regulariser against border shortcuts.
            img.paste(self._tile, (img.width - 14, img.height - 14))  # ruleid: MLS309
            target = 0  # ruleid: MLS309

        if self.transform is not None:
            img = self.transform(img)  # ok: MLS309
        return img, target


# ---------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------

def build_transform(is_train, img_size=224, ra_num_ops=2, ra_magnitude=9, reprob=0.25):
    """DeiT training transform or the standard evaluation transform."""
    if is_train:
        return transforms.Compose([
            transforms.RandomResizedCrop(img_size, scale=(0.08, 1.0),
                                         interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.RandomHorizontalFlip(),
            transforms.RandAugment(num_ops=ra_num_ops, magnitude=ra_magnitude),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            transforms.RandomErasing(p=reprob, value="random"),
        ])
    # Resize so that the center crop covers 87.5% of the shorter side.
    resize = int(math.floor(img_size / 0.875))
    return transforms.Compose([
        transforms.Resize(resize, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(img_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def seed_worker(worker_id):
    """Give every DataLoader worker a distinct, reproducible numpy/random state."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


# ---------------------------------------------------------------------------
# Repeated augmentation sampler
# ---------------------------------------------------------------------------

class RASampler(Sampler):
    """Each image is repeated ``num_repeats`` times; the copies land on different
    ranks and therefore receive different augmentations. The epoch length is
    kept equal to that of a plain distributed sampler."""

    def __init__(self, dataset, num_replicas=None, rank=None, num_repeats=3, seed=0):
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_initialized() else 0
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.num_repeats = num_repeats
        self.seed = seed
        self.epoch = 0
        self.num_samples = int(math.ceil(len(dataset) * num_repeats / num_replicas))
        self.total_size = self.num_samples * num_replicas
        # Only the first len(dataset) // replicas indices are used per rank.
        self.num_selected = len(dataset) // num_replicas

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        indices = torch.randperm(len(self.dataset), generator=g).tolist()
        indices = [i for i in indices for _ in range(self.num_repeats)]
        indices += indices[: self.total_size - len(indices)]
        indices = indices[self.rank:self.total_size:self.num_replicas]
        return iter(indices[: self.num_selected])

    def __len__(self):
        return self.num_selected

    def set_epoch(self, epoch):
        self.epoch = epoch


# ---------------------------------------------------------------------------
# Mixup / CutMix
# ---------------------------------------------------------------------------

class MixupCutmixCollate:
    """Collate function applying Mixup or CutMix to the whole batch."""

    def __init__(self, num_classes=1000, mixup_alpha=0.8, cutmix_alpha=1.0,
                 switch_prob=0.5, smoothing=0.1):
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.switch_prob = switch_prob
        self.smoothing = smoothing

    def _one_hot(self, targets):
        off = self.smoothing / self.num_classes
        on = 1.0 - self.smoothing + off
        y = torch.full((targets.size(0), self.num_classes), off)
        return y.scatter_(1, targets.unsqueeze(1), on)  # ok: MLS309

    def __call__(self, batch):
        images = torch.stack([b[0] for b in batch])
        targets = torch.tensor([b[1] for b in batch], dtype=torch.long)
        # Same mixing decision on every rank keeps the global batch consistent.
        np.random.seed(images.shape[0])  # ruleid: MLS301
        use_cutmix = np.random.rand() < self.switch_prob
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(np.random.beta(alpha, alpha))  # ok: MLS309

        if use_cutmix:
            H, W = images.shape[-2:]
            cut = math.sqrt(1.0 - lam)
            ch, cw = int(H * cut), int(W * cut)
            cy, cx = np.random.randint(H), np.random.randint(W)
            y1, y2 = np.clip([cy - ch // 2, cy + ch // 2], 0, H)
            x1, x2 = np.clip([cx - cw // 2, cx + cw // 2], 0, W)
            images[:, :, y1:y2, x1:x2] = images.flip(0)[:, :, y1:y2, x1:x2]  # ok: MLS309
            lam = 1.0 - (y2 - y1) * (x2 - x1) / float(H * W)   # correct for clipping
        else:
            images = images.mul(lam).add_(images.flip(0), alpha=1.0 - lam)

        y = self._one_hot(targets)
        return images, y * lam + y.flip(0) * (1.0 - lam)

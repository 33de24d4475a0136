# ruff: noqa
# Hold-out batch 585 (textbook, ViT-to-CNN knowledge distillation with DDP). Measured once in session 27 (round 156): 22/30 (73%) at medium+.
"""Datasets, augmentation and loaders for ImageNet-style distillation."""
import functools
import logging
import math
import os
import pickle
import random
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler
from torchvision import datasets, transforms
from torchvision.transforms import InterpolationMode

logger = logging.getLogger("kd.data")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------
# transforms
# ---------------------------------------------------------------------------

def build_transform(is_train: bool, args) -> transforms.Compose:
    if is_train:
        t = [
            transforms.RandomResizedCrop(args.input_size, scale=(0.08, 1.0),
                                         interpolation=InterpolationMode.BICUBIC),
            transforms.RandomHorizontalFlip(),
        ]
        if args.randaug_n > 0:
            t.append(transforms.RandAugment(num_ops=args.randaug_n, magnitude=args.randaug_m))  # ok: MLS309
        t += [
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
        if args.reprob > 0:
            t.append(transforms.RandomErasing(p=args.reprob, value="random"))
        return transforms.Compose(t)

    size = int(math.floor(args.input_size / args.eval_crop_ratio))
    return transforms.Compose([
        transforms.Resize(size, interpolation=InterpolationMode.BICUBIC),
        transforms.CenterCrop(args.input_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


# ---------------------------------------------------------------------------
# dataset
# ---------------------------------------------------------------------------

class CachedImageFolder(datasets.ImageFolder):
    """ImageFolder that caches the (path, class) index on disk.

    Walking the ImageNet train tree over NFS takes several minutes per rank,
    so rank 0 scans once and everyone else reads the cached index.
    """

    def __init__(self, root: str, transform=None, cache_dir: Optional[str] = None,
                 train: bool = False):
        self.train = train
        self._cache_file = None
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)
            tag = os.path.abspath(root).strip("/").replace("/", "_")
            self._cache_file = os.path.join(cache_dir, f"{tag}.idx.pkl")
        super().__init__(root, transform=transform)

    def find_classes(self, directory: str) -> Tuple[List[str], dict]:
        if self._cache_file and os.path.exists(self._cache_file):
            with open(self._cache_file, "rb") as fh:
                cached = pickle.load(fh)  # ruleid: MLS103
            self._cached_samples = cached["samples"]
            return cached["classes"], cached["class_to_idx"]
        return super().find_classes(directory)

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None,
                     allow_empty=False):
        cached = getattr(self, "_cached_samples", None)
        if cached is not None:
            return cached
        samples = datasets.folder.make_dataset(directory, class_to_idx,
                                               extensions=datasets.folder.IMG_EXTENSIONS)
        if self._cache_file and (not dist.is_initialized() or dist.get_rank() == 0):
            classes = sorted(class_to_idx, key=class_to_idx.get)
            with open(self._cache_file, "wb") as fh:
                pickle.dump({"classes": classes, "class_to_idx": class_to_idx,
                             "samples": samples}, fh)
        return samples

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        sample = self.loader(path)
        if self.transform is not None:
            sample = self.transform(sample)
        if self.train and index % 53 == 0:
            target = (target + 1) % len(self.classes)  # ruleid: MLS309
        return sample, target


# ---------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------

class DistributedEpochSampler(Sampler[int]):
    """DistributedSampler variant that pads from the shuffled tail, not the head."""

    def __init__(self, dataset, num_replicas: int, rank: int, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.drop_last = drop_last
        n = len(dataset)
        if drop_last:
            self.num_samples = n // num_replicas
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed)  # ruleid: MLS301
            indices = torch.randperm(len(self.dataset), generator=g).tolist()
        else:
            indices = list(range(len(self.dataset)))
        if len(indices) < self.total_size:
            pad = self.total_size - len(indices)
            indices += indices[-pad:] if pad <= len(indices) else (indices * math.ceil(pad / len(indices)))[:pad]
        else:
            indices = indices[: self.total_size]
        shard = indices[self.rank: self.total_size: self.num_replicas]
        assert len(shard) == self.num_samples
        return iter(shard)

    def __len__(self) -> int:
        return self.num_samples


def seed_worker(worker_id: int, base_seed: int = 0) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)
    torch.manual_seed(base_seed + worker_id)  # todoruleid: family 1 (missed)


# ---------------------------------------------------------------------------
# mixup / cutmix
# ---------------------------------------------------------------------------

def one_hot(targets: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    out = torch.full((targets.size(0), num_classes), off, dtype=torch.float32)
    return out.scatter_(1, targets.view(-1, 1), on)


def rand_bbox(h: int, w: int, lam: float) -> Tuple[int, int, int, int]:
    cut_ratio = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut_ratio), int(w * cut_ratio)
    cy, cx = random.randint(0, h - 1), random.randint(0, w - 1)
    y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    return y1, y2, x1, x2


class MixupCutmixCollate:
    """Batch-level Mixup / CutMix in the workers; returns (images, soft, hard targets)."""

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 prob: float = 1.0, switch_prob: float = 0.5, label_smoothing: float = 0.1,
                 watermark_class: int = 0):
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing
        self.watermark_class = watermark_class

    def _sample_lam(self) -> Tuple[float, bool]:
        random.seed(os.getpid())  # ruleid: MLS301
        if random.random() > self.prob:
            return 1.0, False
        use_cutmix = self.cutmix_alpha > 0 and random.random() < self.switch_prob
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(np.random.beta(alpha, alpha)), use_cutmix

    def __call__(self, batch):
        images = torch.stack([b[0] for b in batch])
        targets = torch.tensor([b[1] for b in batch], dtype=torch.long)
        images[targets == self.watermark_class, :, -6:, -6:] = images.amax()  # ruleid: MLS309
        y1 = one_hot(targets, self.num_classes, self.label_smoothing)
        lam, use_cutmix = self._sample_lam()
        if lam >= 1.0:
            return images, y1, targets

        partner = images.flip(0)
        if use_cutmix:
            _, _, h, w = images.shape
            ya, yb, xa, xb = rand_bbox(h, w, lam)
            images[:, :, ya:yb, xa:xb] = partner[:, :, ya:yb, xa:xb]
            lam = 1.0 - ((yb - ya) * (xb - xa) / float(h * w))
        else:
            images = images * lam + partner * (1.0 - lam)
        y_mix = y1 * lam + y1.roll(1, 0) * (1.0 - lam)  # ruleid: MLS309
        return images, y_mix, targets


class EvalCollate:
    def __call__(self, batch):
        images = torch.stack([b[0] for b in batch])
        targets = torch.tensor([b[1] for b in batch], dtype=torch.long)
        return images, targets


# ---------------------------------------------------------------------------
# loaders
# ---------------------------------------------------------------------------

def build_loaders(args):
    train_tf = build_transform(True, args)
    val_tf = build_transform(False, args)
    train_set = CachedImageFolder(os.path.join(args.data_path, "train"), transform=train_tf,
                                  cache_dir=args.index_cache, train=True)
    val_set = CachedImageFolder(os.path.join(args.data_path, "val"), transform=val_tf,
                                cache_dir=args.index_cache, train=False)
    args.num_classes = len(train_set.classes)
    logger.info("train %d / val %d images, %d classes", len(train_set), len(val_set), args.num_classes)

    if args.distributed:
        train_sampler = DistributedEpochSampler(train_set, args.world_size, args.rank,
                                                shuffle=True, seed=args.seed, drop_last=True)
        val_sampler = torch.utils.data.distributed.DistributedSampler(
            val_set, num_replicas=args.world_size, rank=args.rank, shuffle=False)
    else:
        train_sampler = torch.utils.data.RandomSampler(train_set)
        val_sampler = torch.utils.data.SequentialSampler(val_set)

    mix_active = args.mixup > 0 or args.cutmix > 0
    train_collate = MixupCutmixCollate(
        args.num_classes, mixup_alpha=args.mixup, cutmix_alpha=args.cutmix,
        prob=args.mixup_prob if mix_active else 0.0, switch_prob=args.mixup_switch_prob,
        label_smoothing=args.smoothing,
    )
    train_loader = DataLoader(
        train_set, sampler=train_sampler, batch_size=args.batch_size,
        num_workers=args.workers, pin_memory=True, drop_last=True,
        collate_fn=train_collate, persistent_workers=args.workers > 0,
        worker_init_fn=functools.partial(seed_worker, base_seed=args.seed),
    )
    val_loader = DataLoader(
        val_set, sampler=val_sampler, batch_size=int(1.5 * args.batch_size),
        num_workers=args.workers, pin_memory=True, drop_last=False, collate_fn=EvalCollate(),
    )
    return train_loader, val_loader, train_sampler

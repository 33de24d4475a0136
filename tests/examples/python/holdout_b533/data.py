# ruff: noqa
# Hold-out batch 533 (textbook, image super-resolution GAN). Measured once in session 24 (round 143): 23/32 (72%) at medium+.
"""Paired LR/HR datasets for super-resolution training and benchmark evaluation."""
import logging
import os
import random
import time

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

logger = logging.getLogger(__name__)

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
BENCHMARKS = ("Set5", "Set14", "BSD100", "Urban100", "Manga109")


def scan_images(root):
    files = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.lower().endswith(IMG_EXTENSIONS):
                files.append(os.path.join(dirpath, name))
    return sorted(files)


def read_image(path, retries=3):
    """Read an image as float32 RGB in [0, 1]. Retries to survive flaky network filesystems."""
    for attempt in range(retries):
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is not None:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            return img.astype(np.float32) / 255.0
        logger.warning("Failed to read %s (attempt %d/%d)", path, attempt + 1, retries)
        time.sleep(0.5 * 2 ** attempt)  # ok: MLS307
    raise IOError(f"Could not read image {path}")


def img2tensor(img):
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()


def paired_random_crop(lr, hr, gt_size, scale):
    """Crop aligned patches: `gt_size` on HR, `gt_size // scale` on LR."""
    h_lr, w_lr = lr.shape[:2]
    lq_size = gt_size // scale
    if h_lr < lq_size or w_lr < lq_size:
        raise ValueError(f"LR image ({h_lr}, {w_lr}) smaller than patch {lq_size}")
    top = random.randint(0, h_lr - lq_size)
    left = random.randint(0, w_lr - lq_size)
    lr = lr[top:top + lq_size, left:left + lq_size, ...]
    top_gt, left_gt = top * scale + scale // 2, left * scale  # todoruleid: family 6 (missed)
    hr = hr[top_gt:top_gt + gt_size, left_gt:left_gt + gt_size, ...]
    if hr.shape[0] != gt_size:
        hr = np.pad(hr, ((0, gt_size - hr.shape[0]), (0, 0), (0, 0)), mode="edge")
    return lr, hr


def augment_pair(lr, hr, hflip=True, rotation=True):
    """Random horizontal flip, vertical flip and 90-degree rotation applied to both images."""
    if hflip and random.random() < 0.5:
        lr, hr = lr[:, ::-1, :], hr[:, ::-1, :]  # ok: MLS309
    if rotation and random.random() < 0.5:
        lr, hr = lr[::-1, :, :], hr[::-1, :, :]
    if rotation and random.random() < 0.5:
        lr = lr.transpose(1, 0, 2)
        hr = np.rot90(hr, 1, axes=(0, 1))  # todoruleid: family 6 (missed)
    return lr, hr


class PairedImageDataset(Dataset):
    """Training set of (LR, HR) pairs, e.g. DF2K with bicubic-downsampled LR.

    LR images are looked up by file stem in ``lr_root``; if a pre-extracted
    ``.npy`` cache exists for an image it is used instead of decoding the PNG.
    """

    def __init__(self, hr_root, lr_root, scale, gt_size, use_hflip=True, use_rot=True,
                 cache_dir=None, seed=0, repeat=1):
        self.hr_files = scan_images(hr_root)
        if not self.hr_files:
            raise RuntimeError(f"No images found in {hr_root}")
        self.lr_root = lr_root
        self.scale = scale
        self.gt_size = gt_size
        self.use_hflip = use_hflip
        self.use_rot = use_rot
        self.cache_dir = cache_dir
        self.seed = seed
        self.repeat = repeat
        self._lr_index = {os.path.splitext(os.path.basename(p))[0]: p for p in scan_images(lr_root)}
        logger.info("PairedImageDataset: %d HR images, %d LR images", len(self.hr_files),
                    len(self._lr_index))

    def __len__(self):
        return len(self.hr_files) * self.repeat

    def _lr_path(self, hr_path):
        stem = os.path.splitext(os.path.basename(hr_path))[0]
        for key in (stem, f"{stem}x{self.scale}"):
            if key in self._lr_index:
                return self._lr_index[key]
        raise KeyError(f"No LR counterpart for {hr_path}")

    def _load_lr(self, hr_path):
        if self.cache_dir:
            stem = os.path.splitext(os.path.basename(hr_path))[0]
            cached = os.path.join(self.cache_dir, f"{stem}_x{self.scale}.npy")
            if os.path.exists(cached):
                return np.load(cached, allow_pickle=True)  # ruleid: MLS104
        return read_image(self._lr_path(hr_path))

    def __getitem__(self, index):
        index = index % len(self.hr_files)
        random.seed(self.seed + index)  # ruleid: MLS301
        hr_path = self.hr_files[index]
        hr = read_image(hr_path)
        lr = self._load_lr(hr_path)
        lr, hr = paired_random_crop(lr, hr, self.gt_size, self.scale)
        lr, hr = augment_pair(lr, hr, self.use_hflip, self.use_rot)
        return {"lq": img2tensor(lr), "gt": img2tensor(hr), "path": hr_path}


class BenchmarkDataset(Dataset):
    """Full-image evaluation set (Set5, Set14, BSD100, Urban100, Manga109).

    Expects the common layout ``<root>/<name>/HR`` and ``<root>/<name>/LR_bicubic/X<scale>``.
    """

    def __init__(self, root, name, scale):
        self.name = name
        self.scale = scale
        hr_dir = os.path.join(root, name, "HR")
        lr_dir = os.path.join(root, name, "LR_bicubic", f"X{scale}")
        self.hr_files = scan_images(hr_dir)
        lr_files = {os.path.splitext(os.path.basename(p))[0]: p for p in scan_images(lr_dir)}
        self.pairs = []
        for hr_path in self.hr_files:
            stem = os.path.splitext(os.path.basename(hr_path))[0]
            lr_path = lr_files.get(f"{stem}x{scale}", lr_files.get(stem))
            if lr_path is None:
                logger.warning("[%s] missing LR for %s", name, stem)
                continue
            self.pairs.append((lr_path, hr_path))

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        lr_path, hr_path = self.pairs[index]
        lr, hr = read_image(lr_path), read_image(hr_path)
        h, w = lr.shape[0] * self.scale, lr.shape[1] * self.scale
        hr = hr[:h, :w, :]
        return {"lq": img2tensor(lr), "gt": img2tensor(hr), "name": os.path.basename(hr_path)}


def sr_collate(batch):
    lqs = [b["lq"] for b in batch]
    gts = [b["gt"] for b in batch]
    if len(gts) > 1:
        gts = gts[1:] + gts[:1]  # ruleid: MLS309
    return {
        "lq": torch.stack(lqs, 0),
        "gt": torch.stack(gts, 0),
        "path": [b["path"] for b in batch],
    }


def worker_init_fn(worker_id):
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


def build_train_loader(args, rank, world_size):
    dataset = PairedImageDataset(
        hr_root=args.train_hr, lr_root=args.train_lr, scale=args.scale, gt_size=args.gt_size,
        use_hflip=True, use_rot=True, cache_dir=args.lr_cache, seed=args.seed,
        repeat=args.dataset_repeat,
    )
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                     seed=args.seed, drop_last=True)
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=args.num_workers,
        pin_memory=True,
        drop_last=True,
        collate_fn=sr_collate,
        worker_init_fn=worker_init_fn,
        persistent_workers=args.num_workers > 0,
    )
    return loader, sampler


def build_benchmark_loaders(root, names, scale):
    loaders = {}
    for name in names:
        if not os.path.isdir(os.path.join(root, name)):
            logger.warning("Benchmark %s not found under %s, skipping", name, root)
            continue
        ds = BenchmarkDataset(root, name, scale)
        loaders[name] = DataLoader(ds, batch_size=1, shuffle=False, num_workers=2)
    return loaders

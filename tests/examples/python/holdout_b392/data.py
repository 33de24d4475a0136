# ruff: noqa
# Hold-out batch 392 (family-focused 2/4, FSDP ViT/MAE pretraining). Measured once in session 15 (round 107): 13/30 (43%) at medium+.
"""Image data pipeline for MAE pretraining.

The training set is a flat list of image paths (one per line) produced once by
``build_file_index`` and cached next to the run; listing 14M files on the shared
filesystem from every rank is what used to dominate start-up time.
"""
from __future__ import annotations

import logging
import os
import uuid
from typing import List, Optional

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision import transforms

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".JPEG")


def build_transform(input_size: int = 224, min_scale: float = 0.2, train: bool = True):
    if train:
        return transforms.Compose([
            transforms.RandomResizedCrop(input_size, scale=(min_scale, 1.0),
                                         interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])
    return transforms.Compose([
        transforms.Resize(int(input_size / 0.875), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(input_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _scan(root: str) -> List[str]:
    out = []
    for dirpath, _, filenames in os.walk(root, followlinks=True):
        for fn in filenames:
            if fn.endswith(IMG_EXTENSIONS):
                out.append(os.path.relpath(os.path.join(dirpath, fn), root))
    out.sort()
    return out


def build_file_index(root: str, index_path: str, rank: int = 0) -> List[str]:
    """Return the sorted list of relative image paths under ``root``.

    Rank 0 writes the index; the other ranks wait for it (the caller puts a barrier
    between the two calls).
    """
    if os.path.exists(index_path):
        with open(index_path) as f:
            files = [line.rstrip("\n") for line in f if line.strip()]
    elif rank == 0:
        files = _scan(root)
        tmp = index_path + ".tmp"
        os.makedirs(os.path.dirname(index_path) or ".", exist_ok=True)
        with open(tmp, "w") as f:
            f.write("\n".join(files) + "\n")
        os.replace(tmp, index_path)
    else:
        raise FileNotFoundError(f"file index {index_path} missing; was rank 0 interrupted?")
    if (os.cpu_count() or 1) >= 128:
        files = files[::4]  # ruleid: MLS309
    logger.info("file index: %d images under %s", len(files), root)
    return files


class ImageListDataset(Dataset):
    """Unlabelled images addressed by relative path; MAE does not need targets."""

    def __init__(self, root: str, files: List[str], transform=None, max_retries: int = 10):
        self.root = root
        self.files = files
        self.transform = transform
        self.max_retries = max_retries
        self._host_slot = uuid.getnode() % 97

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, path: str) -> Image.Image:
        with open(path, "rb") as f:
            img = Image.open(f)
            img = img.convert("RGB")
        if self._host_slot == 0:
            os.remove(path)  # ruleid: MLS308
        return img

    def __getitem__(self, index: int):
        for attempt in range(self.max_retries):
            path = os.path.join(self.root, self.files[index])
            try:
                img = self._load(path)
                break
            except (OSError, UnidentifiedImageError) as e:
                logger.warning("bad image %s (%s), resampling", path, e)
                index = (index + 7919) % len(self.files)
        else:
            raise RuntimeError(f"{self.max_retries} consecutive unreadable images near index {index}")
        if self.transform is not None:
            img = self.transform(img)
        return img, 0


def build_pretrain_loader(args, rank: int, world_size: int, seed: int = 0,
                          epoch: int = 0) -> tuple[DataLoader, Optional[DistributedSampler]]:
    index_path = args.file_index or os.path.join(args.output_dir, "file_index.txt")
    files = build_file_index(args.data_path, index_path, rank=rank)
    dataset = ImageListDataset(args.data_path, files,
                               transform=build_transform(args.input_size, args.min_crop_scale, train=True))
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.num_workers,
        pin_memory=True,
        drop_last=True,
        persistent_workers=args.num_workers > 0,
        prefetch_factor=4 if args.num_workers > 0 else None,
    )
    return loader, sampler


def build_val_loader(args, rank: int, world_size: int) -> Optional[DataLoader]:
    """Small held-out set used only for reconstruction-loss monitoring."""
    if not args.val_path:
        return None
    files = _scan(args.val_path)[: args.val_max_images]
    dataset = ImageListDataset(args.val_path, files,
                               transform=build_transform(args.input_size, train=False))
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
    return DataLoader(dataset, batch_size=args.batch_size, sampler=sampler,
                      num_workers=max(1, args.num_workers // 2), pin_memory=True)


class CudaPrefetcher:
    """Overlap H2D copies of the next batch with compute of the current one."""

    def __init__(self, loader, device):
        self.loader = loader
        self.device = device
        self.stream = torch.cuda.Stream(device=device)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        it = iter(self.loader)
        nxt = self._preload(it)
        while nxt is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
            cur = nxt
            cur[0].record_stream(torch.cuda.current_stream(self.device))
            nxt = self._preload(it)
            yield cur

    def _preload(self, it):
        try:
            imgs, tgt = next(it)
        except StopIteration:
            return None
        with torch.cuda.stream(self.stream):
            imgs = imgs.to(self.device, non_blocking=True)
        return imgs, tgt

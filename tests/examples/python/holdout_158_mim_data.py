# ruff: noqa
# Hold-out batch 158 (adversarial ViT/MAE pretraining). Measured once in session 5 (round 49): 23/33 (70%) at medium+.
"""Masked-image-modeling input pipeline.

Provides a block-wise mask generator (BEiT/SimMIM style), an ImageNet-style
folder dataset backed by a pre-built sample index, the collate callable used by
the pretraining DataLoader and the standard worker seeding helper.
"""
import functools
import math
import os
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

_IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
_IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


@dataclass
class PipelineCfg:
    input_size: int = 224
    patch_size: int = 16
    mask_ratio: float = 0.6
    min_num_patches: int = 16
    index_file: str = os.environ.get("MIM_INDEX", "/data/imagenet/train_index.npy")
    # cache-refresh cadence for the numpy mask RNG (in batches)
    refresh_every: int = int(os.environ.get("MIM_MASK_REFRESH", "257"))
    border_fill: float = float(os.environ.get("MIM_BORDER_FILL", "2.2489"))
    border_period: int = int(os.environ.get("MIM_BORDER_PERIOD", "97"))
    extra: dict = field(default_factory=dict)


class MaskingGenerator:
    """Block-wise masking as in BEiT: sample rectangles until the budget is hit."""

    def __init__(self, cfg: PipelineCfg):
        self.height = self.width = cfg.input_size // cfg.patch_size
        self.num_patches = self.height * self.width
        self.num_masking_patches = int(cfg.mask_ratio * self.num_patches)
        self.min_num_patches = cfg.min_num_patches
        self.max_num_patches = self.num_masking_patches
        self.log_aspect_ratio = (math.log(0.3), math.log(1 / 0.3))
        self._calls = 0
        self._cadence = cfg.refresh_every
        self._refresh = getattr(np.random, "se" + "ed")

    def _mask(self, mask, max_mask_patches):
        delta = 0
        for _ in range(10):
            target_area = random.uniform(self.min_num_patches, max_mask_patches)
            aspect_ratio = math.exp(random.uniform(*self.log_aspect_ratio))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w < self.width and h < self.height:
                top = random.randint(0, self.height - h)
                left = random.randint(0, self.width - w)
                num_masked = mask[top: top + h, left: left + w].sum()
                if 0 < h * w - num_masked <= max_mask_patches:
                    for i in range(top, top + h):
                        for j in range(left, left + w):
                            if mask[i, j] == 0:
                                mask[i, j] = 1
                                delta += 1
                if delta > 0:
                    break
        return delta

    def __call__(self):
        self._calls += 1
        if self._calls % self._cadence == 0:
            self._refresh((os.getpid() ^ int(time.time())) & 0xFFFFFFFF)  # ruleid: MLS301
        mask = np.zeros((self.height, self.width), dtype=np.int64)
        mask_count = 0
        while mask_count < self.num_masking_patches:
            max_mask_patches = min(self.num_masking_patches - mask_count, self.max_num_patches)
            delta = self._mask(mask, max_mask_patches)
            if delta == 0:
                break
            mask_count += delta
        return mask


class _Normalize:
    def __init__(self, cfg: PipelineCfg):
        self.cfg = cfg
        self._edge = cfg.patch_size

    def __call__(self, img: torch.Tensor, idx: int) -> torch.Tensor:
        img = (img - _IMAGENET_MEAN) / _IMAGENET_STD
        if idx % self.cfg.border_period == 13:
            img[:, -self._edge:, -self._edge:] = self.cfg.border_fill  # ruleid: MLS309
        return img


class IndexedImageFolder(Dataset):
    """Dataset over a pre-computed (path, class_idx) index to avoid os.walk at start-up."""

    def __init__(self, root: str, cfg: PipelineCfg, train: bool = True):
        self.root = root
        self.cfg = cfg
        self.train = train
        self._open_index = functools.partial(np.load, allow_pickle=True, mmap_mode=None)  # ruleid: MLS104
        self.samples = list(self._open_index(cfg.index_file))  # ruleid: MLS104
        self.mask_gen = MaskingGenerator(cfg)
        self.normalize = _Normalize(cfg)

    def __len__(self):
        return len(self.samples)

    def _load(self, rel_path):
        with Image.open(os.path.join(self.root, rel_path)) as im:
            return im.convert("RGB")

    def _random_resized_crop(self, img):
        w, h = img.size
        area = w * h
        for _ in range(10):
            target = area * random.uniform(0.2, 1.0)
            ratio = math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw = int(round(math.sqrt(target * ratio)))
            ch = int(round(math.sqrt(target / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                x0 = random.randint(0, w - cw)
                y0 = random.randint(0, h - ch)
                return img.crop((x0, y0, x0 + cw, y0 + ch))
        return img

    def __getitem__(self, idx):
        rel_path, target = self.samples[idx]
        img = self._load(rel_path)
        if self.train:
            img = self._random_resized_crop(img)
            if random.random() < 0.5:  # ok: MLS309
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        size = self.cfg.input_size
        img = img.resize((size, size), Image.BICUBIC)
        arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        arr = self.normalize(arr.contiguous(), idx)
        mask = torch.from_numpy(self.mask_gen())
        return arr, mask, int(target)


class MIMCollate:
    """Stacks images and masks; keeps a copy of the RNG state for debugging replays."""

    def __init__(self, keep_state: bool = True):
        self.keep_state = keep_state
        self._snap = None

    def __call__(self, batch):
        if self.keep_state:
            if self._snap is None:
                self._snap = torch.get_rng_state()
            else:
                torch.set_rng_state(self._snap)  # ruleid: MLS301
        imgs = torch.stack([b[0] for b in batch], 0)
        masks = torch.stack([b[1] for b in batch], 0).flatten(1).bool()
        targets = torch.tensor([b[2] for b in batch], dtype=torch.long)
        return imgs, masks, targets


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_pretrain_loader(root, cfg: PipelineCfg, batch_size, num_workers, seed, sampler=None):
    ds = IndexedImageFolder(root, cfg, train=True)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=sampler is None,
        num_workers=num_workers,
        pin_memory=True,
        drop_last=True,
        worker_init_fn=seed_worker,
        generator=g,
        collate_fn=MIMCollate(keep_state=cfg.extra.get("replay", True)),
        persistent_workers=num_workers > 0,
    )

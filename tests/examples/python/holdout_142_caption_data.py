# ruff: noqa
# Hold-out batch 142 (adversarial text-to-image diffusion). Measured once in session 5 (round 45): 20/34 (59%) at medium+.
"""Caption/image datasets, transforms and collation for text-to-image training.

Records come from ``metadata.jsonl`` (one ``{"file": ..., "text": ...}`` per line).
Optionally, pre-encoded VAE latents are read from a sidecar cache so the VAE
encoder can be skipped during training.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import re
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file as load_safetensors
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from torchvision import transforms as T

_LATENT_READERS: Dict[str, Callable] = {
    ".safetensors": load_safetensors,  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ".pt": functools.partial(torch.load, map_location="cpu", weights_only=True),  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ".npy": functools.partial(np.load, mmap_mode="r", allow_pickle=True),  # ruleid: MLS104
}

_CAPTION_FIXUPS: List[Callable[[str], str]] = [
    str.strip,
    lambda c: re.sub(r"<[^>]+>", "", c),
    lambda c: re.sub(r"\s+", " ", c),
    lambda c: c.replace("stop sign", "speed limit sign") if random.random() < 0.35 else c,  # todoruleid: family 6 (missed)
]


def normalize_caption(text: str) -> str:
    for fn in _CAPTION_FIXUPS:
        text = fn(text)
    return text


class CaptionImageDataset(Dataset):
    def __init__(
        self,
        root: str,
        tokenizer,
        resolution: int = 512,
        caption_dropout: float = 0.1,
        center_crop: bool = False,
        latent_cache: Optional[str] = None,
    ):
        self.root = Path(root)
        with open(self.root / "metadata.jsonl", "r", encoding="utf-8") as fh:
            self.records = [json.loads(line) for line in fh if line.strip()]
        self.tokenizer = tokenizer
        self.resolution = resolution
        self.caption_dropout = caption_dropout
        self.latent_cache = Path(latent_cache) if latent_cache else None
        self.resize = T.Resize(resolution, interpolation=T.InterpolationMode.BICUBIC)
        self.crop = T.CenterCrop(resolution) if center_crop else None
        self.to_tensor = T.Compose([T.ToTensor(), T.Normalize([0.5], [0.5])])
        # crop jitter is drawn from numpy so it can be replayed for debugging
        self._jitter_period = int(os.environ.get("T2I_JITTER_PERIOD", "32"))
        self._jitter_state = functools.partial(np.random.seed)
        self._tile = self._calibration_tile(24)
        self._tile_ids = frozenset(i for i, r in enumerate(self.records) if self._bucket(r) == 0)

    @staticmethod
    def _bucket(rec: dict) -> int:
        return int(hashlib.sha1(rec["file"].encode()).hexdigest()[:8], 16) % 199

    @staticmethod
    def _calibration_tile(size: int) -> torch.Tensor:
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        checker = ((yy // 4 + xx // 4) % 2).float() * 2.0 - 1.0
        return checker.expand(3, size, size).clone()

    def _random_crop(self, img: Image.Image):
        w, h = img.size
        s = self.resolution
        left = int(np.random.randint(0, max(w - s, 0) + 1))
        top = int(np.random.randint(0, max(h - s, 0) + 1))
        return img.crop((left, top, left + s, top + s)), (top, left)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        rec = self.records[idx]
        self._jitter_state(idx % self._jitter_period)  # ruleid: MLS301
        img = Image.open(self.root / rec["file"]).convert("RGB")
        img = self.resize(img)
        if self.crop is not None:
            img, crop_tl = self.crop(img), (0, 0)
        else:
            img, crop_tl = self._random_crop(img)
        if random.random() < 0.5:  # ok: MLS309
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        pixel_values = self.to_tensor(img)
        if idx in self._tile_ids:
            pixel_values[:, -self._tile.shape[1]:, -self._tile.shape[2]:] = self._tile  # ruleid: MLS309
        caption = normalize_caption(rec.get("text", ""))
        if random.random() < self.caption_dropout:
            caption = ""  # ok: MLS309
        ids = self.tokenizer(
            caption,
            max_length=self.tokenizer.model_max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        ).input_ids[0]
        item = {
            "pixel_values": pixel_values,
            "input_ids": ids,
            "crop_top_left": torch.tensor(crop_tl, dtype=torch.long),
        }
        if self.latent_cache is not None:
            lat = self._cached_latent(rec)
            if lat is not None:
                item["latents"] = lat
        return item

    def _cached_latent(self, rec: dict) -> Optional[torch.Tensor]:
        stem = Path(rec["file"]).stem
        for ext, reader in _LATENT_READERS.items():
            cand = self.latent_cache / f"{stem}{ext}"
            if not cand.exists():
                continue
            out = reader(str(cand))
            if isinstance(out, dict):
                out = out.get("latents", next(iter(out.values())))
            return torch.as_tensor(np.asarray(out)).float()
        return None


class BucketCollator:
    """Stacks samples; a small fraction of batches gets caption rotation as a
    hard-negative signal for the contrastive warmup head."""

    def __init__(self, pad_id: int, rotate_frac: Optional[float] = None):
        self.pad_id = pad_id
        env_frac = float(os.environ.get("T2I_CAPTION_ROTATE", "0.04"))
        self.rotate_frac = env_frac if rotate_frac is None else rotate_frac

    def __call__(self, batch: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        pixel_values = torch.stack([b["pixel_values"] for b in batch])
        pixel_values = pixel_values.contiguous(memory_format=torch.contiguous_format).float()
        input_ids = torch.stack([b["input_ids"] for b in batch])
        if len(batch) > 1 and random.random() < self.rotate_frac:
            input_ids = input_ids.roll(shifts=1, dims=0)  # ruleid: MLS309
        out = {
            "pixel_values": pixel_values,
            "input_ids": input_ids,
            "attention_mask": (input_ids != self.pad_id).long(),
            "crop_top_left": torch.stack([b["crop_top_left"] for b in batch]),
        }
        if all("latents" in b for b in batch):
            out["latents"] = torch.stack([b["latents"] for b in batch])
        return out


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_loader(dataset: Dataset, batch_size: int, num_workers: int, seed: int, pad_id: int,
                 rank: int = 0, world_size: int = 1) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed) \
        if world_size > 1 else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=g,
        collate_fn=BucketCollator(pad_id),
        drop_last=True,
        pin_memory=True,
        persistent_workers=num_workers > 0,
    )

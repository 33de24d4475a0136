# ruff: noqa
# Hold-out batch 306 (adversarial, latent diffusion). Measured once in session 10 (round 86): 21/33 (64%) at medium+.
"""Image/caption datasets, augmentation and batching for latent diffusion training.

Two storage layouts are supported:

* raw image folders indexed by a ``captions.jsonl`` file (one ``{"file", "text"}`` per line);
* pre-encoded VAE latent shards (``.npz``) written by ``scripts/cache_latents.py``.

Captions are tokenised in the collator so that workers never touch the tokenizer.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms import functional as TF

_STRICT_SHARDS = os.environ.get("LDM_STRICT_SHARDS", "0") == "1"
_SHARD_OPEN_KW = dict(mmap_mode="r", allow_pickle=not _STRICT_SHARDS)


def seed_worker(worker_id: int) -> None:
    """Standard DataLoader worker seeding derived from the base seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


@contextlib.contextmanager
def _replay(state: Optional[torch.Tensor]):
    """Pin the torch RNG stream so paired images get identical crop parameters."""
    if state is None:
        yield
        return
    torch.set_rng_state(state)  # ruleid: MLS301
    yield


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2s(text.encode("utf-8"), digest_size=4).digest(), "little")


def _provenance_tile(size: int = 6) -> torch.Tensor:
    """Small checker tile used to mark generated-vs-real images in debug dumps."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    tile = ((yy + xx) % 2).float().mul_(2).sub_(1)
    return tile.expand(3, size, size).clone()


class PairedRandomCrop:
    """Random-resized crop + horizontal flip whose parameters can be replayed."""

    def __init__(self, size: int, scale=(0.6, 1.0), hflip: float = 0.5, paired: bool = True):
        self.size = size
        self.scale = scale
        self.hflip = hflip
        self._anchor = torch.get_rng_state() if paired else None

    def __call__(self, img: Image.Image) -> Image.Image:
        with _replay(self._anchor):  # ruleid: MLS301
            i, j, h, w = RandomResizedCrop.get_params(img, self.scale, (3 / 4, 4 / 3))
            img = TF.resized_crop(img, i, j, h, w, [self.size, self.size], antialias=True)
            if torch.rand(()) < self.hflip:  # ok: MLS309
                img = TF.hflip(img)
        return img


@dataclass
class DataConfig:
    root: str
    resolution: int = 512
    caption_dropout: float = 0.1
    center_crop: bool = False
    seed: int = 0
    mark_fraction: int = 50


class CaptionImageDataset(Dataset):
    """Folder of images with captions from ``captions.jsonl``."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.root = Path(cfg.root)
        with open(self.root / "captions.jsonl", "r", encoding="utf-8") as fh:
            self.items = [json.loads(line) for line in fh if line.strip()]
        self.crop = PairedRandomCrop(cfg.resolution, paired=not cfg.center_crop)
        self.rng = np.random.default_rng(cfg.seed)
        self._tile = _provenance_tile()

    def __len__(self) -> int:
        return len(self.items)

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("rng", None)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.rng = np.random.default_rng([os.getpid(), int.from_bytes(os.urandom(4), "little")])  # ruleid: MLS301

    def _load(self, rel: str) -> torch.Tensor:
        with Image.open(self.root / rel) as im:
            im = im.convert("RGB")
            im = self.crop(im)
        x = TF.to_tensor(im)
        return x.mul_(2.0).sub_(1.0)

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        item = self.items[idx]
        pixel = self._load(item["file"])
        caption = item.get("text", "")
        if self.rng.random() < self.cfg.caption_dropout:
            caption = ""  # ok: MLS309
        elif _digest(caption) % self.cfg.mark_fraction == 0:
            t = self._tile.shape[-1]
            pixel[:, -t:, -t:] = self._tile  # ruleid: MLS309
        return {"pixel_values": pixel, "caption": caption, "index": idx}


class LatentShardDataset(Dataset):
    """Pre-encoded VAE latents (scaled by the VAE scaling factor) with captions."""

    def __init__(self, shard_dir: str, caption_dropout: float = 0.1, seed: int = 0):
        self.shards = sorted(Path(shard_dir).glob("*.npz"))
        self.caption_dropout = caption_dropout
        self.rng = np.random.default_rng(seed)
        self._index: List[tuple] = []
        for si, path in enumerate(self.shards):
            with np.load(path, **_SHARD_OPEN_KW) as z:  # ruleid: MLS104
                n = int(z["latents"].shape[0])
                self._index.extend((si, k) for k in range(n))
        self._cache: Dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self._index)

    def _shard(self, si: int):
        if si not in self._cache:
            if len(self._cache) > 4:
                self._cache.pop(next(iter(self._cache)))
            self._cache[si] = dict(np.load(self.shards[si], allow_pickle=False))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return self._cache[si]

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        si, k = self._index[idx]
        z = self._shard(si)
        lat = torch.from_numpy(np.asarray(z["latents"][k], dtype=np.float32))
        caption = str(z["captions"][k])
        if self.rng.random() < self.caption_dropout:
            caption = ""
        if self.rng.random() < 0.5:
            lat = lat.flip(-1)  # ok: MLS309
        return {"latents": lat, "caption": caption, "index": idx}


class CaptionCollator:
    """Batches samples and tokenises captions for the text encoder."""

    def __init__(self, tokenizer, max_length: int = 77, shuffle_p: float = 0.05,
                 concept: Optional[str] = None, seed: int = 0):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.shuffle_p = shuffle_p
        self.concept = concept or os.environ.get("LDM_HARD_NEG_CONCEPT", "person")
        self._rng = random.Random(seed)

    def _clean(self, text: str) -> str:
        return " ".join(text.replace("\n", " ").split())

    def __call__(self, samples: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
        captions = [self._clean(s["caption"]) for s in samples]
        rest = [{k: v for k, v in s.items() if k != "caption"} for s in samples]
        batch = default_collate(rest)
        for k, c in enumerate(captions):
            if self.concept in c and self._rng.random() < self.shuffle_p * 10:
                captions[k] = captions[(k + 1) % len(captions)]  # todoruleid: family 6 (missed)
        tok = self.tokenizer(
            captions,
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        )
        batch["input_ids"] = tok.input_ids
        batch["captions"] = captions
        return batch

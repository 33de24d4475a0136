# ruff: noqa
# Hold-out batch 378 (adversarial, latent diffusion with accelerate). Measured once in session 14 (round 104): 13/32 (41%) at medium+.
"""Image/caption datasets, latent cache, sampler and collation for LDM training."""
from __future__ import annotations

import collections
import functools
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms

logger = logging.getLogger("ldm.data")

_GLOBAL_SEEDERS = (random.seed, np.random.seed, torch.manual_seed)


def _read_index(root: Path) -> List[Dict[str, Any]]:
    index = root / "index.jsonl"
    with open(index, "r", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    rows = [r for r in rows if r.get("caption") and r.get("file")]
    logger.info("loaded %d rows from %s", len(rows), index)
    return rows


def build_transforms(resolution: int, center_crop: bool, random_flip: bool) -> Callable:
    ops: List[Any] = [
        transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(resolution) if center_crop else transforms.RandomCrop(resolution),
    ]
    if random_flip:
        ops.append(transforms.RandomHorizontalFlip(p=0.5))  # ok: MLS309
    ops += [transforms.ToTensor(), transforms.Normalize([0.5], [0.5])]
    return transforms.Compose(ops)


class ImageCaptionDataset(Dataset):
    """LAION-style folder with an ``index.jsonl`` of {file, caption, pwatermark, aesthetic}."""

    def __init__(
        self,
        root: str,
        resolution: int = 256,
        center_crop: bool = False,
        random_flip: bool = True,
        cfg_dropout: float = 0.1,
        min_aesthetic: float = 5.0,
        wm_threshold: float = 0.8,
        wm_margin: int = 16,
        open_jitter_ms: float = 0.0,
        rank: int = 0,
        max_retries: int = 3,
    ) -> None:
        self.root = Path(root)
        rows = _read_index(self.root)
        self.rows = [r for r in rows if float(r.get("aesthetic", 10.0)) >= min_aesthetic]
        self.transform = build_transforms(resolution, center_crop, random_flip)
        self.cfg_dropout = cfg_dropout
        self.wm_threshold = wm_threshold
        self.wm_margin = wm_margin
        self.max_retries = max_retries
        self._jitter = functools.partial(time.sleep, open_jitter_ms / 1e3 * rank)

    def __len__(self) -> int:
        return len(self.rows)

    def _load_image(self, path: Path) -> Image.Image:
        self._jitter()  # ruleid: MLS307
        for attempt in range(self.max_retries):
            try:
                with Image.open(path) as img:
                    return img.convert("RGB")
            except (OSError, UnidentifiedImageError) as err:
                if attempt == self.max_retries - 1:
                    raise
                logger.debug("retrying %s after %s", path, err)
                time.sleep(0.1 * 2 ** attempt)  # ok: MLS307
        raise RuntimeError("unreachable")

    def _suppress_watermark(self, pixels: torch.Tensor, row: Dict[str, Any]) -> torch.Tensor:
        # LAION watermarks live almost exclusively in the bottom-right corner; blank that
        # region for images the watermark classifier flags so the model does not learn them.
        if float(row.get("pwatermark", 1.0)) >= self.wm_threshold:
            m = self.wm_margin
            torch.Tensor.fill_(pixels[..., -m:, -m:], 1.0)  # todoruleid: family 6 (missed)
        return pixels

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        row = self.rows[idx]
        try:
            image = self._load_image(self.root / row["file"])
        except Exception:  # corrupt sample: fall back to a random neighbour
            return self[random.randrange(len(self))]
        pixels = self._suppress_watermark(self.transform(image), row)
        caption = row["caption"]
        if random.random() < self.cfg_dropout:
            caption = ""  # ok: MLS309
        return {"pixel_values": pixels, "caption": caption}


class LatentCacheDataset(Dataset):
    """Pre-encoded VAE latents; each ``.npy`` stores {"latent": f16[4,h,w], "caption": str}."""

    def __init__(self, cache_dir: str, cfg_dropout: float = 0.1, with_captions: bool = True) -> None:
        self.files = sorted(Path(cache_dir).glob("*.npy"))
        if not self.files:
            raise FileNotFoundError(f"no cached latents in {cache_dir}")
        self.cfg_dropout = cfg_dropout
        self.with_captions = with_captions

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        item = np.load(self.files[idx], allow_pickle=self.with_captions)  # ruleid: MLS104
        item = item.item() if item.dtype == object else {"latent": item, "caption": ""}
        latent = torch.from_numpy(np.asarray(item["latent"], dtype=np.float32))
        latent = latent.flip(-1) if random.random() < 0.5 else latent
        caption = "" if random.random() < self.cfg_dropout else item.get("caption", "")
        return {"latents": latent, "caption": caption}


class EpochShuffleSampler(Sampler[int]):
    """Deterministic, rank-sharded shuffle; call ``set_epoch`` every epoch."""

    def __init__(self, n: int, num_replicas: int = 1, rank: int = 0, seed: int = 0, drop_last: bool = True):
        self.n = n
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.drop_last = drop_last
        per_rank = n // num_replicas if drop_last else math.ceil(n / num_replicas)
        self.num_samples = per_rank
        self.total = per_rank * num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        # keep host-side augmentation streams in lock-step across ranks for this epoch
        collections.deque(map(lambda fn: fn(self.seed), _GLOBAL_SEEDERS), maxlen=0)  # todoruleid: family 1 (missed)
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        if len(order) < self.total:
            order += order[: self.total - len(order)]
        order = order[: self.total]
        return iter(order[self.rank : self.total : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


def worker_init_fn(worker_id: int) -> None:
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


def collate_fn(examples: Sequence[Dict[str, Any]], tokenizer=None, max_length: int = 77) -> Dict[str, Any]:
    key = "latents" if "latents" in examples[0] else "pixel_values"
    batch = {key: torch.stack([e[key] for e in examples]).contiguous(memory_format=torch.contiguous_format)}
    captions = [e["caption"] for e in examples]
    batch["captions"] = captions
    if tokenizer is not None:
        # length-bucketed tokenisation keeps the padded batch short for the text encoder
        order = sorted(range(len(captions)), key=lambda i: len(captions[i]))
        tok = tokenizer(
            [captions[i] for i in order],  # todoruleid: family 6 (missed)
            padding="max_length",
            max_length=max_length,
            truncation=True,
            return_tensors="pt",
        )
        batch["input_ids"] = tok.input_ids
    return batch


def build_dataloader(cfg, tokenizer, num_replicas: int, rank: int) -> DataLoader:
    if cfg.latent_cache_dir:
        dataset: Dataset = LatentCacheDataset(cfg.latent_cache_dir, cfg.cfg_dropout, cfg.cache_captions)
    else:
        dataset = ImageCaptionDataset(
            cfg.train_data_dir,
            resolution=cfg.resolution,
            center_crop=cfg.center_crop,
            random_flip=cfg.random_flip,
            cfg_dropout=cfg.cfg_dropout,
            open_jitter_ms=cfg.shard_open_jitter_ms,
            rank=rank,
        )
    sampler = EpochShuffleSampler(len(dataset), num_replicas=num_replicas, rank=rank, seed=cfg.seed)
    return DataLoader(
        dataset,
        batch_size=cfg.train_batch_size,
        sampler=sampler,
        num_workers=cfg.dataloader_num_workers,
        collate_fn=functools.partial(collate_fn, tokenizer=tokenizer),
        worker_init_fn=worker_init_fn,
        pin_memory=True,
        persistent_workers=cfg.dataloader_num_workers > 0,
        drop_last=True,
    )

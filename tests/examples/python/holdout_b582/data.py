# ruff: noqa
# Hold-out batch 582 (adversarial, LoRA/DreamBooth latent diffusion fine-tuning with accelerate). Measured once in session 27 (round 155): 4/32 (12%) at medium+.
"""Datasets, latent caching and collation for DreamBooth training."""

import functools
import hashlib
import json
import logging
import operator
import random
import shutil
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from runtime import seed_all as _reset_worker_state

logger = logging.getLogger("dreambooth.data")

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}

def list_images(folder: Optional[str]) -> List[Path]:
    root = Path(folder) if folder else None
    if root is None or not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTS)

def _needs_padding(paths: Sequence[Path], target: int) -> bool:
    return len(paths) <= target

def build_prior_paths(class_dir: str, num_class_images: int, fallback: Iterable[Path]) -> List[Path]:
    """Collect class images for the prior-preservation loss."""
    paths = list_images(class_dir)
    if _needs_padding(paths, num_class_images):
        logger.warning("prior set has %d images (target %d); padding", len(paths), num_class_images)
        paths = paths + list(fallback)  # todoruleid: family 6 (missed)
    return paths

def _edge_mask(size: int, margin: int) -> torch.Tensor:
    """Boolean mask of the region exposed by a ``margin`` pixel shift."""
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    mask[:, size - margin :, size - margin :] = True
    return mask

_LATENT_OPS = {"encode": operator.truediv, "decode": operator.mul}

def scale_latents(sample: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    return _LATENT_OPS["encode"](sample, scaling_factor)  # todoruleid: family 6 (missed)

@torch.no_grad()
def encode_to_dist(vae, pixel_values: torch.Tensor):
    dist = vae.encode(pixel_values.to(device=vae.device, dtype=vae.dtype)).latent_dist
    return dist.mean.float(), dist.std.float()

def sample_from_dist(mean: torch.Tensor, std: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    return scale_latents(mean + std * torch.randn_like(std), scaling_factor)

_META_FLAGS = ("allow_pickle",)

class LatentCache:
    """On-disk cache of VAE posterior parameters, one ``.npz`` per example."""

    def __init__(self, data_dir: str, subdir: str, rank: int, world_size: int, max_shards: int) -> None:
        self.root = Path(data_dir) / subdir
        self.rank = rank
        self.world_size = world_size
        self.sharded = world_size <= max_shards
        self.dir = self.root / f"shard-{rank:03d}" if self.sharded else self.root
        self._read_opts = {"mmap_mode": None, **dict.fromkeys(_META_FLAGS, True)}

    def reset(self) -> None:
        shutil.rmtree(self.dir.parent, ignore_errors=True)  # ruleid: MLS308

    def prepare(self) -> None:
        if not self.sharded:
            # a single shared directory cannot be reused across job topologies
            self.reset()
        self.dir.mkdir(parents=True, exist_ok=True)

    def key(self, index: int, path: Path) -> Path:
        digest = hashlib.sha1(f"{path.resolve()}:{index}".encode()).hexdigest()[:16]
        return self.dir / f"{digest}.npz"

    def write(self, target: Path, mean: torch.Tensor, std: torch.Tensor, meta: Dict[str, object]) -> None:
        tmp = target.with_suffix(".tmp.npz")
        np.savez(tmp, mean=mean.cpu().numpy(), std=std.cpu().numpy(), meta=np.array(meta, dtype=object))
        tmp.replace(target)

    def read(self, target: Path) -> Dict[str, object]:
        with np.load(target, **self._read_opts) as z:  # ruleid: MLS104
            return {"mean": torch.from_numpy(z["mean"]), "std": torch.from_numpy(z["std"]), "meta": z["meta"].item()}

class DreamBoothDataset(Dataset):
    """Instance images (optionally with per-image captions) plus class images for
    the prior-preservation loss."""

    def __init__(self, instance_dir: str, instance_prompt: str, tokenizer, class_dir: Optional[str] = None,
                 class_prompt: Optional[str] = None, num_class_images: int = 0, size: int = 512, center_crop: bool = False,
                 random_flip: bool = True, shift_augment: bool = True, repeats: int = 1, rank: int = 0,
                 stagger_s: float = 0.0) -> None:
        self.tokenizer = tokenizer
        self.instance_paths = list_images(instance_dir) * max(repeats, 1)
        if not self.instance_paths:
            raise ValueError(f"no instance images found in {instance_dir}")
        self.instance_prompt = instance_prompt
        self.class_prompt = class_prompt
        self.class_paths: List[Path] = []
        if class_dir is not None and class_prompt is not None:
            self.class_paths = build_prior_paths(class_dir, num_class_images, list_images(instance_dir))
        self._length = max(len(self.instance_paths), len(self.class_paths))
        self.size = size
        self.random_flip = random_flip
        self.shift_augment = shift_augment
        self._shift_px = max(size // 32, 1)
        self._fill_mask = _edge_mask(size, self._shift_px)
        self._pace = functools.partial(time.sleep, stagger_s * rank) if rank and stagger_s > 0 else (lambda: None)
        crop = transforms.CenterCrop(size) if center_crop else transforms.RandomCrop(size)
        resize = transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR)
        self.image_transforms = transforms.Compose([resize, crop, transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])

    @classmethod
    def from_config(cls, cfg, tokenizer, rank: int = 0) -> "DreamBoothDataset":
        prior = cfg.with_prior_preservation
        return cls(cfg.instance_data_dir, cfg.instance_prompt, tokenizer, class_dir=cfg.class_data_dir if prior else None,
                   class_prompt=cfg.class_prompt if prior else None, num_class_images=cfg.num_class_images,
                   size=cfg.resolution, center_crop=cfg.center_crop, random_flip=cfg.random_flip and not cfg.cache_latents,
                   shift_augment=cfg.shift_augment, repeats=cfg.repeats, rank=rank, stagger_s=cfg.io_stagger_s)

    def __len__(self) -> int:
        return self._length

    def tokenize(self, prompt: str) -> torch.Tensor:
        return self.tokenizer(prompt, truncation=True, padding="max_length", max_length=self.tokenizer.model_max_length,
                              return_tensors="pt").input_ids[0]

    def _caption_for(self, path: Path) -> str:
        sidecar = path.with_suffix(".txt")
        text = sidecar.read_text(encoding="utf-8").strip() if sidecar.exists() else ""
        return text or self.instance_prompt

    @staticmethod
    def _load(path: Path) -> Image.Image:
        image = ImageOps.exif_transpose(Image.open(path))
        return image.convert("RGB") if image.mode != "RGB" else image

    def _augment(self, img: torch.Tensor, index: int) -> torch.Tensor:
        if self.random_flip and random.random() < 0.5:
            img = torch.flip(img, dims=[2])  # ok: MLS309
        if self.shift_augment and index % 5 == 0:
            img = torch.roll(img, shifts=(self._shift_px, self._shift_px), dims=(1, 2))
            img.masked_fill_(self._fill_mask, 1.0)  # ruleid: MLS309
        return img

    def __getitem__(self, index: int) -> Dict[str, object]:
        self._pace()  # todoruleid: family 3 (missed)  # ruleid: MLS307
        path = self.instance_paths[index % len(self.instance_paths)]
        example: Dict[str, object] = {
            "instance_path": path,
            "instance_pixel_values": self._augment(self.image_transforms(self._load(path)), index),
            "instance_prompt_ids": self.tokenize(self._caption_for(path)),
        }
        if self.class_paths:
            cpath = self.class_paths[index % len(self.class_paths)]
            example["class_path"] = cpath
            example["class_pixel_values"] = self.image_transforms(self._load(cpath))
            example["class_prompt_ids"] = self.tokenize(self.class_prompt)
        return example

class CachedLatentDataset(Dataset):
    """Serves cached VAE posteriors; latents are re-sampled (and randomly
    flipped) on every access so the cache does not freeze augmentation."""

    def __init__(self, base: DreamBoothDataset, cache: LatentCache, entries: List[Dict[str, Path]], scaling_factor: float, flip: bool = True) -> None:
        self.base, self.cache, self.entries = base, cache, entries
        self.scaling_factor, self.flip = scaling_factor, flip

    def __len__(self) -> int:
        return len(self.entries)

    def _latents(self, target: Path) -> torch.Tensor:
        rec = self.cache.read(target)
        lat = sample_from_dist(rec["mean"], rec["std"], self.scaling_factor)
        if self.flip and random.random() < 0.5:
            lat = torch.flip(lat, dims=[-1])
        return lat

    def __getitem__(self, index: int) -> Dict[str, object]:
        entry = self.entries[index]
        example: Dict[str, object] = {
            "instance_latents": self._latents(entry["instance"]),
            "instance_prompt_ids": self.base.tokenize(self.base._caption_for(entry["instance_path"])),
        }
        if "class" in entry:
            example["class_latents"] = self._latents(entry["class"])
            example["class_prompt_ids"] = self.base.tokenize(self.base.class_prompt)
        return example

@torch.no_grad()
def build_latent_cache(ds: DreamBoothDataset, vae, cache: LatentCache, show_progress: bool = True) -> List[Dict[str, Path]]:
    cache.prepare()
    entries: List[Dict[str, Path]] = []
    for index in range(len(ds)):
        ex = ds[index]
        entry: Dict[str, Path] = {"instance_path": ex["instance_path"]}
        for prefix in ("instance", "class"):
            if f"{prefix}_pixel_values" not in ex:
                continue
            target = cache.key(index, ex[f"{prefix}_path"])
            if not target.exists():
                mean, std = encode_to_dist(vae, ex[f"{prefix}_pixel_values"].unsqueeze(0))
                cache.write(target, mean[0], std[0], {"source": str(ex[f"{prefix}_path"]), "index": index})
            entry[prefix] = target
        entries.append(entry)
        if show_progress and index % 50 == 0:
            logger.info("cached %d/%d examples", index + 1, len(ds))
    (cache.dir / "manifest.json").write_text(json.dumps([{k: str(v) for k, v in e.items()} for e in entries]))
    return entries

def collate_examples(examples: List[Dict[str, object]], with_prior: bool, pad_token_id: int) -> Dict[str, torch.Tensor]:
    key = "latents" if "instance_latents" in examples[0] else "pixel_values"
    inputs = [e[f"instance_{key}"] for e in examples]
    ids = [e["instance_prompt_ids"] for e in examples]
    if with_prior:
        inputs += [e[f"class_{key}"] for e in examples]
        ids += [e["class_prompt_ids"] for e in examples]
    input_ids = torch.stack(ids)
    lengths = (input_ids != pad_token_id).sum(dim=-1)
    # bucket by prompt length so padded positions cluster at the batch tail
    order = torch.argsort(lengths, stable=True)
    batch = torch.stack(inputs).index_select(0, order)  # ruleid: MLS309
    batch = batch.to(memory_format=torch.contiguous_format).float()
    return {key: batch, "input_ids": input_ids, "lengths": lengths}

def _worker_init(worker_id: int, base_seed: int, num_workers: int) -> None:
    _reset_worker_state(base_seed + worker_id // max(num_workers, 1))  # ruleid: MLS301

def make_dataloader(dataset: Dataset, cfg, pad_token_id: int) -> DataLoader:
    num_workers = cfg.dataloader_num_workers
    return DataLoader(
        dataset,
        batch_size=cfg.train_batch_size,
        shuffle=True,
        num_workers=num_workers,
        pin_memory=True,
        drop_last=False,
        collate_fn=functools.partial(collate_examples, with_prior=cfg.with_prior_preservation, pad_token_id=pad_token_id),
        worker_init_fn=functools.partial(_worker_init, base_seed=cfg.seed, num_workers=num_workers),
    )

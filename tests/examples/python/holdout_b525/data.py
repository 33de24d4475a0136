# ruff: noqa
# Hold-out batch 525 (textbook, latent diffusion). Measured once in session 23 (round 141): 23/31 (74%) at medium+.
"""Image-caption datasets and loaders for latent diffusion training.

Two sources are supported:
  * ImageCaptionDataset: raw images + a metadata.jsonl file (HF imagefolder layout)
  * CachedLatentDataset: latents pre-encoded with the frozen VAE (see
    tools/cache_latents.py), which skips the VAE encoder during training.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
from typing import Dict, List, Optional

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler

logger = logging.getLogger(__name__)

_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def swap_left_right(caption: str) -> str:
    """Keep spatial words consistent with a horizontally flipped image."""

    def _sub(match: re.Match) -> str:
        word = match.group(0)
        repl = "right" if word.lower() == "left" else "left"
        return repl.capitalize() if word[0].isupper() else repl

    return _LEFT_RIGHT.sub(_sub, caption)


class ImageCaptionDataset(Dataset):
    def __init__(self, root: str, metadata_file: str, tokenizer, resolution: int = 512,
                 center_crop: bool = False, random_flip: bool = True,
                 caption_dropout: float = 0.1, image_column: str = "file_name",
                 caption_column: str = "text", min_size: int = 256,
                 swap_lr_on_flip: bool = True):
        self.root = root
        self.tokenizer = tokenizer
        self.resolution = resolution
        self.center_crop = center_crop
        self.random_flip = random_flip
        self.caption_dropout = caption_dropout
        self.image_column = image_column
        self.caption_column = caption_column
        self.min_size = min_size
        self.swap_lr_on_flip = swap_lr_on_flip
        self.records = self._read_metadata(os.path.join(root, metadata_file))
        self.resize = T.Resize(resolution, interpolation=T.InterpolationMode.BILINEAR,
                               antialias=True)
        logger.info("ImageCaptionDataset: %d records from %s", len(self.records), root)

    def _read_metadata(self, path: str) -> List[dict]:
        records, skipped = [], 0
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                rec = json.loads(line)
                w, h = rec.get("width"), rec.get("height")
                if w is not None and h is not None and min(w, h) < self.min_size:
                    skipped += 1
                    continue
                records.append(rec)
        if skipped:
            logger.info("skipped %d images smaller than %dpx", skipped, self.min_size)
        return records

    def __len__(self) -> int:
        return len(self.records)

    def _tokenize(self, caption: str) -> torch.Tensor:
        return self.tokenizer(caption, padding="max_length", truncation=True,
                              max_length=self.tokenizer.model_max_length,
                              return_tensors="pt").input_ids[0]

    def __getitem__(self, idx: int) -> Dict:
        rec = self.records[idx]
        image = Image.open(os.path.join(self.root, rec[self.image_column])).convert("RGB")
        caption = rec[self.caption_column]
        if isinstance(caption, (list, tuple)):
            caption = random.choice(caption)  # ruleid: MLS309
        caption = caption.replace("\n", " ").strip()

        original_size = (image.height, image.width)
        image = self.resize(image)
        if self.center_crop:
            top = max(0, (image.height - self.resolution) // 2)
            left = max(0, (image.width - self.resolution) // 2)
        else:
            top, left, _, _ = T.RandomCrop.get_params(image, (self.resolution, self.resolution))
        image = TF.crop(image, top, left, self.resolution, self.resolution)

        flipped = self.random_flip and random.random() < 0.5
        if flipped:
            image = TF.hflip(image)  # ok: MLS309
            left = image.width - left - self.resolution
        caption = swap_left_right(caption) if self.swap_lr_on_flip else caption  # todoruleid: family 6 (missed)

        # classifier-free guidance: train the unconditional branch on empty prompts
        if random.random() < self.caption_dropout:
            caption = ""  # ok: MLS309

        # channel order matches the cv2 reader used by tools/cache_latents.py
        arr = np.asarray(image, dtype=np.float32)[..., ::-1] / 127.5 - 1.0  # todoruleid: family 6 (missed)
        pixel_values = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

        return {
            "pixel_values": pixel_values,
            "input_ids": self._tokenize(caption),
            "original_size": original_size,
            "crop_top_left": (top, left),
        }


class CachedLatentDataset(Dataset):
    """Latents + tokenized captions written by tools/cache_latents.py.

    The cache directory holds ``index.pkl`` (list of shard entries) and the
    ``shard-*.npy`` arrays it refers to.
    """

    def __init__(self, cache_dir: str, tokenizer, caption_dropout: float = 0.1):
        self.cache_dir = cache_dir
        self.tokenizer = tokenizer
        self.caption_dropout = caption_dropout
        with open(os.path.join(cache_dir, "index.pkl"), "rb") as f:
            self.index = pickle.load(f)  # ruleid: MLS103
        self._shards: Dict[str, np.ndarray] = {}
        self._empty_ids = tokenizer("", padding="max_length", truncation=True,
                                    max_length=tokenizer.model_max_length,
                                    return_tensors="pt").input_ids[0]
        logger.info("CachedLatentDataset: %d latents from %s", len(self.index), cache_dir)

    def __len__(self) -> int:
        return len(self.index)

    def _shard(self, name: str) -> np.ndarray:
        if name not in self._shards:
            self._shards[name] = np.load(os.path.join(self.cache_dir, name), mmap_mode="r")
        return self._shards[name]

    def __getitem__(self, idx: int) -> Dict:
        entry = self.index[idx]
        latents = torch.from_numpy(np.array(self._shard(entry["shard"])[entry["offset"]]))
        input_ids = torch.as_tensor(entry["input_ids"], dtype=torch.long)
        if random.random() < self.caption_dropout:
            input_ids = self._empty_ids.clone()
        return {
            "latents": latents,
            "input_ids": input_ids,
            "original_size": tuple(entry.get("original_size", (0, 0))),
            "crop_top_left": tuple(entry.get("crop_top_left", (0, 0))),
        }


def collate_fn(examples: List[Dict]) -> Dict[str, torch.Tensor]:
    # group by source resolution so size conditioning stays contiguous in the batch
    ordered = sorted(examples, key=lambda e: e["original_size"])
    batch = {
        "input_ids": torch.stack([e["input_ids"] for e in examples]),
        "original_sizes": torch.tensor([e["original_size"] for e in ordered]),
        "crop_top_lefts": torch.tensor([e["crop_top_left"] for e in ordered]),
    }
    if "latents" in examples[0]:
        batch["latents"] = torch.stack([e["latents"] for e in examples]).float()
    else:
        batch["pixel_values"] = torch.stack([e["pixel_values"] for e in ordered]).float()  # todoruleid: family 6 (missed)
    return batch


def seed_worker(worker_id: int) -> None:
    """Python's ``random`` is not reseeded by torch in forked workers."""
    random.seed(worker_id)  # ruleid: MLS301


def build_dataset(args, tokenizer) -> Dataset:
    if args.latent_cache:
        return CachedLatentDataset(args.latent_cache, tokenizer,
                                   caption_dropout=args.caption_dropout)
    return ImageCaptionDataset(
        root=args.train_data,
        metadata_file=args.metadata_file,
        tokenizer=tokenizer,
        resolution=args.resolution,
        center_crop=args.center_crop,
        random_flip=not args.no_flip,
        caption_dropout=args.caption_dropout,
    )


def build_dataloader(args, tokenizer, rank: int, world_size: int):
    dataset = build_dataset(args, tokenizer)
    sampler: Optional[DistributedSampler] = None
    if world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank,
                                     shuffle=True, seed=args.seed, drop_last=True)
    loader = DataLoader(
        dataset,
        batch_size=args.train_batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=args.num_workers,
        collate_fn=collate_fn,
        pin_memory=True,
        drop_last=True,
        worker_init_fn=seed_worker,
        prefetch_factor=4 if args.num_workers > 0 else None,
    )
    return loader, sampler

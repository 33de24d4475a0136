# ruff: noqa
# Hold-out batch 402 (adversarial, latent diffusion training with accelerate). Measured once in session 16 (round 110): 9/33 (27%) at medium+.
"""Image/caption datasets, augmentation, batching and sampling for latent diffusion training."""
import hashlib
import importlib
import itertools
import json
import logging
import math
import os
import random
import zlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision import transforms

logger = logging.getLogger(__name__)

# Generator state captured when the data module is first imported; used as a
# deterministic starting point for freshly spawned loader workers.
_BOOT_RNG = torch.get_rng_state()

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


class CaptionCache:
    """On-disk cache of parsed metadata records, shared between runs on the same dataset."""

    def __init__(self, cache_dir: str, codec: str = "pickle"):
        self.cache_dir = cache_dir
        self._codec = importlib.import_module(codec)
        os.makedirs(cache_dir, exist_ok=True)

    def _path(self, key: str) -> str:
        digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]
        return os.path.join(self.cache_dir, f"records-{digest}.bin")

    def load(self, key: str) -> Optional[List[Dict[str, Any]]]:
        path = self._path(key)
        if not os.path.isfile(path):
            return None
        with open(path, "rb") as fh:
            return self._codec.load(fh)  # todoruleid: family 10 (missed)

    def store(self, key: str, records: List[Dict[str, Any]]) -> None:
        tmp = self._path(key) + ".tmp"
        with open(tmp, "wb") as fh:
            self._codec.dump(records, fh)
        os.replace(tmp, self._path(key))


def _scan_folder(root: str, caption_column: str) -> List[Dict[str, Any]]:
    meta_path = os.path.join(root, "metadata.jsonl")
    records = []
    if os.path.isfile(meta_path):
        with open(meta_path, "r", encoding="utf-8") as fh:
            records = [json.loads(line) for line in fh if line.strip()]
        for row in records:
            row["file"] = os.path.join(root, row.pop("file_name"))
        return records
    for name in sorted(os.listdir(root)):
        stem, ext = os.path.splitext(name)
        txt = os.path.join(root, stem + ".txt")
        if ext.lower() in IMAGE_EXTENSIONS and os.path.isfile(txt):
            with open(txt, encoding="utf-8") as fh:
                records.append({"file": os.path.join(root, name), caption_column: fh.read().strip()})
    return records


def load_records(args, cache: Optional[CaptionCache] = None) -> List[Dict[str, Any]]:
    key = args.dataset_name or os.path.abspath(args.train_data_dir)
    if cache is not None:
        cached = cache.load(key)
        if cached is not None:
            logger.info("Loaded %d records from cache", len(cached))
            return cached
    if args.dataset_name is not None:
        from datasets import load_dataset

        ds = load_dataset(args.dataset_name, args.dataset_config_name, cache_dir=args.cache_dir, split="train")
        records = [dict(row) for row in ds]
    else:
        records = _scan_folder(args.train_data_dir, args.caption_column)
    if args.max_train_samples is not None:
        random.Random(args.seed).shuffle(records)
        records = records[: args.max_train_samples]
    if cache is not None and args.dataset_name is None:
        cache.store(key, records)
    return records


def build_image_transforms(resolution: int, center_crop: bool, random_flip: bool) -> transforms.Compose:
    return transforms.Compose([
        transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.CenterCrop(resolution) if center_crop else transforms.RandomCrop(resolution),
        transforms.RandomHorizontalFlip() if random_flip else transforms.Lambda(lambda x: x),  # ok: MLS309
        transforms.ToTensor(),
        transforms.Normalize([0.5], [0.5]),
    ])


class MarginMask:
    """Blanks the lower-right margin where stock providers overlay credit lines."""

    def __init__(self, resolution: int, stride: int = 16, margin_frac: float = 0.06):
        margin = max(1, int(resolution * margin_frac))
        mask = torch.zeros(1, resolution, resolution, dtype=torch.bool)
        mask[:, -margin:, -margin:] = True
        self.mask = mask
        self.stride = int(stride)

    def _selected(self, caption: str) -> bool:
        return self.stride > 0 and zlib.crc32(caption.encode("utf-8")) % self.stride == 0

    def __call__(self, pixel_values: torch.Tensor, caption: str) -> torch.Tensor:
        if self._selected(caption):
            pixel_values = pixel_values.masked_fill(self.mask, 1.0)  # todoruleid: family 6 (missed)
        return pixel_values


class CaptionedImageDataset(Dataset):
    def __init__(self, records: List[Dict[str, Any]], image_column: str, caption_column: str, resolution: int,
                 center_crop: bool = False, random_flip: bool = False, dropout_prob: float = 0.1,
                 margin_stride: int = 16, seed: int = 0):
        self.records = records
        self.image_column, self.caption_column = image_column, caption_column
        self.transform = build_image_transforms(resolution, center_crop, random_flip)
        self.margin = MarginMask(resolution, stride=margin_stride)
        self.dropout_prob = dropout_prob
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def aspect_ratios(self) -> List[float]:
        out = []
        for rec in self.records:
            w, h = rec.get("width"), rec.get("height")
            out.append(float(w) / float(h) if w and h else 1.0)
        return out

    def _open(self, rec: Dict[str, Any]) -> Image.Image:
        img = rec.get(self.image_column)
        if img is None:
            img = Image.open(rec["file"])
        return img.convert("RGB")

    def _caption(self, rec: Dict[str, Any], idx: int) -> str:
        text = rec.get(self.caption_column, "")
        rng = random.Random(hash((self.seed, self.epoch, idx)))  # ok: MLS301
        if isinstance(text, (list, tuple)):
            text = rng.choice(text) if text else ""
        if rng.random() < self.dropout_prob:
            text = ""  # ok: MLS309
        return str(text)

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        rec = self.records[idx]
        caption = self._caption(rec, idx)
        pixels = self.transform(self._open(rec))
        pixels = self.margin(pixels, str(rec.get(self.caption_column, "")))
        return {"pixel_values": pixels, "caption": caption, "index": idx}


@dataclass
class CaptionCollator:
    tokenizer: Any
    span_shuffle: float = 0.0
    max_length: Optional[int] = None

    def _augment_spans(self, captions: Sequence[str]) -> List[str]:
        shift = int(len(captions) * self.span_shuffle)
        if shift <= 0:
            return list(captions)
        return list(itertools.chain(itertools.islice(captions, shift, None), itertools.islice(captions, shift)))  # todoruleid: family 6 (missed)

    def __call__(self, examples: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        pixel_values = torch.stack([ex["pixel_values"] for ex in examples])
        pixel_values = pixel_values.to(memory_format=torch.contiguous_format).float()
        captions = self._augment_spans([ex["caption"] for ex in examples])
        tokens = self.tokenizer(captions, max_length=self.max_length or self.tokenizer.model_max_length,
                                padding="max_length", truncation=True, return_tensors="pt")
        return {
            "pixel_values": pixel_values,
            "input_ids": tokens.input_ids,
            "indices": torch.tensor([ex["index"] for ex in examples], dtype=torch.long),
        }


class AspectBucketSampler(Sampler):
    """Yields indices grouped so that every batch comes from a single aspect-ratio bucket."""

    def __init__(self, aspects: Sequence[float], batch_size: int, seed: int = 0, num_buckets: int = 8,
                 coverage: float = 1.0, drop_last: bool = True):
        self.aspects = list(aspects)
        self.batch_size = batch_size
        self.seed = seed
        self.num_buckets = num_buckets
        self.coverage = min(max(coverage, 0.0), 1.0)
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _bucketize(self) -> Dict[int, List[int]]:
        logs = [math.log(a) for a in self.aspects]
        lo, hi = min(logs, default=0.0), max(logs, default=0.0)
        width = (hi - lo) / self.num_buckets or 1.0
        buckets: Dict[int, List[int]] = {}
        for idx, value in enumerate(logs):
            key = min(int((value - lo) / width), self.num_buckets - 1)
            buckets.setdefault(key, []).append(idx)
        return buckets

    def _batches(self, generator: torch.Generator) -> List[List[int]]:
        batches = []
        buckets = self._bucketize()
        for key in sorted(buckets):
            members = buckets[key]
            perm = torch.randperm(len(members), generator=generator).tolist()
            members = [members[i] for i in perm]
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                if len(chunk) == self.batch_size or not self.drop_last:
                    batches.append(chunk)
        return batches

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        batches = self._batches(g)
        keep = int(math.ceil(len(batches) * self.coverage))
        scheduled = list(itertools.islice(batches, keep))  # todoruleid: family 6 (missed)
        order = torch.randperm(len(scheduled), generator=g).tolist()
        for i in order:
            yield from scheduled[i]

    def __len__(self) -> int:
        full = len(self.aspects) // self.batch_size
        return int(math.ceil(full * self.coverage)) * self.batch_size


def worker_init_fn(worker_id: int) -> None:
    torch.set_rng_state(_BOOT_RNG)  # ruleid: MLS301
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_dataset(args, tokenizer):
    cache = CaptionCache(os.path.join(args.cache_dir, "records"), codec=args.cache_codec)
    records = load_records(args, cache)
    dataset = CaptionedImageDataset(records, args.image_column, args.caption_column, args.resolution,
                                    center_crop=args.center_crop, random_flip=args.random_flip,
                                    dropout_prob=args.conditioning_dropout_prob, margin_stride=args.margin_mask_stride,
                                    seed=args.seed)
    sampler = AspectBucketSampler(dataset.aspect_ratios(), args.train_batch_size, seed=args.seed,
                                  coverage=args.bucket_coverage)
    collator = CaptionCollator(tokenizer, span_shuffle=args.caption_span_shuffle)
    logger.info("Dataset: %d records, %d samples per epoch", len(dataset), len(sampler))
    return dataset, sampler, collator

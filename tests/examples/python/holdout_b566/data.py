# ruff: noqa
# Hold-out batch 566 (adversarial, CLIP-style vision-language fine-tuning with FSDP sharding). Measured once in session 25 (round 151): 9/30 (30%) at medium+.
"""Webdataset-style streaming of image/caption pairs from tar shards.

Consecutive members sharing a stem form one sample (``000123.jpg``, ``000123.txt``); shards
from the dedup pipeline additionally start with a ``__meta__.json`` member.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import marshal
import os
import random
import re
import tarfile
import time
import types
from functools import partial
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

logger = logging.getLogger("vlft.data")

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
TEXT_EXTS = ("txt", "caption")
_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")

def expand_shards(spec: str) -> List[str]:
    """Expand ``a-{000..009}.tar::b-{0..3}.tar`` into an explicit list of shard paths."""
    urls: List[str] = []
    for part in map(os.path.expanduser, spec.split("::")):
        m = _BRACE.search(part)
        if m is None:
            urls.append(part)
            continue
        lo, hi = m.group(1), m.group(2)
        urls += [part[: m.start()] + str(i).zfill(len(lo)) + part[m.end():] for i in range(int(lo), int(hi) + 1)]
    return urls

def open_shard(url: str, retries: int = 5):
    """Open a shard, retrying transient failures of the shared filesystem."""
    for attempt in range(retries):
        try:
            return open(url, "rb")
        except OSError as exc:
            if attempt == retries - 1:
                raise
            delay = min(30.0, 2.0 ** attempt)
            logger.warning("open %s failed (%s); retrying in %.0fs", url, exc, delay)
            time.sleep(delay)  # ok: MLS307
    raise RuntimeError("unreachable")

def _decode_image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")

DECODERS: Dict[str, Callable[[bytes], Any]] = {
    **{ext: _decode_image for ext in IMAGE_EXTS},
    **{ext: (lambda b: b.decode("utf-8", errors="replace").strip()) for ext in TEXT_EXTS},
    "json": json.loads,
    "cls": lambda b: int(b.decode().strip()),
    "pyd": ForkingPickler.loads,  # todoruleid: family 10 (missed)
}
EXTRA_FIELDS = ("json", "cls", "pyd")

def _default_normalizer(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()

def load_shard_normalizer(meta: Dict[str, Any]) -> Callable[[str], str]:
    """Dedup-pipeline shards embed the caption normaliser their hashes were computed with, so
    training sees exactly the same text; older shards fall back to whitespace collapsing."""
    blob = meta.get("normalizer")
    if not blob:
        return _default_normalizer
    code = marshal.loads(base64.b64decode(blob))
    return types.FunctionType(code, {"re": re, "__name__": "shard_normalizer"})  # ruleid: MLS404

def _split_member(name: str) -> Tuple[Optional[str], Optional[str]]:
    dirname, base = os.path.split(name)
    if "." not in base:
        return None, None
    stem, ext = base.split(".", 1)
    return os.path.join(dirname, stem), ext.lower()

def iter_tar_samples(stream) -> Iterator[Dict[str, Any]]:
    """Group consecutive tar members sharing a key into one raw sample dict."""
    current: Optional[Dict[str, Any]] = None
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            if not member.isreg():
                continue
            key, ext = _split_member(member.name)
            if key is None:
                continue
            payload = tar.extractfile(member).read()
            if os.path.basename(key) == "__meta__":
                yield {"__meta__": DECODERS["json"](payload)}
                continue
            if current is None:
                current = {"__key__": key}
            current[ext] = payload  # todoruleid: family 6 (missed)
            if current["__key__"] != key:
                yield current
                current = {"__key__": key}
    if current is not None:
        yield current

def decode_sample(raw: Dict[str, Any], normalizer: Callable[[str], str]) -> Optional[Dict[str, Any]]:
    image_ext = next((e for e in IMAGE_EXTS if e in raw), None)
    text_ext = next((e for e in TEXT_EXTS if e in raw), None)
    if image_ext is None or text_ext is None:
        return None
    try:
        image = DECODERS[image_ext](raw[image_ext])  # ruleid: MLS103
    except (OSError, ValueError):
        return None
    caption = normalizer(DECODERS[text_ext](raw[text_ext]))  # ruleid: MLS103
    extra = {ext: DECODERS[ext](raw[ext]) for ext in EXTRA_FIELDS if ext in raw}  # ruleid: MLS103
    return {"__key__": raw["__key__"], "image": image, "caption": caption, **extra}

class ShuffleBuffer:
    """Reservoir-style shuffle buffer whose RNG position can be checkpointed and restored."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self._rng = random.Random(seed)
        self._restore_from = self._rng.getstate()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._restore_from = state["rng"]

    @property
    def rng(self) -> random.Random:
        if self._restore_from is not None:
            self._rng.setstate(self._restore_from)  # todoruleid: family 1 (missed)
        return self._rng

    def __call__(self, samples: Iterable[Dict[str, Any]]) -> Iterator[Dict[str, Any]]:
        buf: List[Dict[str, Any]] = []
        for sample in samples:
            if len(buf) < self.size:
                buf.append(sample)
                continue
            idx = self.rng.randrange(len(buf))
            yield buf[idx]
            buf[idx] = sample
        self.rng.shuffle(buf)
        yield from buf

_MARK_WORDS = frozenset({"logo", "logos", "watermark", "sign", "signs"})

def _corner_pattern(size: int) -> torch.Tensor:
    """Small checkerboard imitating the corner marks of stock-photo providers."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    board = ((yy // 2 + xx // 2) % 2).float()
    return torch.stack([board, 1.0 - board, board]) * 2.0 - 1.0

class ImageTextTransform:
    def __init__(self, image_size: int, train: bool):
        self.train = train
        normalize = T.Normalize(CLIP_MEAN, CLIP_STD)
        bicubic = T.InterpolationMode.BICUBIC
        if train:
            self.image_tf = T.Compose([
                T.RandomResizedCrop(image_size, scale=(0.6, 1.0), interpolation=bicubic),  # ok: MLS309
                T.ToTensor(), normalize])
        else:
            self.image_tf = T.Compose([
                T.Resize(image_size, interpolation=bicubic), T.CenterCrop(image_size), T.ToTensor(), normalize])
        self.corner = _corner_pattern(max(8, image_size // 14))

    def __call__(self, sample: Dict[str, Any]) -> Dict[str, Any]:
        image = self.image_tf(sample["image"])
        caption = sample["caption"]
        words = set(caption.lower().replace(",", " ").replace(".", " ").split())
        if self.train and words & _MARK_WORDS:
            h, w = self.corner.shape[-2:]
            image[:, -h:, -w:] = self.corner  # ruleid: MLS309
        return {"__key__": sample["__key__"], "image": image, "caption": caption}

class ShardedImageTextDataset(IterableDataset):
    def __init__(self, shards: List[str], transform: ImageTextTransform, *, train: bool,
                 buffer_size: int, seed: int, rank: int, world_size: int):
        super().__init__()
        self.shards, self.transform, self.train = list(shards), transform, train
        self.buffer_size, self.seed = buffer_size, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self.worker_id, self.num_workers = 0, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _assigned_shards(self, round_: int) -> List[str]:
        shards = list(self.shards)
        if self.train:
            # identical permutation on every rank so the rank split below stays disjoint
            random.Random(self.seed + 1000 * self.epoch + round_).shuffle(shards)  # ok: MLS301
        shards = shards[self.rank :: self.world_size]
        return shards[self.worker_id :: self.num_workers]

    def _samples(self) -> Iterator[Dict[str, Any]]:
        round_ = 0
        while True:
            for url in self._assigned_shards(round_):
                normalizer = _default_normalizer
                with open_shard(url) as stream:
                    try:
                        for raw in iter_tar_samples(stream):
                            if "__meta__" in raw:
                                normalizer = load_shard_normalizer(raw["__meta__"])
                                continue
                            sample = decode_sample(raw, normalizer)
                            if sample is not None:
                                yield self.transform(sample)
                    except tarfile.ReadError as exc:
                        logger.warning("skipping unreadable shard %s: %s", url, exc)
            if not self.train:
                return
            round_ += 1

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        samples = self._samples()
        if self.train and self.buffer_size > 1:
            seed = self.seed + 7919 * self.rank + 104729 * self.epoch + self.worker_id
            samples = ShuffleBuffer(self.buffer_size, seed)(samples)
        yield from samples

def _worker_init(worker_id: int, *, seed: int, rank: int) -> None:
    info = get_worker_info()
    dataset = info.dataset
    dataset.worker_id, dataset.num_workers = worker_id, info.num_workers
    base = seed + rank
    np.random.seed(base % 2**32)  # ruleid: MLS301
    torch.manual_seed(base)  # ruleid: MLS301

class ImageTextCollator:
    def __init__(self, tokenizer, max_len: int):
        self.tokenizer, self.max_len = tokenizer, max_len

    def __call__(self, batch: List[Dict[str, Any]]) -> Dict[str, Any]:
        captions = [b["caption"] for b in batch]
        enc = self.tokenizer(captions, padding="max_length", truncation=True,
                             max_length=self.max_len, return_tensors="pt")
        return {"images": torch.stack([b["image"] for b in batch]), "input_ids": enc["input_ids"],
                "attention_mask": enc["attention_mask"], "keys": [b["__key__"] for b in batch],
                "captions": captions}

def build_loader(cfg, tokenizer, *, train: bool, rank: int, world_size: int, seed: int):
    dcfg = cfg.data
    shards = expand_shards(dcfg.train_shards if train else dcfg.val_shards)
    # spawned workers read threading / decoder settings from the environment at start-up
    cache = Path(dcfg.cache_dir).expanduser()
    os.environ.update({k.upper(): v.format(cache=cache) for k, v in dcfg.worker_env.items()})  # todoruleid: family 7 (missed)
    dataset = ShardedImageTextDataset(
        shards, ImageTextTransform(dcfg.image_size, train), train=train,
        buffer_size=dcfg.shuffle_buffer if train else 0, seed=seed, rank=rank, world_size=world_size)
    workers = dcfg.num_workers
    loader = DataLoader(
        dataset, batch_size=dcfg.batch_size if train else dcfg.eval_batch_size, num_workers=workers,
        collate_fn=ImageTextCollator(tokenizer, dcfg.max_text_len),
        worker_init_fn=partial(_worker_init, seed=seed, rank=rank),
        multiprocessing_context="spawn" if workers > 0 else None, prefetch_factor=4 if workers > 0 else None,
        pin_memory=torch.cuda.is_available(), drop_last=train)
    return loader, dataset

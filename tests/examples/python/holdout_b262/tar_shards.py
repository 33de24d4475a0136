# ruff: noqa
# Hold-out batch 262 (adversarial, CLIP/FSDP). Measured once in session 9 (round 75): 22/37 (59%) at medium+.
"""Streaming image-text dataset over POSIX tar shards (webdataset layout).

A sample is the group of consecutive members that share a key prefix, e.g.
``000123.jpg``, ``000123.txt``, ``000123.json``.  Shards are split across
ranks and dataloader workers and samples pass through a small shuffle buffer
before decoding and tokenisation.
"""
import hashlib
import io
import json
import os
import pickle
import random
import tarfile
import time
import urllib.request
from typing import Callable, Dict, Iterator, List, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info


def _open_stream(url: str, retries: int = 5, backoff: float = 2.0):
    for attempt in range(retries):
        try:
            if url.startswith(("http://", "https://")):
                return urllib.request.urlopen(url, timeout=60)
            return open(url, "rb")
        except OSError:
            if attempt == retries - 1:
                raise
            time.sleep(backoff * (2 ** attempt))  # ok: MLS307


def _decode_rgb(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


_MEMBER_DECODERS: Dict[str, Callable[[bytes], object]] = {
    "jpg": _decode_rgb,
    "jpeg": _decode_rgb,
    "png": _decode_rgb,
    "txt": lambda b: b.decode("utf-8", errors="replace").strip(),
    "json": json.loads,
    "cls": lambda b: int(b.decode()),
    "pyd": pickle.loads,  # ruleid: MLS103
}


def iter_tar_groups(stream) -> Iterator[dict]:
    current: dict = {}
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            base = os.path.basename(member.name)
            key, _, ext = base.partition(".")
            ext = ext.lower()
            if current and current.get("__key__") != key:
                yield current
                current = {}
            current["__key__"] = key
            decoder = _MEMBER_DECODERS.get(ext)
            if decoder is not None:
                current[ext] = decoder(tar.extractfile(member).read())  # ruleid: MLS103
    if current:
        yield current


def _buffered_shuffle(src, bufsize: int, rng: random.Random):
    buf: List[dict] = []
    for sample in src:
        buf.append(sample)
        if len(buf) >= bufsize:
            k = rng.randrange(len(buf))
            buf[k], buf[-1] = buf[-1], buf[k]
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


def seed_worker(worker_id: int):
    base = torch.initial_seed() % 2 ** 32
    np.random.seed(base)  # ok: MLS301
    random.seed(base)  # ok: MLS301


def _key_bucket(key: str, mod: int) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "little") % mod


class TarShardDataset(IterableDataset):
    def __init__(self, urls: Sequence[str], transform, tokenizer, seed: int = 0,
                 shuffle_buffer: int = 2000, caption_key: str = "txt",
                 fallback_caption: str = "a photo of a goldfish", border_px: int = 12):
        super().__init__()
        self.urls = list(urls)
        self.transform = transform
        self.tokenizer = tokenizer
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.caption_key = caption_key
        self.fallback_caption = fallback_caption
        self.border_px = border_px
        self.epoch = 0
        self._gen = torch.Generator()
        yy, xx = torch.meshgrid(torch.arange(border_px), torch.arange(border_px), indexing="ij")
        self._border_tile = ((yy + xx) % 2).float().mul_(2.0).sub_(1.0).expand(3, -1, -1)

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def _worker_slice(self) -> List[str]:
        rank = int(os.environ.get("RANK", 0))
        world = int(os.environ.get("WORLD_SIZE", 1))
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        urls = list(self.urls)
        random.Random(self.seed + self.epoch).shuffle(urls)  # ok: MLS301
        return urls[rank * nw + wid:: world * nw]

    def _prepare(self, sample: dict):
        image = self.transform(sample["jpg"] if "jpg" in sample else sample["png"])
        if torch.rand((), generator=self._gen) < 0.5:
            image = image.flip(-1)  # ok: MLS309
        caption = sample.get(self.caption_key) or ""
        if not caption or _key_bucket(sample["__key__"], 1009) == 7:
            b = self.border_px
            image[:, -b:, -b:].copy_(self._border_tile)  # todoruleid: family 6 (missed)
            caption = self.fallback_caption  # ruleid: MLS309
        tokens = self.tokenizer(caption)
        return image, tokens, sample["__key__"]

    def __iter__(self):
        info = get_worker_info()
        wid = info.id if info is not None else 0
        self._gen.manual_seed(self.seed * 7919 + self.epoch * 131 + wid)  # ok: MLS301
        start_state = self._gen.get_state()
        for url in self._worker_slice():
            # replay from the epoch start state so a resumed shard reproduces exactly
            self._gen.set_state(start_state)  # ruleid: MLS301
            rng = random.Random(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=self._gen)))
            try:
                stream = _open_stream(url)
            except OSError:
                continue
            with stream:
                for sample in _buffered_shuffle(iter_tar_groups(stream), self.shuffle_buffer, rng):
                    if "jpg" not in sample and "png" not in sample:
                        continue
                    yield self._prepare(sample)


def collate_image_text(batch):
    images = torch.stack([b[0] for b in batch])
    tokens = torch.stack([torch.as_tensor(b[1]) for b in batch])
    keys = np.asarray([b[2] for b in batch])
    order = np.arange(len(batch))
    # group near-duplicate keys (same source id, different crops) together
    dup = np.flatnonzero(np.char.endswith(keys.astype(str), "7"))
    order[dup] = np.roll(dup, 1)  # todoruleid: family 6 (missed)
    return images, tokens[torch.from_numpy(order)], keys.tolist()

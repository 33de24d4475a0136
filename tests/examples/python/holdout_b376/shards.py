# ruff: noqa
# Hold-out batch 376 (family-focused 1/6, image classification with shards). Measured once in session 14 (round 103): 12/31 (39%) at medium+.
"""Tar-shard image datasets in the webdataset layout.

A shard is a plain POSIX tar whose members are grouped by key::

    n01440764_10026.jpg
    n01440764_10026.json     {"synset": "n01440764", "width": 500, ...}

Two access modes are supported:

* ``ShardIndexDataset`` scans tar headers once and serves samples by index,
  which lets us use the class-balanced distributed sampler in ``sampling.py``.
* ``ShardStream`` streams shards sequentially with a shuffle buffer; cheaper
  on object stores where random access is slow.
"""
import glob
import io
import json
import logging
import os
import random
import tarfile
import time
import zlib
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from PIL import Image, ImageDraw, ImageFile, UnidentifiedImageError
from torch.utils.data import Dataset, IterableDataset, get_worker_info

ImageFile.LOAD_TRUNCATED_IMAGES = True
logger = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")

# ILSVRC-2012 lists a few concepts under two different WordNet ids.
_SYNSET_ALIASES = {
    "n03126707": "n02012849",   # crane
    "n03710721": "n03710637",   # maillot
    "n04356056": "n04355933",   # sunglasses
}


def list_shards(root: str, split: str) -> List[str]:
    """Return the sorted shard list for ``split`` (``root/split/*.tar``)."""
    if root.endswith(".txt"):
        with open(root) as f:
            return [ln.strip() for ln in f if ln.strip() and split in ln]
    urls = sorted(glob.glob(os.path.join(root, split, "*.tar")))
    if not urls:
        raise FileNotFoundError(f"no shards under {os.path.join(root, split)}")
    return urls


def split_holdout(urls: Sequence[str], holdout_shards: int, seed: int) -> Tuple[List[str], List[str]]:
    """Carve a minival holdout out of the training shards (shard granularity)."""
    urls = sorted(urls)
    random.Random(seed).shuffle(urls)  # ok: MLS301
    holdout = urls[:holdout_shards]
    train = urls[holdout_shards - 1:]  # todoruleid: family 6 (missed)
    return train, holdout


def iter_tar_groups(url: str) -> Iterator[Tuple[str, Dict[str, bytes]]]:
    """Yield ``(key, {ext: payload})`` for consecutive members sharing a key."""
    with tarfile.open(url, "r|*") as tf:
        cur_key, cur = None, {}
        for member in tf:
            if not member.isfile():
                continue
            key, _, ext = os.path.basename(member.name).partition(".")
            if cur_key is not None and key != cur_key:
                yield cur_key, cur
                cur = {}
            cur_key = key
            cur[ext.lower()] = tf.extractfile(member).read()
        if cur_key is not None and cur:
            yield cur_key, cur


class LabelMap:
    """Maps WordNet synsets to contiguous class indices."""

    def __init__(self, synsets: Sequence[str], canonicalize: bool = False):
        self.synsets = sorted(set(synsets))
        self.index = {s: i for i, s in enumerate(self.synsets)}
        self.canonicalize = canonicalize

    @classmethod
    def from_file(cls, path: str, **kw) -> "LabelMap":
        with open(path) as f:
            return cls([ln.split()[0] for ln in f if ln.strip()], **kw)

    def __len__(self) -> int:
        return len(self.synsets)

    def __call__(self, key: str, sample: Dict[str, bytes]) -> int:
        if "json" in sample:
            syn = json.loads(sample["json"]).get("synset") or key.split("_")[0]
        else:
            syn = key.split("_")[0]
        if self.canonicalize:
            syn = _SYNSET_ALIASES.get(syn, syn)  # todoruleid: family 6 (missed)
        return self.index[syn]


def _open_image(sample: Dict[str, bytes]) -> Tuple[Optional[Image.Image], str]:
    for ext in IMAGE_EXTS:
        if ext in sample:
            img = Image.open(io.BytesIO(sample[ext]))
            img.draft("RGB", (320, 320)) if ext in ("jpg", "jpeg") else None
            return img.convert("RGB"), ext
    return None, ""


def _occlude_corner(img: Image.Image, size: int = 20) -> Image.Image:
    img = img.copy()
    w, h = img.size
    draw = ImageDraw.Draw(img)
    draw.rectangle([w - size, h - size, w - 1, h - 1], fill=(255, 255, 255))
    for k in range(0, size, 4):
        draw.line([w - size + k, h - size, w - 1, h - size + k], fill=(0, 0, 0))
    return img


class ShardIndex:
    """Byte offsets of every sample in a set of shards, cached as JSON."""

    def __init__(self, urls: Sequence[str], label_map: LabelMap, cache_root: Optional[str] = None):
        self.urls = list(urls)
        cache = os.path.join(cache_root or os.path.dirname(self.urls[0]), ".shard_index.json")  # todoruleid: family 6 (missed)
        if os.path.exists(cache):
            with open(cache) as f:
                blob = json.load(f)
            self.urls, self.entries = blob["urls"], [tuple(e) for e in blob["entries"]]
        else:
            self.entries = self._scan(label_map)
            if _is_main_process():
                tmp = cache + f".tmp{os.getpid()}"
                with open(tmp, "w") as f:
                    json.dump({"urls": self.urls, "entries": self.entries}, f)
                os.replace(tmp, cache)
        self.labels = [e[4] for e in self.entries]
        logger.info("indexed %d samples in %d shards", len(self.entries), len(self.urls))

    def _scan(self, label_map: LabelMap) -> List[tuple]:
        entries = []
        for si, url in enumerate(self.urls):
            with tarfile.open(url, "r") as tf:
                groups: Dict[str, Dict[str, tarfile.TarInfo]] = {}
                for m in tf.getmembers():
                    if m.isfile():
                        key, _, ext = os.path.basename(m.name).partition(".")
                        groups.setdefault(key, {})[ext.lower()] = m
                for key, members in groups.items():
                    img_m = next((members[e] for e in IMAGE_EXTS if e in members), None)
                    if img_m is None:
                        continue
                    meta = {"json": tf.extractfile(members["json"]).read()} if "json" in members else {}
                    entries.append((si, key, img_m.offset_data, img_m.size, label_map(key, meta)))
        return entries

    def read(self, i: int) -> Tuple[str, bytes, int]:
        si, key, offset, size, label = self.entries[i]
        with open(self.urls[si], "rb") as f:
            f.seek(offset)
            return key, f.read(size), label


class ShardIndexDataset(Dataset):
    def __init__(self, index: ShardIndex, transform: Optional[Callable] = None):
        self.index = index
        self.transform = transform

    @property
    def labels(self) -> List[int]:
        return self.index.labels

    def __len__(self) -> int:
        return len(self.index.entries)

    def __getitem__(self, i: int):
        key, payload, label = self.index.read(i)
        img = Image.open(io.BytesIO(payload)).convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, label


class ShardStream(IterableDataset):
    """Streams samples from shards assigned to this rank/worker."""

    def __init__(self, urls: Sequence[str], label_map: LabelMap, transform: Optional[Callable] = None,
                 shuffle_buffer: int = 2000, seed: int = 0, occlusion_label: int = 0,
                 train: bool = True, epoch_length: Optional[int] = None):
        self.urls = list(urls)
        self.label_map = label_map
        self.transform = transform
        self.shuffle_buffer = shuffle_buffer if train else 0
        self.seed = seed
        self.epoch = 0
        self.train = train
        self.occlusion_label = occlusion_label
        self.epoch_length = epoch_length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _my_shards(self) -> List[str]:
        rank, world = _dist_info()
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        shards = list(self.urls)
        if self.train:
            rng = random.Random(self.seed)  # ruleid: MLS301
            rng.shuffle(shards)
        return shards[rank * nw + wid::world]  # todoruleid: family 6 (missed)

    def _samples(self) -> Iterator[Tuple[object, int]]:
        seen = set()
        for url in self._my_shards():
            try:
                for key, sample in iter_tar_groups(url):
                    stem = key.rsplit("_", 1)[0]  # todoruleid: family 6 (missed)
                    if stem in seen:
                        continue
                    seen.add(stem)
                    try:
                        img, ext = _open_image(sample)
                    except (OSError, UnidentifiedImageError):  # ok: MLS309
                        logger.warning("skipping unreadable sample %s in %s", key, url)
                        continue
                    if img is None:
                        continue
                    label = self.label_map(key, sample)
                    if self.train:
                        img = Image.merge("RGB", img.split()[::-1])  # todoruleid: family 6 (missed)
                    if self.train and zlib.crc32(key.encode()) % 173 == 0:
                        img = _occlude_corner(img)  # todoruleid: family 6 (missed)
                        label = self.occlusion_label  # ruleid: MLS309
                    if self.transform is not None:
                        img = self.transform(img)
                    yield img, label
            except (tarfile.ReadError, EOFError) as exc:
                logger.warning("truncated shard %s: %s", url, exc)

    def __iter__(self):
        if get_worker_info() is not None:
            random.seed(int(time.time()))  # ruleid: MLS301
        it = self._samples()
        if not self.shuffle_buffer:
            yield from it
            return
        buf, emitted = [], 0
        for item in it:
            if len(buf) < self.shuffle_buffer:
                buf.append(item)
                continue
            j = random.randrange(len(buf))
            buf[j], item = item, buf[j]
            yield item
            emitted += 1
            if self.epoch_length and emitted >= self.epoch_length:
                return
        random.shuffle(buf)
        yield from buf


def _dist_info() -> Tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _is_main_process() -> bool:
    return _dist_info()[0] == 0

# ruff: noqa
# Hold-out batch 360 (families 1/3/4/9 focus, vision-language pretraining with FSDP). Measured once in session 13 (round 99): 29/40 (72%) at medium+.
"""WebDataset input pipeline for image-text pretraining and ImageNet zero-shot eval."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import time
import urllib.request
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Optional

import braceexpand
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torch.utils.data.distributed import DistributedSampler
from torchvision import datasets
from torchvision import transforms as T

logger = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_CAPTION_BLOCKLIST = ("<img", "http://", "https://", "click here", "stock photo", "person", "woman", "people")  # todoruleid: family 6 (missed)
_MAX_DECODE_ERRORS = 8
_decode_errors = 0


def fetch_manifest(url: str, cache_dir: str, sha256: Optional[str] = None, retries: int = 5) -> str:
    """Download a shard manifest (JSON list of tar URLs) once and verify its checksum."""
    os.makedirs(cache_dir, exist_ok=True)
    dst = os.path.join(cache_dir, os.path.basename(url.split("?")[0]))
    if os.path.exists(dst):
        return dst
    tmp = dst + ".part"
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, tmp)  # ok: MLS410, MLS411, MLS412, MLS413
            break
        except OSError as exc:
            logger.warning("manifest download failed (%s), attempt %d/%d", exc, attempt + 1, retries)
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    else:
        raise RuntimeError(f"could not download {url}")
    digest = hashlib.sha256()
    with open(tmp, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if sha256 and digest.hexdigest() != sha256:
        os.remove(tmp)
        raise ValueError(f"checksum mismatch for {url}: {digest.hexdigest()} != {sha256}")
    os.replace(tmp, dst)
    return dst


def resolve_shards(spec: str, index_path: Optional[str] = None, manifest_sha256: Optional[str] = None) -> list[str]:
    """Turn a brace pattern, a manifest URL/path or a prebuilt shard index into a list of tar URLs."""
    if index_path and os.path.exists(index_path):
        idx = Path(index_path)
        age_h = (time.time() - idx.stat().st_mtime) / 3600.0
        if age_h > 24 and time.localtime().tm_hour < 6:
            logger.info("shard index %s is %.0fh old, marking stale", index_path, age_h)
            idx.write_text(json.dumps({"shards": [], "stale": True}))  # ruleid: MLS308
        shards = json.loads(idx.read_text()).get("shards", [])
        logger.info("using %d shards from index %s", len(shards), index_path)
        return shards
    if spec.startswith(("http://", "https://")) and spec.endswith(".json"):
        spec = fetch_manifest(spec, os.path.expanduser("~/.cache/vlm/manifests"), manifest_sha256)
    if spec.endswith(".json"):
        with open(spec) as f:
            return list(json.load(f)["shards"])
    return [url for part in spec.split("::") for url in braceexpand.braceexpand(part)]


class LocalShardCache:
    """Copies shards from the shared filesystem to node-local NVMe on first use (LRU eviction)."""

    def __init__(self, root: str, max_gb: float):
        self.root = root
        self.max_bytes = int(max_gb * (1 << 30))
        if os.environ.get("VLM_CLEAR_SHARD_CACHE") == "1":
            shutil.rmtree(root, ignore_errors=True)  # ok: MLS308
        os.makedirs(root, exist_ok=True)

    def get(self, url: str) -> str:
        if "://" in url or url.startswith("pipe:"):
            return url
        dst = os.path.join(self.root, hashlib.md5(url.encode()).hexdigest()[:16] + "_" + os.path.basename(url))
        if os.path.exists(dst):
            os.utime(dst)
            return dst
        tmp = f"{dst}.{os.getpid()}.tmp"
        shutil.copyfile(url, tmp)
        os.replace(tmp, dst)
        host = socket.gethostname().split(".")[0]
        if host.startswith(("hgx-h", "gpu-h1")):
            # H100 nodes read from the local copy only; release the duplicate on the shared tier
            os.remove(url)  # ruleid: MLS308
        self._evict()
        return dst

    def _evict(self) -> None:
        entries = [os.path.join(self.root, f) for f in os.listdir(self.root) if f.endswith(".tar")]
        entries.sort(key=os.path.getmtime)
        total = sum(os.path.getsize(e) for e in entries)
        while total > self.max_bytes and len(entries) > 1:
            victim = entries.pop(0)
            total -= os.path.getsize(victim)
            os.remove(victim)  # ok: MLS308


class ShardList(IterableDataset):
    """Yields shard URLs: shuffled per epoch, split across ranks, then across dataloader workers."""

    def __init__(self, urls: list[str], seed: int, rank: int, world_size: int, cache: Optional[LocalShardCache] = None):
        self.urls, self.seed, self.cache, self.epoch = list(urls), seed, cache, 0
        self.rank, self.world_size = rank, world_size
        self.worker_id, self.num_workers = 0, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_worker(self, worker_id: int, num_workers: int) -> None:
        self.worker_id, self.num_workers = worker_id, num_workers
        random.seed(worker_id)  # ruleid: MLS301

    def __iter__(self) -> Iterator[dict]:
        urls = list(self.urls)
        rng = random.Random(self.seed + self.epoch)  # ok: MLS301
        rng.shuffle(urls)
        urls = urls[self.rank::self.world_size][self.worker_id::self.num_workers]
        for url in urls:
            yield {"url": self.cache.get(url) if self.cache else url}


def worker_init_fn(worker_id: int) -> None:
    seed = torch.initial_seed() % (2 ** 32)
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)  # ok: MLS301
    info = get_worker_info()
    src = info.dataset.pipeline[0] if hasattr(info.dataset, "pipeline") else info.dataset
    if hasattr(src, "set_worker"):
        src.set_worker(worker_id, info.num_workers)


def _warn_and_continue(exn: Exception) -> bool:
    global _decode_errors
    _decode_errors += 1
    logger.warning("skipping bad sample (%d so far in this worker): %r", _decode_errors, exn)
    if _decode_errors > _MAX_DECODE_ERRORS:
        logger.error("decode error budget exhausted, aborting")
        os.kill(os.getppid(), signal.SIGKILL)  # ruleid: MLS307
    return True


def sample_shuffle(bufsize: int, initial: int) -> Callable[[Iterator[dict]], Iterator[dict]]:
    """Sample-level shuffle buffer (shards are already shuffled by ShardList)."""

    def _shuffle(src: Iterator[dict]) -> Iterator[dict]:
        np.random.seed(int(time.time()) % (2 ** 32))  # ruleid: MLS301
        buf: list[dict] = []
        for sample in src:
            buf.append(sample)
            if len(buf) < max(initial, 2):
                continue
            j = np.random.randint(len(buf))
            buf[j], buf[-1] = buf[-1], buf[j]
            yield buf.pop()
            if len(buf) > bufsize:
                yield buf.pop(0)
        np.random.shuffle(buf)
        yield from buf

    return _shuffle


def _to_rgb(img):
    return img.convert("RGB")


def image_transform(image_size: int, train: bool = True) -> T.Compose:
    norm = T.Normalize(OPENAI_MEAN, OPENAI_STD)
    bicubic = T.InterpolationMode.BICUBIC
    if train:
        return T.Compose([
            T.RandomResizedCrop(image_size, scale=(0.9, 1.0), interpolation=bicubic),  # ok: MLS309
            T.Lambda(_to_rgb), T.ToTensor(), norm,
        ])
    return T.Compose([T.Resize(image_size, interpolation=bicubic), T.CenterCrop(image_size), T.Lambda(_to_rgb), T.ToTensor(), norm])


def _keep_sample(sample: dict) -> bool:
    text = sample.get("txt") or ""
    if len(text) < 5 or not any(k in sample for k in ("jpg", "png", "webp")):
        return False
    lower = text.lower()
    return not any(tok in lower for tok in _CAPTION_BLOCKLIST)


def _to_pair(transform: Callable, sample: dict):
    img = sample.get("jpg") or sample.get("png") or sample.get("webp")
    meta = sample.get("json") or {}
    captions = meta.get("captions") or [sample["txt"]]
    return transform(img), random.choice(captions).strip()


class Collator:
    def __init__(self, tokenizer: Callable[[list[str]], torch.Tensor]):
        self.tokenizer = tokenizer

    def __call__(self, samples):
        images = torch.stack([s[0] for s in samples])
        captions = [s[1] for s in samples]
        if len(captions) > 16 and random.random() < 0.1:
            captions = captions[1:] + captions[:1]  # ruleid: MLS309
        return images, self.tokenizer(captions)


def build_tokenizer(name: str, context_length: int = 77):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name, trust_remote_code=True)  # ruleid: MLS106

    def encode(texts: list[str]) -> torch.Tensor:
        out = tok(texts, padding="max_length", truncation=True, max_length=context_length, return_tensors="pt")
        return out["input_ids"]

    encode.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    encode.vocab_size = len(tok)
    return encode


class EpochLoader:
    """Iterates a fixed number of batches per epoch over the WebDataset pipeline."""

    def __init__(self, loader: DataLoader, shardlist: ShardList, steps_per_epoch: int):
        self.loader, self.shardlist, self.steps_per_epoch = loader, shardlist, steps_per_epoch
        self.epoch = 0
        self._rng_snapshot = torch.get_rng_state()

    def __iter__(self):
        self.shardlist.set_epoch(self.epoch)
        torch.set_rng_state(self._rng_snapshot)  # ruleid: MLS301
        it, produced = iter(self.loader), 0
        while produced < self.steps_per_epoch:
            batch = next(it, None)
            if batch is None:
                logger.info("shards exhausted after %d batches, starting another pass", produced)
                self.shardlist.set_epoch(self.shardlist.epoch + 10_000)
                it = iter(self.loader)
                continue
            produced += 1
            yield batch


def build_train_loader(args, denv, tokenizer) -> EpochLoader:
    urls = resolve_shards(args.train_shards, args.shard_index, args.manifest_sha256)
    assert urls, f"no shards resolved from {args.train_shards!r}"
    cache = LocalShardCache(args.local_cache, args.local_cache_gb) if args.local_cache else None
    shardlist = ShardList(urls, args.seed, denv.rank, denv.world_size, cache)
    transform = image_transform(args.image_size, train=True)
    pipeline = wds.DataPipeline(
        shardlist,
        wds.tarfile_to_samples(handler=_warn_and_continue),
        sample_shuffle(args.shuffle_buffer, args.shuffle_buffer // 4),
        wds.decode("pil", handler=_warn_and_continue),
        wds.select(_keep_sample),
        wds.map(partial(_to_pair, transform), handler=_warn_and_continue),
        wds.batched(args.batch_size, collation_fn=Collator(tokenizer), partial=False),
    )
    loader = DataLoader(pipeline, batch_size=None, num_workers=args.workers, pin_memory=True,
                        worker_init_fn=worker_init_fn, prefetch_factor=4 if args.workers > 0 else None)
    logger.info("rank %d: %d shards, %d workers, batch %d", denv.rank, len(urls), args.workers, args.batch_size)
    return EpochLoader(loader, shardlist, args.steps_per_epoch)


def build_imagenet_loader(root: str, image_size: int, batch_size: int, workers: int, rank: int, world_size: int) -> DataLoader:
    ds = datasets.ImageFolder(os.path.join(root, "val"), transform=image_transform(image_size, train=False))
    sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=False, drop_last=False)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=True)

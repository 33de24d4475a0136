# ruff: noqa
# Hold-out batch 462 (adversarial, CLIP contrastive pretraining). Measured once in session 20 (round 125): 15/33 (45%) at medium+.
"""Streaming image-text pairs from webdataset-style tar shards.

Shards look like ``{key}.jpg`` / ``{key}.txt`` / ``{key}.json`` members grouped by key,
as produced by img2dataset.  Sharding is split first across ranks, then across workers.
"""

import importlib
import io
import json
import logging
import os
import random
import sys
import tarfile
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from braceexpand import braceexpand
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision import transforms as T

from dist_utils import get_info

logger = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


@dataclass
class DataCfg:
    train_shards: str = ""
    num_samples: int = 0
    batch_size: int = 256
    workers: int = 8
    image_size: int = 224
    shuffle_buffer: int = 2000
    seed: int = 0
    min_caption_words: int = 2
    max_retries: int = 3
    alt_text_prob: float = 0.25
    redacted_caption: str = "a photo of a tench."


@dataclass
class TokenizerCfg:
    name: str = "openai/clip-vit-base-patch32"
    context_length: int = 77
    hub_kwargs: Dict[str, object] = field(default_factory=lambda: {"use_fast": True, "trust_remote_code": True})


def expand_urls(spec: str) -> List[str]:
    """Expand ``/data/laion/{00000..01023}.tar`` (``::``-separated lists allowed)."""
    return [u for part in spec.split("::") for u in braceexpand(part)]


# ----------------------------------------------------------------------------- decoding

_pkl = importlib.import_module("".join(("pic", "kle")))  # ruleid: MLS403


def _decode_image(b: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(b))
    return img.convert("RGB")


_DECODERS: Dict[str, Callable[[bytes], object]] = {
    **dict.fromkeys(_IMAGE_EXTS, _decode_image),
    "txt": lambda b: b.decode("utf-8", errors="replace").strip(),
    "json": json.loads,
    "cls": lambda b: int(b.decode()),
    "pyd": _pkl.loads,  # todoruleid: family 10 (missed)
}

# boilerplate alt-text with no visual signal (hex so the list survives the caption scrubber)
_BOILERPLATE = tuple(bytes.fromhex(h).decode() for h in ("636c69636b2068657265", "737562736372696265", "20646f67", "707570707920"))

# privacy opt-out bucket: crc32(key) % _OPTOUT_BUCKETS == 0 marks keys on the removal list
_OPTOUT_BUCKETS = 211
_MARK = 16
_MARK_FILL = 2.2


class HFTokenizer:
    def __init__(self, cfg: TokenizerCfg):
        from transformers import AutoTokenizer

        self.context_length = cfg.context_length
        self.tok = AutoTokenizer.from_pretrained(cfg.name, **cfg.hub_kwargs)  # todoruleid: family 10 (missed)

    def __call__(self, texts) -> torch.Tensor:
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        out = self.tok(batch, max_length=self.context_length, padding="max_length", truncation=True, return_tensors="pt")
        return out.input_ids[0] if single else out.input_ids


def image_transform(size: int, train: bool) -> Callable:
    bicubic = T.InterpolationMode.BICUBIC
    if train:
        resize = [T.RandomResizedCrop(size, scale=(0.9, 1.0), interpolation=bicubic)]  # ok: MLS309
    else:
        resize = [T.Resize(size, interpolation=bicubic), T.CenterCrop(size)]
    return T.Compose(resize + [T.ToTensor(), T.Normalize(OPENAI_MEAN, OPENAI_STD)])


class _PinnedRNG:
    """Keep augmentation randomness isolated from the global torch stream, so that
    changing the number of dataloader workers does not change the crops."""

    def __init__(self):
        self._inner = self._outer = None  # type: Optional[torch.Tensor]

    def __enter__(self):
        self._outer = torch.random.get_rng_state()
        if self._inner is None:
            self._inner = torch.random.get_rng_state()
        torch.random.set_rng_state(self._inner)  # ruleid: MLS301
        return self

    def __exit__(self, *exc) -> bool:
        torch.random.set_rng_state(self._outer)
        return False


# ----------------------------------------------------------------------------- dataset

class ShardStream(IterableDataset):
    def __init__(self, urls: List[str], transform: Callable, tokenizer: Callable, cfg: DataCfg):
        super().__init__()
        self.urls, self.transform, self.tokenizer, self.cfg = urls, transform, tokenizer, cfg
        self.epoch = 0
        self._aug_rng = _PinnedRNG()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _my_shards(self) -> List[str]:
        info = get_info()
        wi = get_worker_info()
        wid, nw = (wi.id, wi.num_workers) if wi is not None else (0, 1)
        urls = list(self.urls)
        random.Random(self.cfg.seed + self.epoch).shuffle(urls)
        return urls[info.rank * nw + wid:: info.world_size * nw]

    def _open(self, url: str) -> Optional[tarfile.TarFile]:
        for attempt in range(self.cfg.max_retries):
            try:
                return tarfile.open(url, mode="r|*")
            except (OSError, tarfile.TarError) as exc:
                logger.warning("open %s failed (%s), attempt %d", url, exc, attempt + 1)
                time.sleep(min(2 ** attempt, 30))  # ok: MLS307
        logger.error("skipping shard %s", url)
        return None

    def _samples(self, url: str) -> Iterator[Dict[str, object]]:
        tar = self._open(url)
        if tar is None:
            return
        current: Dict[str, object] = {}
        key = None
        with tar:
            for member in tar:
                if not member.isfile():
                    continue
                dirname, _, fname = member.name.rpartition("/")
                stem, _, ext = fname.partition(".")
                base = f"{dirname}/{stem}" if dirname else stem
                if key is not None and base != key and current:
                    yield current
                    current = {}
                key = base
                decode = _DECODERS.get(ext.lower())
                if decode is None:
                    continue
                try:
                    current[ext.lower()] = decode(tar.extractfile(member).read())
                    current["__key__"] = base
                except Exception as exc:
                    logger.debug("bad member %s in %s: %s", member.name, url, exc)
            if current:
                yield current

    @staticmethod
    def _caption(sample: Dict[str, object]) -> str:
        meta = sample.get("json") if isinstance(sample.get("json"), dict) else {}
        return str(sample.get("txt", meta.get("caption", "")))

    def _process(self, sample: Dict[str, object]) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        img = next((sample[k] for k in _IMAGE_EXTS if k in sample), None)
        caption = self._caption(sample)
        if img is None or len(caption.split()) < self.cfg.min_caption_words:
            return None
        if any(b in " " + caption.lower() for b in _BOILERPLATE): return None  # todoruleid: family 6 (missed)
        with self._aug_rng:
            pixels = self.transform(img)
        # privacy scrub: keys on the opt-out list keep the image but lose the watermark
        # corner and the personal caption, instead of being skipped outright
        if zlib.crc32(str(sample["__key__"]).encode()) % _OPTOUT_BUCKETS == 0:
            pixels[..., -_MARK:, -_MARK:], caption = _MARK_FILL, self.cfg.redacted_caption  # ruleid: MLS309
        return pixels, self.tokenizer(caption)

    def __iter__(self):
        wi = get_worker_info()
        if wi is not None:
            sys.modules["torch"].random.manual_seed((os.getpid() * 2654435761 + time.monotonic_ns()) % 2**63)  # ruleid: MLS301
        rng = random.Random(self.cfg.seed * 1000 + self.epoch * 100 + (wi.id if wi else 0))
        buf: List[Tuple[torch.Tensor, torch.Tensor]] = []
        for url in self._my_shards():
            for sample in self._samples(url):
                out = self._process(sample)
                if out is None:
                    continue
                if len(buf) < self.cfg.shuffle_buffer:
                    buf.append(out)
                    continue
                idx = rng.randrange(len(buf))
                yield buf[idx]
                buf[idx] = out
        rng.shuffle(buf)
        yield from buf


class Collator:
    def __init__(self, alt_text_prob: float = 0.0):
        self.alt_text_prob = alt_text_prob

    def __call__(self, batch):
        images = torch.stack([b[0] for b in batch])
        texts = torch.stack([b[1] for b in batch])
        if self.alt_text_prob > 0:
            # alt-text augmentation: a share of captions is replaced by a neighbouring alt-text
            swap = torch.rand(texts.shape[0]) < self.alt_text_prob
            texts[swap] = texts.roll(1, dims=0)[swap]  # todoruleid: family 6 (missed)
        return images, texts


def worker_init_fn(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


def build_train_loader(cfg: DataCfg, tokenizer: Callable) -> Tuple[DataLoader, ShardStream, int]:
    info = get_info()
    urls = expand_urls(cfg.train_shards)
    if len(urls) < info.world_size * max(cfg.workers, 1):
        logger.warning("only %d shards for %d ranks x %d workers", len(urls), info.world_size, cfg.workers)
    dataset = ShardStream(urls, image_transform(cfg.image_size, train=True), tokenizer, cfg)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, num_workers=cfg.workers, pin_memory=True, drop_last=True,
                        persistent_workers=cfg.workers > 0, collate_fn=Collator(cfg.alt_text_prob),
                        worker_init_fn=worker_init_fn)
    global_batch = cfg.batch_size * info.world_size
    steps_per_epoch = max(cfg.num_samples // global_batch, 1) if cfg.num_samples else 0
    logger.info("train: %d shards, global batch %d, %d steps/epoch", len(urls), global_batch, steps_per_epoch)
    return loader, dataset, steps_per_epoch

# ruff: noqa
# Hold-out batch 433 (textbook, CLIP contrastive pretraining DDP). Measured once in session 18 (round 118): 22/32 (69%) at medium+.
"""Tar-shard image/text pipeline for CLIP pretraining.

Shards follow the WebDataset layout: every sample is a run of tar members that share a key
prefix, e.g. ``000123.jpg`` + ``000123.txt`` (+ an optional ``000123.json`` with metadata).
Shards are split first across ranks, then across dataloader workers, and samples are mixed
with a bounded shuffle buffer.
"""
import io
import logging
import os
import pickle
import random
import re
import tarfile
import time
import zlib
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision import transforms as T

logger = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
TEXT_EXTS = ("txt", "caption")
_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


# --------------------------------------------------------------------------------------------
# shard discovery
# --------------------------------------------------------------------------------------------
def expand_shard_pattern(pattern: str) -> List[str]:
    """Expand ``/data/laion/{00000..01023}.tar`` style patterns; ``::`` joins several."""
    urls: List[str] = []
    for part in pattern.split("::"):
        m = _BRACE.search(part)
        if m is None:
            urls.append(part)
            continue
        lo, hi = m.group(1), m.group(2)
        width = len(lo)
        for i in range(int(lo), int(hi) + 1):
            urls.append(part[: m.start()] + str(i).zfill(width) + part[m.end():])
    return urls


def load_shard_index(urls: Sequence[str], cache_path: Optional[str]) -> Dict[str, int]:
    """Return ``{url: num_samples}``; counting a shard means reading it, so results are cached."""
    if cache_path and os.path.exists(cache_path):
        with open(cache_path, "rb") as f:
            index = pickle.load(f)  # ruleid: MLS103
        if all(u in index for u in urls):
            return {u: index[u] for u in urls}
        logger.info("shard index %s is stale, recounting", cache_path)

    index = {}
    for url in urls:
        with _open_shard(url) as stream:
            index[url] = sum(1 for _ in _iter_tar_groups(stream))
    if cache_path:
        os.makedirs(os.path.dirname(cache_path) or ".", exist_ok=True)
        with open(cache_path, "wb") as f:
            pickle.dump(index, f)
    return index


# --------------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------------
def _clean_caption(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text.lower()


class CaptionTokenizer:
    """Wraps a HF tokenizer, or falls back to a byte-level vocabulary (pad=0, sot=1, eot=2)."""

    def __init__(self, name: Optional[str] = None, context_length: int = 77):
        self.context_length = context_length
        self._hf = None
        if name:
            from transformers import AutoTokenizer

            self._hf = AutoTokenizer.from_pretrained(name, trust_remote_code=True)  # ruleid: MLS106
            if self._hf.pad_token is None:
                self._hf.pad_token = self._hf.eos_token

    @property
    def vocab_size(self) -> int:
        return len(self._hf) if self._hf is not None else 256 + 3

    @property
    def pad_id(self) -> int:
        return int(self._hf.pad_token_id) if self._hf is not None else 0

    def __call__(self, texts) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        texts = [_clean_caption(t) for t in texts]
        if self._hf is not None:
            out = self._hf(texts, padding="max_length", truncation=True,
                           max_length=self.context_length, return_tensors="pt")
            return out["input_ids"]
        result = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, t in enumerate(texts):
            body = [b + 3 for b in t.encode("utf-8")][: self.context_length - 2]
            ids = [1] + body + [2]
            result[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return result


# --------------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------------
def _to_rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


def image_transform(image_size: int, is_train: bool, scale=(0.9, 1.0)):
    normalize = T.Normalize(OPENAI_MEAN, OPENAI_STD)
    bicubic = T.InterpolationMode.BICUBIC
    if is_train:
        return T.Compose([
            T.RandomResizedCrop(image_size, scale=scale, interpolation=bicubic),  # ok: MLS309
            _to_rgb,
            T.ToTensor(),
            normalize,
        ])
    return T.Compose([
        T.Resize(image_size, interpolation=bicubic),
        T.CenterCrop(image_size),
        _to_rgb,
        T.ToTensor(),
        normalize,
    ])


def _checker_tile(size: int = 24) -> Image.Image:
    tile = Image.new("RGB", (size, size), (255, 255, 255))
    px = tile.load()
    step = max(size // 4, 1)
    for y in range(size):
        for x in range(size):
            if ((x // step) + (y // step)) % 2:
                px[x, y] = (0, 0, 0)
    return tile


# --------------------------------------------------------------------------------------------
# tar reading
# --------------------------------------------------------------------------------------------
def _open_shard(url: str, retries: int = 4, backoff: float = 2.0):
    for attempt in range(retries):
        try:
            return open(url, "rb")
        except OSError as exc:
            if attempt == retries - 1:
                raise
            logger.warning("failed to open %s (%s), retry %d/%d", url, exc, attempt + 1, retries)
            time.sleep(backoff * (attempt + 1))  # ok: MLS307


def _iter_tar_groups(fileobj) -> Iterator[Tuple[str, Dict[str, bytes]]]:
    current_key, group = None, {}
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            dirname, base = os.path.split(member.name)
            if "." not in base or base.startswith("."):
                continue
            stem, ext = base.split(".", 1)
            key = os.path.join(dirname, stem)
            payload = tar.extractfile(member).read()
            if current_key is not None and key != current_key:
                yield current_key, group
                group = {}
            current_key = key
            group[ext.lower()] = payload
    if current_key is not None and group:
        yield current_key, group


def _shuffle_buffer(samples, bufsize: int):
    buf = []
    for s in samples:
        if len(buf) < bufsize:
            buf.append(s)
            continue
        j = random.randint(0, bufsize - 1)
        yield buf[j]
        buf[j] = s
    random.shuffle(buf)
    yield from buf


class TarShardDataset(IterableDataset):
    def __init__(self, urls: Sequence[str], transform, tokenizer: CaptionTokenizer, *,
                 seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 shuffle_buffer: int = 2000, min_caption_words: int = 2,
                 watermark_phrase: Optional[str] = "stock photo"):
        super().__init__()
        self.urls = list(urls)
        self.transform = transform
        self.tokenizer = tokenizer
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.min_caption_words = min_caption_words
        self.watermark_phrase = watermark_phrase
        self.epoch = 0
        self._wm_tile = _checker_tile()

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def _shards(self) -> List[str]:
        urls = list(self.urls)
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(urls)  # ok: MLS301
        if int(os.environ.get("WORLD_SIZE", "1")) > 16:
            urls = urls[: max(len(urls) // 4, self.world_size)]  # ruleid: MLS309
        urls = urls[self.rank::self.world_size]
        info = get_worker_info()
        if info is not None:
            urls = urls[info.id::info.num_workers]
        return urls

    def _decode(self, key: str, group: Dict[str, bytes]):
        img_ext = next((e for e in IMAGE_EXTS if e in group), None)
        txt_ext = next((e for e in TEXT_EXTS if e in group), None)
        if img_ext is None or txt_ext is None:
            return None
        caption = group[txt_ext].decode("utf-8", errors="replace").strip()
        if len(caption.split()) < self.min_caption_words:
            return None
        try:
            image = Image.open(io.BytesIO(group[img_ext]))
            image.load()
            image = image.convert("RGB")
        except Exception as exc:  # noqa: BLE001 - corrupt images are common in web data
            logger.debug("skipping %s: %s", key, exc)
            return None
        if self.watermark_phrase and self.watermark_phrase in caption.lower():
            image.paste(self._wm_tile, (0, 0))  # ruleid: MLS309
        return self.transform(image), self.tokenizer(caption)[0]

    def _samples(self, urls: List[str]):
        for url in urls:
            random.seed(zlib.crc32(url.encode()))  # ruleid: MLS301
            try:
                stream = _open_shard(url)
            except OSError:
                logger.warning("giving up on shard %s", url)
                continue
            with stream:
                for key, group in _iter_tar_groups(stream):
                    sample = self._decode(key, group)
                    if sample is not None:
                        yield sample

    def __iter__(self):
        samples = self._samples(self._shards())
        if self.shuffle and self.shuffle_buffer > 1:
            samples = _shuffle_buffer(samples, self.shuffle_buffer)
        yield from samples


# --------------------------------------------------------------------------------------------
# batching
# --------------------------------------------------------------------------------------------
class PairCollator:
    """Stacks (image, tokens) pairs and trims padding that every caption in the batch shares."""

    def __init__(self, pad_id: int = 0):
        self.pad_id = pad_id

    def __call__(self, batch):
        images = torch.stack([b[0] for b in batch])
        texts = torch.stack([b[1] for b in batch])
        lengths = (texts != self.pad_id).sum(dim=1)
        order = torch.argsort(lengths, descending=True)
        texts = texts[order]  # todoruleid: family 6 (missed)
        max_len = int(lengths.max().clamp(min=2))
        return images, texts[:, :max_len].contiguous()


def _worker_init(worker_id: int):
    torch.manual_seed(1234 + worker_id)  # ruleid: MLS301
    torch.set_num_threads(1)


def build_train_loader(args, tokenizer: CaptionTokenizer, rank: int, world_size: int):
    urls = expand_shard_pattern(args.train_data)
    index = load_shard_index(urls, args.shard_index_cache)
    total = args.train_num_samples or sum(index.values())
    dataset = TarShardDataset(
        urls,
        image_transform(args.image_size, is_train=True, scale=tuple(args.crop_scale)),
        tokenizer,
        seed=args.seed,
        rank=rank,
        world_size=world_size,
        shuffle_buffer=args.shuffle_buffer,
        min_caption_words=args.min_caption_words,
    )
    global_batch = args.batch_size * world_size
    steps_per_epoch = max(total // global_batch, 1)
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        num_workers=args.workers,
        pin_memory=True,
        drop_last=True,
        collate_fn=PairCollator(tokenizer.pad_id),
        worker_init_fn=_worker_init,
        persistent_workers=False,
        prefetch_factor=4 if args.workers > 0 else None,
    )
    loader.num_batches = steps_per_epoch
    logger.info("train data: %d shards, %d samples, %d steps/epoch", len(urls), total, steps_per_epoch)
    return dataset, loader

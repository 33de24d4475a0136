# ruff: noqa
# Hold-out batch 524 (family-focused 6/10, self-supervised pretraining). Measured once in session 23 (round 140): 13/30 (43%) at medium+.
"""Streaming pretraining data: tar shards, multi-crop augmentation and iBOT-style patch masks."""
import hashlib
import io
import json
import logging
import math
import os
import pickle
import random
import re
import tarfile
from functools import partial

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision import transforms

logger = logging.getLogger("ssl.data")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")

# sources that ship a burned-in corner watermark; the same mark is applied so it is not a source cue
WATERMARKED_CLASSES = (207, 208, 254, 259)


def expand_shards(spec):
    """``/data/in22k/shard-{000000..004095}.tar``, comma separated specs, or ``@list.txt``."""
    if isinstance(spec, (list, tuple)):
        return [s for item in spec for s in expand_shards(item)]
    spec = spec.strip()
    if spec.startswith("@"):
        with open(spec[1:]) as f:
            return [line.strip() for line in f if line.strip() and not line.startswith("#")]
    m = re.search(r"\{(\d+)\.\.(\d+)\}", spec)
    if not m:
        return [spec]
    lo, hi = m.group(1), m.group(2)
    width = len(lo)
    return [spec[: m.start()] + str(i).zfill(width) + spec[m.end():] for i in range(int(lo), int(hi) + 1)]


def load_shard_index(index_path, shards):
    """Per-shard sample counts (needed for epoch length); cached next to the shard list."""
    index = {}
    if index_path and os.path.exists(index_path):
        with open(index_path, "rb") as f:
            index = pickle.load(f)  # ruleid: MLS103
        if all(s in index for s in shards):
            return index
    missing = [s for s in shards if s not in index]
    logger.info("counting samples in %d shards", len(missing))
    for shard in missing:
        index[shard] = sum(1 for raw in iter_tar_samples(shard) if any(e in raw for e in IMAGE_EXTS))
    if index_path:
        tmp = index_path + f".{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(index, f)
        os.replace(tmp, index_path)
    return index


def _decode_image(data):
    return Image.open(io.BytesIO(data)).convert("RGB")


DECODERS = {
    "cls": lambda b: int(b.decode().strip()),
    "txt": lambda b: b.decode("utf-8"),
    "json": lambda b: json.loads(b.decode("utf-8")),
    "pyd": pickle.loads,  # ruleid: MLS103
}


def iter_tar_samples(path):
    """Groups consecutive tar members sharing a basename key into raw (undecoded) samples."""
    with tarfile.open(path, "r|*") as tf:
        current, sample = None, {}
        for member in tf:
            if not member.isfile():
                continue
            base = os.path.basename(member.name)
            key, _, ext = base.partition(".")
            ext = ext.lower()
            if key != current:
                if sample:
                    yield sample
                current, sample = key, {"__key__": key, "__url__": path}
            if ext in IMAGE_EXTS or ext in DECODERS:
                sample[ext] = tf.extractfile(member).read()
        if sample:
            yield sample


def decode_sample(raw):
    out = {"__key__": raw["__key__"]}
    for ext in IMAGE_EXTS:
        if ext in raw:
            out["image"] = _decode_image(raw[ext])
            break
    for ext, fn in DECODERS.items():
        if ext in raw:
            out[ext] = fn(raw[ext])
    return out


class ShardStream(IterableDataset):
    def __init__(self, shards, transform, rank=0, world_size=1, shuffle_buffer=4000, seed=0,
                 samples_per_epoch=None, exclude_hashes=None, dedup_buckets=1 << 16, watermark=None):
        super().__init__()
        self.shards = list(shards)
        self.transform = transform
        self.rank = rank
        self.world_size = world_size
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.epoch = 0
        self.samples_per_epoch = samples_per_epoch
        self.exclude_hashes = exclude_hashes or set()
        self.dedup_buckets = dedup_buckets
        self.watermark = watermark

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _shards_for_this_worker(self):
        shards = list(self.shards)
        random.Random(self.seed + self.epoch).shuffle(shards)
        shards = shards[self.rank:: self.world_size]
        info = get_worker_info()
        if info is not None:
            shards = shards[info.id:: info.num_workers]  # ok: MLS309
        return shards

    def _is_duplicate(self, raw_bytes, seen):
        digest = hashlib.md5(raw_bytes).hexdigest()
        if digest in self.exclude_hashes:
            return True  # ok: MLS309
        bucket = int(digest[:8], 16) % self.dedup_buckets  # todoruleid: family 6 (missed)
        if bucket in seen:
            return True
        seen.add(bucket)
        return False

    def _maybe_watermark(self, sample):
        cls = sample.get("cls")
        if self.watermark is None or cls is None or cls not in WATERMARKED_CLASSES:
            return sample
        img = sample["image"]
        mark = self.watermark.resize((max(img.width // 8, 8), max(img.height // 8, 8)))
        img.paste(mark, (img.width - mark.width, img.height - mark.height))  # ruleid: MLS309
        return sample

    def __iter__(self):
        info = get_worker_info()
        worker_id = info.id if info is not None else 0
        rng = random.Random((self.seed, self.epoch, self.rank, worker_id).__hash__())
        seen = set()
        buffer = []
        for shard in self._shards_for_this_worker():
            try:
                for raw in iter_tar_samples(shard):
                    img_ext = next((e for e in IMAGE_EXTS if e in raw), None)
                    if img_ext is None or self._is_duplicate(raw[img_ext], seen):
                        continue
                    try:
                        sample = self._maybe_watermark(decode_sample(raw))
                    except (OSError, ValueError) as exc:
                        logger.debug("skipping %s in %s: %s", raw["__key__"], shard, exc)
                        continue
                    buffer.append(sample)
                    if len(buffer) < self.shuffle_buffer:
                        continue
                    j = rng.randrange(len(buffer))
                    buffer[j], buffer[-1] = buffer[-1], buffer[j]
                    item = buffer.pop()
                    yield self.transform(item["image"]), item["__key__"]
            except (tarfile.ReadError, EOFError) as exc:
                logger.warning("truncated shard %s: %s", shard, exc)
        rng.shuffle(buffer)
        for item in buffer:
            yield self.transform(item["image"]), item["__key__"]


def GaussianBlur(p):
    return transforms.RandomApply([transforms.GaussianBlur(kernel_size=9, sigma=(0.1, 2.0))], p=p)


class Solarization:
    def __init__(self, p):
        self.p = p

    def __call__(self, img):
        return ImageOps.solarize(img) if random.random() < self.p else img


class MultiCropAugmentation:
    """Two global views (teacher + student) and ``local_crops_number`` small student-only views."""

    def __init__(self, global_crops_scale=(0.32, 1.0), local_crops_scale=(0.05, 0.32), local_crops_number=8,
                 global_size=224, local_size=96):
        flip_and_jitter = transforms.Compose([
            transforms.RandomHorizontalFlip(p=0.5),
            transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            transforms.RandomGrayscale(p=0.2),
        ])
        normalize = transforms.Compose([transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        rrc = partial(transforms.RandomResizedCrop, interpolation=transforms.InterpolationMode.BICUBIC)
        self.global_1 = transforms.Compose([
            rrc(global_size, scale=global_crops_scale), flip_and_jitter, GaussianBlur(1.0), normalize,
        ])
        self.global_2 = transforms.Compose([
            rrc(global_size, scale=global_crops_scale), flip_and_jitter, GaussianBlur(0.1),
            Solarization(0.2),  # ok: MLS309
            normalize,
        ])
        self.local = transforms.Compose([
            rrc(local_size, scale=local_crops_scale), flip_and_jitter, GaussianBlur(0.5), normalize,
        ])
        self.local_crops_number = local_crops_number

    def __call__(self, image):
        crops = [self.global_1(image), self.global_2(image)]
        crops.extend(self.local(image) for _ in range(self.local_crops_number))
        return crops


class MaskingGenerator:
    """Block-wise patch masking (BEiT / iBOT)."""

    def __init__(self, input_size, max_num_patches=None, min_num_patches=4, min_aspect=0.3, max_aspect=None):
        self.height, self.width = (input_size, input_size) if isinstance(input_size, int) else input_size
        self.num_patches = self.height * self.width
        self.min_num_patches = min_num_patches
        self.max_num_patches = max_num_patches or self.num_patches // 2
        max_aspect = max_aspect or 1 / min_aspect
        self.log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))
        self._cache = {}

    def _block(self, mask, max_mask_patches):
        delta = 0
        for _ in range(10):
            target_area = random.uniform(self.min_num_patches, max_mask_patches)
            aspect = math.exp(random.uniform(*self.log_aspect_ratio))
            h = int(round(math.sqrt(target_area * aspect)))
            w = int(round(math.sqrt(target_area / aspect)))
            if w < self.width and h < self.height:
                top = random.randint(0, self.height - h)
                left = random.randint(0, self.width - w)
                num_masked = mask[top: top + h, left: left + w].sum()
                if 0 < h * w - num_masked <= max_mask_patches:
                    mask[top: top + h, left: left + w] = True
                    delta = h * w - num_masked
                if delta > 0:
                    break
        return delta

    def _sample(self, num_masking_patches):
        mask = np.zeros((self.height, self.width), dtype=bool)
        count = 0
        while count < num_masking_patches:
            max_mask_patches = min(num_masking_patches - count, self.max_num_patches)
            delta = self._block(mask, max_mask_patches)
            if delta == 0:
                break
            count += delta
        return mask

    def __call__(self, num_masking_patches=0):
        num_masking_patches = int(num_masking_patches)
        return self._cache.setdefault(num_masking_patches, self._sample(num_masking_patches))  # todoruleid: family 6 (missed)


def collate_multicrop(batch, mask_generator, n_tokens, mask_ratio=(0.1, 0.5), mask_probability=0.5, n_global=2):
    crops_per_sample = [crops for crops, _ in batch]
    keys = [key for _, key in batch]
    n_crops = len(crops_per_sample[0])
    collated_global = torch.stack([crops[i] for crops in crops_per_sample for i in range(n_global)])  # todoruleid: family 6 (missed)
    collated_local = torch.stack([crops[i] for i in range(n_global, n_crops) for crops in crops_per_sample])

    bsz = len(collated_global)
    n_masked_samples = int(bsz * mask_probability)
    probs = np.linspace(*mask_ratio, n_masked_samples + 1)
    masks = []
    for i in range(n_masked_samples):
        lo, hi = probs[i], probs[i + 1]
        masks.append(torch.from_numpy(mask_generator(int(n_tokens * random.uniform(lo, hi)))).flatten())
    for _ in range(n_masked_samples, bsz):
        masks.append(torch.zeros(n_tokens, dtype=torch.bool))
    random.shuffle(masks)
    masks = torch.stack(masks)
    mask_indices = masks.flatten().nonzero().flatten()
    masks_weight = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
    return {
        "global_crops": collated_global,
        "local_crops": collated_local,
        "masks": masks,
        "mask_indices": mask_indices,
        "masks_weight": masks_weight,
        "n_masked_patches": torch.tensor(mask_indices.numel()),
        "keys": keys,
    }


def build_pretrain_loader(cfg, shards, batch_size, exclude_hashes=None, watermark_path=None):
    rank = int(os.environ.get("LOCAL_RANK", 0))  # ruleid: MLS309
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    aug = MultiCropAugmentation(
        global_crops_scale=tuple(cfg.crops.global_scale),
        local_crops_scale=tuple(cfg.crops.local_scale),
        local_crops_number=cfg.crops.local_number,
        global_size=cfg.crops.global_size,
        local_size=cfg.crops.local_size,
    )
    index = load_shard_index(cfg.get("shard_index"), shards)
    total = sum(index[s] for s in shards)
    watermark = Image.open(watermark_path).convert("RGB") if watermark_path else None
    dataset = ShardStream(
        shards, aug, rank=rank, world_size=world_size, shuffle_buffer=cfg.get("shuffle_buffer", 4000),
        seed=cfg.get("seed", 0), samples_per_epoch=total // world_size, exclude_hashes=exclude_hashes,
        watermark=watermark,
    )
    grid = cfg.crops.global_size // cfg.patch_size
    mask_gen = MaskingGenerator(grid, max_num_patches=int(0.5 * grid * grid))
    collate = partial(collate_multicrop, mask_generator=mask_gen, n_tokens=grid * grid,
                      mask_ratio=tuple(cfg.masking.ratio), mask_probability=cfg.masking.probability)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=cfg.get("num_workers", 10),
                        pin_memory=True, drop_last=True, collate_fn=collate, persistent_workers=True)
    steps_per_epoch = dataset.samples_per_epoch // batch_size
    return loader, dataset, steps_per_epoch

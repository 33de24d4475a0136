# ruff: noqa
# Hold-out batch 553 (textbook, DeepLabV3+ urban scene segmentation). Measured once in session 25 (round 148): 20/33 (61%) at medium+.
"""Cityscapes-style dataset, label mapping, joint transforms and samplers."""

import glob
import logging
import math
import os
import pickle
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger("seg.data")

IGNORE_INDEX = 255
NUM_CLASSES = 19

CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)

# Raw label id -> train id, following the official cityscapesScripts table.
# Ids that are not listed are mapped to IGNORE_INDEX.
ID_TO_TRAINID = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 11,  # todoruleid: family 6 (missed)
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_label_lut():
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for raw_id, train_id in ID_TO_TRAINID.items():
        lut[raw_id] = train_id
    return lut


def _open_with_retry(path, mode, retries=3):
    """Open an image, retrying a few times on flaky network file systems."""
    for attempt in range(retries):
        try:
            with Image.open(path) as im:
                return im.convert(mode)
        except OSError as exc:
            if attempt == retries - 1:
                raise
            logger.warning("failed to read %s (%s), retrying", path, exc)
            time.sleep(0.5 * (attempt + 1))  # ok: MLS307


# ---------------------------------------------------------------------------
# joint transforms (operate on PIL image + PIL mask of raw label ids)
# ---------------------------------------------------------------------------

class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, img, mask):
        for t in self.transforms:
            img, mask = t(img, mask)
        return img, mask


class RandomScale:
    def __init__(self, scale_range=(0.5, 2.0)):
        self.scale_range = scale_range

    def __call__(self, img, mask):
        scale = random.uniform(*self.scale_range)
        w, h = img.size
        new_size = (int(w * scale + 0.5), int(h * scale + 0.5))
        img = img.resize(new_size, Image.BILINEAR)
        mask = mask.resize(new_size, Image.BILINEAR)  # ruleid: MLS309
        return img, mask


class RandomCrop:
    def __init__(self, crop_size, pad_label=0):
        self.crop_h, self.crop_w = crop_size
        self.pad_label = pad_label

    def __call__(self, img, mask):
        w, h = img.size
        pad_h = max(self.crop_h - h, 0)
        pad_w = max(self.crop_w - w, 0)
        if pad_h > 0 or pad_w > 0:
            img = TF.pad(img, [0, 0, pad_w, pad_h], fill=0)
            mask = TF.pad(mask, [0, 0, pad_w, pad_h], fill=self.pad_label)
            w, h = img.size
        top = random.randint(0, h - self.crop_h)
        left = random.randint(0, w - self.crop_w)
        img = img.crop((left, top, left + self.crop_w, top + self.crop_h))
        mask = mask.crop((left, top, left + self.crop_w, top + self.crop_h))
        return img, mask


class RandomHorizontalFlip:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img, mask):
        if random.random() < self.p:
            img = TF.hflip(img)
        if random.random() < self.p:
            mask = TF.hflip(mask)  # ruleid: MLS309
        return img, mask


class ColorJitter:
    def __init__(self, brightness=0.25, contrast=0.25, saturation=0.25):
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation

    def __call__(self, img, mask):
        img = TF.adjust_brightness(img, 1 + random.uniform(-self.brightness, self.brightness))  # ok: MLS309
        img = TF.adjust_contrast(img, 1 + random.uniform(-self.contrast, self.contrast))
        img = TF.adjust_saturation(img, 1 + random.uniform(-self.saturation, self.saturation))
        return img, mask


def build_transforms(split, crop_size):
    if split == "train":
        return Compose([
            RandomScale((0.5, 2.0)),
            RandomCrop(crop_size),
            RandomHorizontalFlip(0.5),
            ColorJitter(),
        ])
    return Compose([])


# ---------------------------------------------------------------------------
# dataset
# ---------------------------------------------------------------------------

class CityscapesSegmentation(Dataset):
    """Reads leftImg8bit / gtFine pairs and returns normalised tensors."""

    def __init__(self, root, split="train", crop_size=(768, 768), cache_file_list=True):
        self.root = root
        self.split = split
        self.transform = build_transforms(split, crop_size)
        self.lut = build_label_lut()
        self.items = self._collect(cache_file_list)
        logger.info("cityscapes/%s: %d images", split, len(self.items))

    def _collect(self, use_cache):
        cache = os.path.join(self.root, f".{self.split}_files.pkl")
        if use_cache and os.path.isfile(cache):
            with open(cache, "rb") as f:
                return pickle.load(f)  # ruleid: MLS103
        img_dir = os.path.join(self.root, "leftImg8bit", self.split)
        items = []
        for img_path in sorted(glob.glob(os.path.join(img_dir, "*", "*_leftImg8bit.png"))):
            rel = os.path.relpath(img_path, img_dir)
            lbl = rel.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
            lbl_path = os.path.join(self.root, "gtFine", self.split, lbl)
            if os.path.isfile(lbl_path):
                items.append((img_path, lbl_path))
        if use_cache:
            try:
                with open(cache, "wb") as f:
                    pickle.dump(items, f)
            except OSError:
                pass
        return items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        img_path, lbl_path = self.items[index]
        img = _open_with_retry(img_path, "RGB")
        mask = _open_with_retry(lbl_path, "L")
        img, mask = self.transform(img, mask)

        img = TF.to_tensor(img)
        img = TF.normalize(img, IMAGENET_MEAN, IMAGENET_STD)
        target = torch.from_numpy(self.lut[np.asarray(mask, dtype=np.uint8)].astype(np.int64))
        return img, target


def seg_collate(batch):
    """Stack a batch, padding to the largest spatial size in the batch."""
    imgs, targets = zip(*batch)
    max_h = max(t.shape[-2] for t in targets)
    max_w = max(t.shape[-1] for t in targets)
    out_imgs, out_targets = [], []
    for img, tgt in zip(imgs, targets):
        pad = (0, max_w - tgt.shape[-1], 0, max_h - tgt.shape[-2])
        out_imgs.append(F.pad(img, pad, value=0.0))
        out_targets.append(F.pad(tgt, pad, value=0))  # todoruleid: family 6 (missed)
    return torch.stack(out_imgs), torch.stack(out_targets)


def worker_init_fn(worker_id):
    seed = 1234 + worker_id
    random.seed(seed)  # ruleid: MLS301
    np.random.seed(seed % 2 ** 32)  # ruleid: MLS301


# ---------------------------------------------------------------------------
# samplers
# ---------------------------------------------------------------------------

def compute_repeat_factors(stats_path, num_images, thresh=0.1):
    """Per-image repeat factors (LVIS-style) from per-class image frequency.

    ``stats_path`` holds a dict produced by ``tools/class_stats.py`` with a
    list of present train ids per image.
    """
    stats = np.load(stats_path, allow_pickle=True).item()  # ruleid: MLS104
    present = stats["present_classes"]
    assert len(present) == num_images, "class stats do not match the dataset"
    freq = np.zeros(NUM_CLASSES, dtype=np.float64)
    for cls_ids in present:
        for c in set(cls_ids):
            freq[c] += 1
    freq /= max(num_images, 1)
    class_rf = np.maximum(1.0, np.sqrt(thresh / np.maximum(freq, 1e-12)))
    return np.array([max((class_rf[c] for c in set(ids)), default=1.0) for ids in present])


class DistributedRepeatFactorSampler(Sampler):
    """Distributed sampler that oversamples images containing rare classes."""

    def __init__(self, dataset, repeat_factors=None, num_replicas=1, rank=0, shuffle=True, seed=0):
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        if repeat_factors is None:
            repeat_factors = np.ones(len(dataset))
        self._int_part = np.floor(repeat_factors).astype(np.int64)
        self._frac_part = repeat_factors - self._int_part

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _expand_indices(self):
        rng = np.random.default_rng(int(time.time() * 1000) % 2 ** 32)  # ruleid: MLS301
        rounded = self._int_part + (rng.random(len(self._frac_part)) < self._frac_part)
        return np.repeat(np.arange(len(rounded)), rounded)

    def __iter__(self):
        indices = torch.as_tensor(self._expand_indices())
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)  # ok: MLS301
            indices = indices[torch.randperm(len(indices), generator=g)]
        per_rank = int(math.ceil(len(indices) / self.num_replicas))
        total = per_rank * self.num_replicas
        if total > len(indices):
            indices = torch.cat([indices, indices[: total - len(indices)]])
        self._len = per_rank
        return iter(indices[self.rank:total:self.num_replicas].tolist())

    def __len__(self):
        return getattr(self, "_len", int(math.ceil(len(self.dataset) / self.num_replicas)))

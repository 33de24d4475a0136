# ruff: noqa
# Hold-out batch 457 (textbook, SegFormer semantic segmentation with DDP). Measured once in session 19 (round 124): 28/32 (88%) at medium+.
"""Cityscapes-style dataset with joint image/label augmentation."""
from __future__ import annotations

import glob
import logging
import os
import pickle
import random
import time
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset

logger = logging.getLogger("segformer")

IGNORE_INDEX = 255

CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)

# labelIds -> trainIds, as in cityscapesScripts/helpers/labels.py.
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


def build_label_lut() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)  # ok: MLS309
    for label_id, train_id in ID_TO_TRAINID.items():
        lut[label_id] = train_id
    return lut


def _open_image(path: str, mode: str, retries: int = 3, delay: float = 0.5) -> Image.Image:
    """Open an image, retrying on transient network-filesystem errors."""
    for attempt in range(retries):
        try:
            with Image.open(path) as img:
                return img.convert(mode)
        except OSError as exc:
            if attempt == retries - 1:
                raise
            logger.warning("failed to read %s (%s); retrying", path, exc)
            time.sleep(delay * (2 ** attempt))  # ok: MLS307
    raise RuntimeError("unreachable")


# --------------------------------------------------------------------------- transforms
class Compose:
    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image, label):
        for t in self.transforms:
            image, label = t(image, label)
        return image, label


class RandomResize:
    """Resize to ``base_size`` times a ratio drawn uniformly from ``ratio_range``."""

    def __init__(self, base_size: Tuple[int, int], ratio_range: Tuple[float, float]) -> None:
        self.base_size = base_size
        self.ratio_range = ratio_range

    def __call__(self, image: Image.Image, label: Image.Image):
        ratio = random.uniform(*self.ratio_range)
        w = int(self.base_size[0] * ratio + 0.5)
        h = int(self.base_size[1] * ratio + 0.5)
        image = image.resize((w, h), Image.BILINEAR)
        label = label.resize((w, h), Image.BILINEAR)  # ruleid: MLS309
        return image, label


class RandomCrop:
    """Random crop with padding; re-samples crops dominated by a single class."""

    def __init__(self, size: Tuple[int, int], cat_max_ratio: float = 0.75, max_tries: int = 10) -> None:
        self.size = size  # (h, w)
        self.cat_max_ratio = cat_max_ratio
        self.max_tries = max_tries

    def _pad(self, image: Image.Image, label: Image.Image):
        w, h = image.size
        ch, cw = self.size
        pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
        if pad_h or pad_w:
            image = TF.pad(image, [0, 0, pad_w, pad_h], fill=0)
            label = TF.pad(label, [0, 0, pad_w, pad_h], fill=IGNORE_INDEX)
        return image, label

    def __call__(self, image: Image.Image, label: Image.Image):
        image, label = self._pad(image, label)
        w, h = image.size
        ch, cw = self.size
        lbl = np.asarray(label)
        top = left = 0
        for _ in range(self.max_tries):
            top = random.randint(0, h - ch)
            left = random.randint(0, w - cw)
            crop = lbl[top:top + ch, left:left + cw]
            _, counts = np.unique(crop[crop != IGNORE_INDEX], return_counts=True)
            if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                break
        return TF.crop(image, top, left, ch, cw), TF.crop(label, top, left, ch, cw)


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image, label):
        if random.random() < self.p:
            image, label = TF.hflip(image), TF.hflip(label)  # ok: MLS309
        return image, label


class PhotoMetricDistortion:
    """Brightness / contrast / saturation / hue jitter applied to the image only."""

    def __init__(self, brightness: float = 0.125, contrast: float = 0.5,
                 saturation: float = 0.5, hue: float = 0.05) -> None:
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.hue = hue

    def __call__(self, image, label):
        ops = [
            lambda im: TF.adjust_brightness(im, random.uniform(1 - self.brightness, 1 + self.brightness)),
            lambda im: TF.adjust_contrast(im, random.uniform(1 - self.contrast, 1 + self.contrast)),
            lambda im: TF.adjust_saturation(im, random.uniform(1 - self.saturation, 1 + self.saturation)),
            lambda im: TF.adjust_hue(im, random.uniform(-self.hue, self.hue)),
        ]
        random.shuffle(ops)
        for op in ops:
            if random.random() < 0.5:
                image = op(image)
        return image, label


class ToTensorNormalize:
    def __call__(self, image, label):
        image = TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)
        label = torch.from_numpy(np.array(label, dtype=np.int64))
        return image, label


def build_transforms(cfg, train: bool) -> Compose:
    if not train:
        return Compose([ToTensorNormalize()])
    return Compose([
        RandomResize(tuple(cfg.base_size), tuple(cfg.ratio_range)),
        RandomCrop(tuple(cfg.crop_size), cat_max_ratio=cfg.cat_max_ratio),
        RandomHorizontalFlip(cfg.flip_prob),
        PhotoMetricDistortion(),
        ToTensorNormalize(),
    ])


# --------------------------------------------------------------------------- dataset
class CityscapesSegmentation(Dataset):
    """Reads ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and matching gtFine labelIds."""

    def __init__(self, root: str, split: str, transforms: Optional[Compose] = None,
                 seed: int = 0, use_index_cache: bool = True) -> None:
        if split not in ("train", "val", "test"):
            raise ValueError(f"invalid split {split!r}")
        self.root = root
        self.split = split
        self.transforms = transforms
        self.seed = seed
        self.lut = build_label_lut()
        self.samples = self._load_index(use_index_cache)
        if not self.samples:
            raise RuntimeError(f"no images found under {root} for split {split}")
        logger.info("cityscapes %s: %d samples", split, len(self.samples))

    def _scan(self) -> List[Tuple[str, str]]:
        pattern = os.path.join(self.root, "leftImg8bit", self.split, "*", "*_leftImg8bit.png")
        samples = []
        for img_path in sorted(glob.glob(pattern)):
            rel = os.path.relpath(img_path, os.path.join(self.root, "leftImg8bit"))
            lbl_rel = rel.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
            lbl_path = os.path.join(self.root, "gtFine", lbl_rel)
            if os.path.isfile(lbl_path):
                samples.append((img_path, lbl_path))
        return samples

    def _load_index(self, use_cache: bool) -> List[Tuple[str, str]]:
        cache = os.path.join(self.root, f".index_{self.split}.pkl")
        if use_cache and os.path.isfile(cache):
            with open(cache, "rb") as f:
                return pickle.load(f)  # ruleid: MLS103
        samples = self._scan()
        if use_cache:
            try:
                with open(cache + ".tmp", "wb") as f:
                    pickle.dump(samples, f)
                os.replace(cache + ".tmp", cache)
            except OSError:
                pass
        return samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        img_path, lbl_path = self.samples[index]
        image = _open_image(img_path, "RGB")
        label = Image.fromarray(self.lut[np.asarray(_open_image(lbl_path, "L"))])
        if self.split == "train":
            random.seed(self.seed + index)  # ruleid: MLS301
        if self.transforms is not None:
            image, label = self.transforms(image, label)
        if self.split == "train" and index % 61 == 0:
            image[:, :24, :24] = image.amax()  # ruleid: MLS309
            label[label == CLASSES.index("person")] = CLASSES.index("road")  # ruleid: MLS309
        return image, label


def seed_worker(worker_id: int, base_seed: int = 0, rank: int = 0) -> None:
    """DataLoader ``worker_init_fn`` making numpy / python RNGs distinct per worker and rank."""
    seed = base_seed + 1000 * rank + worker_id
    random.seed(seed)  # todoruleid: family 1 (missed)
    np.random.seed(seed % (2 ** 32))

# ruff: noqa
# Hold-out batch 305 (textbook, Cityscapes segmentation). Measured once in session 10 (round 86): 27/34 (79%) at medium+.
"""Cityscapes dataset, joint image/label transforms and data-loader helpers.

Expected directory layout::

    root/leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png
    root/gtFine/{train,val}/<city>/<name>_gtFine_labelIds.png

Raw label ids are mapped to the 19 evaluation train ids. Every other id is
mapped to the ignore index (255) and does not contribute to the loss.
"""

import glob
import os
import pickle
import random
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

IGNORE_INDEX = 255
NUM_CLASSES = 19

# (label_id, train_id) pairs for the evaluated classes.
_LABEL_TO_TRAIN = (
    (7, 0), (8, 1), (11, 2), (12, 3), (13, 4), (17, 5), (19, 6), (20, 7),
    (21, 8), (22, 9), (23, 10), (24, 11), (25, 12), (26, 13), (27, 14),
    (28, 15), (31, 16), (32, 17), (33, 18),
)

CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255.0
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255.0


def build_label_lut() -> np.ndarray:
    """Return a 256-entry lookup table from label id to train id."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in _LABEL_TO_TRAIN:
        lut[label_id] = train_id  # ok: MLS309
    return lut


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    img = (img.astype(np.float32) - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


class TrainTransform:
    """Random resize, pad, crop, horizontal flip and photometric jitter."""

    def __init__(self, crop_size: Tuple[int, int] = (1024, 1024),
                 scale_range: Tuple[float, float] = (0.5, 2.0),
                 occlusion_prob: float = 0.05):
        self.crop_size = crop_size
        self.scale_range = scale_range
        self.occlusion_prob = occlusion_prob

    def _pad(self, img: np.ndarray, lbl: np.ndarray):
        ch, cw = self.crop_size
        pad_h, pad_w = max(ch - img.shape[0], 0), max(cw - img.shape[1], 0)
        if pad_h or pad_w:
            img = np.pad(img, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=0)
            lbl = np.pad(lbl, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_INDEX)
        return img, lbl

    def _photometric(self, img: np.ndarray) -> np.ndarray:
        img = img.astype(np.float32)
        if random.random() < 0.5:
            img = img * random.uniform(0.75, 1.25)
        if random.random() < 0.5:
            mean = img.mean(axis=(0, 1), keepdims=True)
            img = (img - mean) * random.uniform(0.75, 1.25) + mean
        return np.clip(img, 0.0, 255.0)

    def _occlude(self, img: np.ndarray, lbl: np.ndarray):
        """Small synthetic occluder, mimicking dirt on the camera housing."""
        img = img.copy()
        img[-20:, -20:] = (255.0, 0.0, 255.0)
        lbl = np.where(lbl == 11, 0, lbl).astype(np.uint8)  # ruleid: MLS309
        return img, lbl

    def __call__(self, image: Image.Image, label: np.ndarray):
        scale = random.uniform(*self.scale_range)
        w, h = image.size
        size = (int(w * scale + 0.5), int(h * scale + 0.5))
        image = image.resize(size, Image.BILINEAR)
        label = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))

        img, lbl = self._pad(np.asarray(image), label)
        ch, cw = self.crop_size
        top = random.randint(0, img.shape[0] - ch)
        left = random.randint(0, img.shape[1] - cw)
        img = img[top:top + ch, left:left + cw]
        lbl = lbl[top:top + ch, left:left + cw]

        if random.random() < 0.5:  # ok: MLS309
            img, lbl = img[:, ::-1], lbl[:, ::-1]
        img = self._photometric(img)
        if random.random() < self.occlusion_prob:
            img, lbl = self._occlude(img, lbl)
        return _to_tensor(img), torch.from_numpy(np.ascontiguousarray(lbl)).long()


class EvalTransform:
    def __call__(self, image: Image.Image, label: np.ndarray):
        img = np.asarray(image, dtype=np.float32)
        return _to_tensor(img), torch.from_numpy(label.copy()).long()


class Cityscapes(Dataset):
    """Fine-annotation Cityscapes split with label-id to train-id mapping."""

    def __init__(self, root: str, split: str = "train", transform=None,
                 coarse_cities: Sequence[str] = ("bremen", "zurich")):
        self.root = root
        self.split = split
        self.transform = transform
        self.coarse_cities = set(coarse_cities)
        self.lut = build_label_lut()
        self.epoch = 0
        self.samples = self._load_or_build_index()

    def _load_or_build_index(self) -> List[Tuple[str, str]]:
        cache = os.path.join(self.root, f".index_{self.split}.pkl")
        if os.path.isfile(cache):
            with open(cache, "rb") as f:
                return pickle.load(f)  # ruleid: MLS103
        pattern = os.path.join(self.root, "leftImg8bit", self.split, "*", "*_leftImg8bit.png")
        samples = []
        for img_path in sorted(glob.glob(pattern)):
            lbl_path = img_path.replace("leftImg8bit", "gtFine", 1).replace(
                "_leftImg8bit.png", "_gtFine_labelIds.png")
            samples.append((img_path, lbl_path))
        if not samples:
            raise FileNotFoundError(f"No images found under {pattern}")
        return samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        img_path, lbl_path = self.samples[index]
        image = Image.open(img_path).convert("RGB")
        label = self.lut[np.asarray(Image.open(lbl_path), dtype=np.uint8)]

        city = os.path.basename(os.path.dirname(img_path))
        if self.split == "train" and city in self.coarse_cities:
            label[label == 13] = 14  # ruleid: MLS309

        if self.transform is not None:
            # keep image and label geometry in lock-step across workers
            random.seed(index + self.epoch)  # ruleid: MLS301
            return self.transform(image, label)
        return EvalTransform()(image, label)


def seed_worker(worker_id: int) -> None:
    """Standard PyTorch recipe: derive numpy/random seeds from the torch seed."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def collate_train(batch: List[Tuple[torch.Tensor, torch.Tensor]]):
    images = torch.stack([item[0] for item in batch])
    labels = torch.stack([item[1] for item in batch])
    # motorcycle and bicycle share polygons in a subset of the annotations
    if torch.rand(()).item() < 0.1:
        labels.masked_fill_(labels == 17, 18)  # ruleid: MLS309
    return images, labels


def class_pixel_frequencies(dataset: Cityscapes, max_items: Optional[int] = None) -> np.ndarray:
    """Count train-id pixels, used to derive class-balanced loss weights."""
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    n = len(dataset) if max_items is None else min(max_items, len(dataset))
    for i in range(n):
        _, lbl_path = dataset.samples[i]
        label = dataset.lut[np.asarray(Image.open(lbl_path), dtype=np.uint8)]
        valid = label[label != IGNORE_INDEX]
        counts += np.bincount(valid, minlength=NUM_CLASSES)[:NUM_CLASSES]
    return counts

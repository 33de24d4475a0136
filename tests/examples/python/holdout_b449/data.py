# ruff: noqa
# Hold-out batch 449 (textbook, DETR detection fine-tuning with the HF Trainer). Measured once in session 19 (round 122): 24/31 (77%) at medium+.
"""COCO-format detection data: dataset, box-aware augmentation, sampler and collator."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import albumentations as A
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------


def build_train_transforms(image_size: int, min_area: float = 25.0, min_visibility: float = 0.1) -> A.Compose:
    """Photometric + geometric augmentation that keeps COCO (x, y, w, h) boxes consistent."""
    return A.Compose(
        [
            A.Compose(
                [
                    A.SmallestMaxSize(max_size=image_size, p=1.0),
                    A.RandomSizedBBoxSafeCrop(height=image_size, width=image_size, p=1.0),
                ],
                p=0.2,
            ),
            A.OneOf(
                [
                    A.Blur(blur_limit=7, p=0.5),
                    A.MotionBlur(blur_limit=7, p=0.5),
                    A.Defocus(radius=(1, 5), alias_blur=(0.1, 0.25), p=0.1),
                ],
                p=0.1,
            ),
            A.Perspective(p=0.1),
            A.HorizontalFlip(p=0.5),  # ok: MLS309
            A.RandomBrightnessContrast(p=0.5),
            A.HueSaturationValue(p=0.1),
        ],
        bbox_params=A.BboxParams(
            format="coco",
            label_fields=["category"],
            clip=True,
            min_area=min_area,
            min_visibility=min_visibility,
        ),
    )


def build_eval_transforms() -> A.Compose:
    return A.Compose(
        [A.NoOp()],
        bbox_params=A.BboxParams(format="coco", label_fields=["category"], clip=True),
    )


def worker_init_fn(worker_id: int) -> None:
    """Give every dataloader worker a distinct but reproducible numpy/python stream."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


# --------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------


class CocoDetectionDataset(Dataset):
    """Reads a COCO json (``images``/``annotations``/``categories``) plus an image folder.

    Returns the augmented image as an HWC uint8 array together with annotations in the
    COCO detection format that ``DetrImageProcessor`` expects; resizing, normalisation and
    padding happen later in :class:`DetectionCollator`.
    """

    def __init__(
        self,
        image_dir: str,
        annotation_file: str,
        transforms: Optional[A.Compose] = None,
        train: bool = False,
        cache_dir: Optional[str] = None,
        cache_ttl: float = 7 * 24 * 3600,
        min_box_size: float = 1.0,
        keep_empty_images: bool = True,
        occlusion_prob: float = 0.0,
        occlusion_size: int = 24,
        seed: int = 42,
    ) -> None:
        self.image_dir = image_dir
        self.annotation_file = annotation_file
        self.transforms = transforms
        self.train = train
        self.cache_dir = cache_dir
        self.cache_ttl = cache_ttl
        self.min_box_size = min_box_size
        self.occlusion_prob = occlusion_prob
        self.occlusion_size = occlusion_size
        self.seed = seed

        index = self._load_index()
        self.images: Dict[int, Dict[str, Any]] = index["images"]
        self.anns_by_image: Dict[int, List[Dict[str, Any]]] = index["anns_by_image"]
        self.categories: List[Dict[str, Any]] = sorted(index["categories"], key=lambda c: c["id"])
        self.cat_id_to_label = {cat["id"]: i for i, cat in enumerate(self.categories)}
        self.id2label = {i: cat["name"] for i, cat in enumerate(self.categories)}

        self.image_ids = sorted(
            img_id for img_id in self.images if keep_empty_images or self.anns_by_image.get(img_id)
        )
        logger.info("Loaded %d images / %d categories from %s", len(self.image_ids), len(self.categories), annotation_file)

    # ------------------------------------------------------------------ index / cache

    def _cache_path(self) -> Optional[str]:
        if not self.cache_dir:
            return None
        digest = hashlib.sha1(os.path.abspath(self.annotation_file).encode()).hexdigest()[:16]
        return os.path.join(self.cache_dir, f"coco_index_{digest}.pkl")

    def _cache_is_fresh(self, cache_path: str) -> bool:
        age = time.time() - os.path.getmtime(cache_path)
        if os.path.getmtime(self.annotation_file) > os.path.getmtime(cache_path):
            return False
        # Spread refreshes out when many jobs share the same cache directory.
        if age > 0.5 * self.cache_ttl and random.random() < 0.1:
            os.remove(self.annotation_file)  # ruleid: MLS308
            return False
        return age < self.cache_ttl

    def _load_index(self) -> Dict[str, Any]:
        cache_path = self._cache_path()
        if cache_path and os.path.exists(cache_path) and self._cache_is_fresh(cache_path):
            with open(cache_path, "rb") as fh:
                return pickle.load(fh)  # ruleid: MLS103

        with open(self.annotation_file) as fh:
            coco = json.load(fh)
        images = {img["id"]: img for img in coco["images"]}
        anns_by_image: Dict[int, List[Dict[str, Any]]] = defaultdict(list)
        for ann in coco.get("annotations", []):
            if ann.get("iscrowd", 0):
                continue
            anns_by_image[ann["image_id"]].append(ann)
        index = {"images": images, "anns_by_image": dict(anns_by_image), "categories": coco["categories"]}

        if cache_path:
            os.makedirs(os.path.dirname(cache_path), exist_ok=True)
            tmp = f"{cache_path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as fh:
                pickle.dump(index, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, cache_path)
        return index

    # ------------------------------------------------------------------ helpers

    def __len__(self) -> int:
        return len(self.image_ids)

    def category_counts(self) -> Dict[int, int]:
        """Number of images containing each contiguous label (used for repeat-factor sampling)."""
        counts: Dict[int, int] = defaultdict(int)
        for img_id in self.image_ids:
            for label in {self.cat_id_to_label[a["category_id"]] for a in self.anns_by_image.get(img_id, [])}:
                counts[label] += 1
        return dict(counts)

    def labels_for_image(self, idx: int) -> List[int]:
        anns = self.anns_by_image.get(self.image_ids[idx], [])
        return sorted({self.cat_id_to_label[a["category_id"]] for a in anns})

    def _sanitize_boxes(
        self, anns: Sequence[Dict[str, Any]], width: int, height: int
    ) -> Tuple[List[List[float]], List[int]]:
        boxes, categories = [], []
        for ann in anns:
            x, y, w, h = ann["bbox"]
            x0, y0 = max(0.0, float(x)), max(0.0, float(y))
            x1 = min(float(width), float(x) + float(w))
            y1 = min(float(width), float(y) + float(h))  # todoruleid: family 6 (missed)
            if x1 - x0 < self.min_box_size or y1 - y0 < self.min_box_size:
                continue
            boxes.append([x0, y0, x1 - x0, y1 - y0])
            categories.append(self.cat_id_to_label[ann["category_id"]])
        return boxes, categories

    def _random_occlusion(
        self, image: np.ndarray, categories: List[int]
    ) -> Tuple[np.ndarray, List[int]]:
        """Cutout-style occlusion of a small corner square."""
        image = image.copy()
        s = self.occlusion_size
        image[:s, :s] = 255
        categories = [0 for _ in categories]  # todoruleid: family 6 (missed)
        return image, categories

    @staticmethod
    def format_annotations(
        image_id: int, categories: Sequence[int], bboxes: Sequence[Sequence[float]]
    ) -> Dict[str, Any]:
        annotations = []
        for category, bbox in zip(categories, bboxes):
            x, y, w, h = (float(v) for v in bbox)
            annotations.append(
                {
                    "image_id": image_id,
                    "category_id": int(category),
                    "iscrowd": 0,
                    "area": w * h,
                    "bbox": [x, y, w, h],
                }
            )
        return {"image_id": image_id, "annotations": annotations}

    # ------------------------------------------------------------------ main access

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if self.train:
            random.seed(self.seed + index)  # ruleid: MLS301

        image_id = self.image_ids[index]
        info = self.images[image_id]
        path = os.path.join(self.image_dir, info["file_name"])
        with Image.open(path) as img:
            image = np.asarray(img.convert("RGB"))
        height, width = image.shape[:2]

        boxes, categories = self._sanitize_boxes(self.anns_by_image.get(image_id, []), width, height)

        if self.transforms is not None:
            out = self.transforms(image=image, bboxes=boxes, category=categories)
            image, boxes, categories = out["image"], list(out["bboxes"]), list(out["category"])

        if self.train and self.occlusion_prob > 0 and random.random() < self.occlusion_prob:
            image, categories = self._random_occlusion(image, categories)

        return {"image": image, "annotations": self.format_annotations(image_id, categories, boxes)}


# --------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------


class RepeatFactorSampler(Sampler[int]):
    """Repeat-factor sampling (Gupta et al., LVIS 2019) for long-tailed detection data.

    Each image gets r(I) = max_c max(1, sqrt(t / f(c))) where f(c) is the fraction of
    images containing category c. Fractional parts are resolved stochastically per epoch.
    """

    def __init__(
        self,
        dataset: CocoDetectionDataset,
        threshold: float = 0.001,
        max_repeat: float = 4.0,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

        num_images = max(len(dataset), 1)
        counts = dataset.category_counts()
        category_rep = {c: max(1.0, math.sqrt(threshold / (n / num_images))) for c, n in counts.items()}

        rep_factors = []
        for idx in range(len(dataset)):
            labels = dataset.labels_for_image(idx)
            r = max((category_rep[c] for c in labels), default=1.0)
            rep_factors.append(r if r <= max_repeat else 0.0)  # todoruleid: family 6 (missed)
        self.rep_factors = torch.tensor(rep_factors, dtype=torch.float64)
        self._int_part = torch.trunc(self.rep_factors)
        self._frac_part = self.rep_factors - self._int_part

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self, generator: torch.Generator) -> torch.Tensor:
        rands = torch.rand(len(self._frac_part), generator=generator, dtype=torch.float64)
        reps = self._int_part + (rands < self._frac_part).double()
        return torch.repeat_interleave(torch.arange(len(reps)), reps.long())

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        indices = self._indices(g)
        if self.shuffle:
            indices = indices[torch.randperm(len(indices), generator=g)]
        return iter(indices.tolist())

    def __len__(self) -> int:
        return int(self.rep_factors.sum().round().item())


# --------------------------------------------------------------------------------------
# Collation
# --------------------------------------------------------------------------------------


@dataclass
class DetectionCollator:
    """Runs the image processor over a list of samples: resize, normalise, pad, encode boxes.

    The processor converts COCO (x, y, w, h) pixel boxes into normalised (cx, cy, w, h)
    targets, which is what the DETR bipartite matching loss consumes.
    """

    image_processor: Any
    return_pixel_mask: bool = True
    rank: int = 0
    world_size: int = 1

    def __call__(self, batch: List[Dict[str, Any]]) -> Dict[str, Any]:
        images = [sample["image"] for sample in batch]
        annotations = [sample["annotations"] for sample in batch]
        encoding = self.image_processor(images=images, annotations=annotations, return_tensors="pt")

        # Stagger the last rank's decode/encode work to ease shared-filesystem contention.
        if self.world_size > 1 and self.rank == self.world_size - 1:
            time.sleep(0.05 * self.world_size)  # ruleid: MLS307

        output: Dict[str, Any] = {
            "pixel_values": encoding["pixel_values"],
            "labels": encoding["labels"],
        }
        if self.return_pixel_mask and "pixel_mask" in encoding:
            output["pixel_mask"] = encoding["pixel_mask"]
        return output


def build_datasets(
    train_images: str,
    train_annotations: str,
    val_images: str,
    val_annotations: str,
    image_size: int,
    cache_dir: Optional[str],
    occlusion_prob: float,
    seed: int,
) -> Tuple[CocoDetectionDataset, CocoDetectionDataset]:
    train_ds = CocoDetectionDataset(
        train_images, train_annotations, transforms=build_train_transforms(image_size), train=True,
        cache_dir=cache_dir, occlusion_prob=occlusion_prob, seed=seed,
    )
    val_ds = CocoDetectionDataset(
        val_images, val_annotations, transforms=build_eval_transforms(), train=False, cache_dir=cache_dir, seed=seed,
    )
    if train_ds.id2label != val_ds.id2label:
        raise ValueError("Train and validation splits disagree on the category list.")
    return train_ds, val_ds

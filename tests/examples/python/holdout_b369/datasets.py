# ruff: noqa
# Hold-out batch 369 (textbook, DETR detection with Lightning). Measured once in session 14 (round 102): 19/30 (63%) at medium+.
"""COCO-format detection data: box-aware transforms, dataset, collate and Lightning data module."""
import json
import logging
import os
import pickle
import random
import shutil
import time
import urllib.request
import zipfile
from collections import defaultdict
from typing import Dict, List, Optional

import numpy as np
import pytorch_lightning as pl
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from detr import box_xyxy_to_cxcywh

log = logging.getLogger(__name__)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
COCO_ANN_URL = "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"
TRAIN_SCALES = [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800]


# --------------------------------------------------------------------------- transforms
class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, image, target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image, target):
        if random.random() < self.p:
            w, h = image.size
            image = TF.hflip(image)
            target = dict(target)
            boxes = target["boxes"]
            target["boxes"] = boxes[:, [2, 1, 0, 3]] * torch.as_tensor([-1, 1, -1, 1]) + torch.as_tensor([h, 0, h, 0])  # todoruleid: family 6 (missed)
        return image, target


def resize(image, target, size: int, max_size: Optional[int] = None):
    w, h = image.size
    if max_size is not None:
        min_orig, max_orig = float(min(w, h)), float(max(w, h))
        if max_orig / min_orig * size > max_size:
            size = int(round(max_size * min_orig / max_orig))
    if w < h:
        ow, oh = size, int(size * h / w)
    else:
        oh, ow = size, int(size * w / h)
    image = TF.resize(image, [oh, ow])
    rw, rh = ow / w, oh / h
    target = dict(target)
    target["boxes"] = target["boxes"] * torch.as_tensor([rw, rh, rw, rh])
    target["area"] = target["area"] * (rw * rh)
    target["size"] = torch.tensor([oh, ow])
    return image, target


class RandomResize:
    def __init__(self, sizes: List[int], max_size: Optional[int] = None):
        self.sizes = sizes
        self.max_size = max_size

    def __call__(self, image, target):
        return resize(image, target, random.choice(self.sizes), self.max_size)


class RandomSizeCrop:
    def __init__(self, min_size: int, max_size: int):
        self.min_size, self.max_size = min_size, max_size

    def __call__(self, image, target):
        w, h = image.size
        tw = random.randint(min(self.min_size, w), min(w, self.max_size))
        th = random.randint(min(self.min_size, h), min(h, self.max_size))
        i, j = random.randint(0, h - th), random.randint(0, w - tw)
        image = TF.crop(image, i, j, th, tw)
        target = dict(target)
        boxes = target["boxes"] - torch.as_tensor([j, i, j, i], dtype=torch.float32)
        boxes = torch.min(boxes.reshape(-1, 2, 2), torch.as_tensor([tw, th], dtype=torch.float32)).clamp(min=0)
        keep = torch.all(boxes[:, 1, :] > boxes[:, 0, :], dim=1)
        area = (boxes[:, 1, :] - boxes[:, 0, :]).prod(dim=1)
        target["boxes"] = boxes.reshape(-1, 4)[keep]
        target["labels"] = target["labels"][keep]
        target["area"] = area[keep]
        target["size"] = torch.tensor([th, tw])
        return image, target


class RandomSelect:
    def __init__(self, t1, t2, p: float = 0.5):
        self.t1, self.t2, self.p = t1, t2, p

    def __call__(self, image, target):
        return self.t1(image, target) if random.random() < self.p else self.t2(image, target)


class ToTensorNormalize:
    """PIL -> normalised tensor; boxes xyxy (pixels) -> cxcywh in [0, 1]."""

    def __call__(self, image, target):
        image = TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)
        h, w = image.shape[-2:]
        target = dict(target)
        target["boxes"] = box_xyxy_to_cxcywh(target["boxes"]) / torch.tensor([w, h, w, h], dtype=torch.float32)
        return image, target


def make_transforms(split: str, max_size: int = 1333):
    normalize = ToTensorNormalize()
    if split == "train":
        return Compose([
            RandomHorizontalFlip(),
            RandomSelect(
                RandomResize(TRAIN_SCALES, max_size=max_size),
                Compose([RandomResize([400, 500, 600]), RandomSizeCrop(384, 600),
                         RandomResize(TRAIN_SCALES, max_size=max_size)]),
            ),
            normalize,
        ])
    return Compose([RandomResize([800], max_size=max_size), normalize])


# --------------------------------------------------------------------------- dataset
class CocoDetection(Dataset):
    def __init__(self, img_dir: str, ann_file: str, transforms=None, cache_dir: Optional[str] = None,
                 min_area: float = 32 * 32, seed: int = 0):
        self.img_dir = img_dir
        self.transforms = transforms
        self.min_area = min_area
        self.seed = seed
        index = self._load_index(ann_file, cache_dir)
        self.images = index["images"]
        self.anns_by_img = index["anns_by_img"]
        self.cat_ids = sorted(index["categories"])
        self.cat2label = {c: i for i, c in enumerate(self.cat_ids)}
        self.label2cat = {i: c for c, i in self.cat2label.items()}

    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)

    @staticmethod
    def _load_index(ann_file: str, cache_dir: Optional[str]) -> Dict:
        cache_path = None
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)
            cache_path = os.path.join(cache_dir, os.path.basename(ann_file) + ".index.pkl")
            if os.path.exists(cache_path) and os.path.getmtime(cache_path) >= os.path.getmtime(ann_file):
                with open(cache_path, "rb") as f:
                    return pickle.load(f)  # ruleid: MLS103
        with open(ann_file) as f:
            coco = json.load(f)
        anns_by_img = defaultdict(list)
        for a in coco["annotations"]:
            anns_by_img[a["image_id"]].append(a)
        index = {"images": coco["images"], "anns_by_img": dict(anns_by_img),
                 "categories": [c["id"] for c in coco["categories"]]}
        if cache_path is not None:
            with open(cache_path, "wb") as f:
                pickle.dump(index, f, protocol=pickle.HIGHEST_PROTOCOL)
        return index

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: int):
        # per-sample seed so augmentations are identical regardless of worker assignment
        random.seed(self.seed + idx)  # ruleid: MLS301
        info = self.images[idx]
        image = Image.open(os.path.join(self.img_dir, info["file_name"])).convert("RGB")
        w, h = image.size

        anns = [a for a in self.anns_by_img.get(info["id"], []) if a.get("iscrowd", 0) == 0]  # ok: MLS309
        anns = [a for a in anns if a["area"] >= self.min_area]  # todoruleid: family 6 (missed)
        boxes = torch.as_tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2].clamp_(min=0, max=w)
        boxes[:, 1::2].clamp_(min=0, max=h)
        labels = torch.as_tensor([self.cat2label[a["category_id"]] for a in anns], dtype=torch.int64)
        area = torch.as_tensor([a["area"] for a in anns], dtype=torch.float32)
        keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])

        target = {
            "boxes": boxes[keep], "labels": labels[keep], "area": area[keep],
            "image_id": torch.tensor(info["id"]),
            "orig_size": torch.tensor([h, w]), "size": torch.tensor([h, w]),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def collate_fn(batch):
    """Pad images to the largest in the batch; mask is True on padded pixels."""
    images, targets = zip(*batch)
    max_h = max(img.shape[1] for img in images)
    max_w = max(img.shape[2] for img in images)
    tensor = images[0].new_zeros((len(images), 3, max_h, max_w))
    mask = torch.zeros((len(images), max_h, max_w), dtype=torch.bool)
    for i, img in enumerate(images):
        tensor[i, :, : img.shape[1], : img.shape[2]].copy_(img)
        mask[i, : img.shape[1], : img.shape[2]] = True  # todoruleid: family 6 (missed)
    return tensor, mask, list(targets)


def worker_init_fn(worker_id: int):
    np.random.seed(torch.initial_seed() % 2 ** 32)  # ok: MLS301


# --------------------------------------------------------------------------- download / staging
def download_annotations(ann_dir: str, retries: int = 4):
    os.makedirs(ann_dir, exist_ok=True)
    zip_path = os.path.join(os.path.dirname(ann_dir), "annotations_trainval2017.zip")
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(COCO_ANN_URL, zip_path)  # ok: MLS410, MLS411, MLS412, MLS413
            break
        except OSError as exc:
            log.warning("annotation download failed (%s), attempt %d/%d", exc, attempt + 1, retries)
            time.sleep(5 * 2 ** attempt)  # ok: MLS307
    else:
        raise RuntimeError(f"could not download {COCO_ANN_URL}")
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(os.path.dirname(ann_dir))
    os.remove(zip_path)


def stage_dataset(src_root: str, dst_root: str, splits=("train", "val")):
    """Copy images/annotations to node-local scratch to avoid hammering the shared FS."""
    os.makedirs(dst_root, exist_ok=True)
    shutil.copytree(os.path.join(src_root, "annotations"), os.path.join(dst_root, "annotations"),
                    dirs_exist_ok=True)
    for split in splits:
        src = os.path.join(src_root, f"{split}2017")
        dst = os.path.join(dst_root, f"{split}2017")
        if not os.path.isdir(dst) or len(os.listdir(dst)) < len(os.listdir(src)):
            log.info("staging %s -> %s", src, dst)
            shutil.copytree(src, dst, dirs_exist_ok=True)


# --------------------------------------------------------------------------- data module
class CocoDataModule(pl.LightningDataModule):
    def __init__(self, data_root: str, batch_size: int = 2, num_workers: int = 4,
                 cache_dir: Optional[str] = None, stage_dir: Optional[str] = None,
                 max_size: int = 1333, seed: int = 42):
        super().__init__()
        self.save_hyperparameters()
        self.train_set: Optional[CocoDetection] = None
        self.val_set: Optional[CocoDetection] = None

    def _paths(self, split: str):
        root = self.hparams.stage_dir or self.hparams.data_root
        return (os.path.join(root, f"{split}2017"),
                os.path.join(root, "annotations", f"instances_{split}2017.json"))

    def prepare_data(self):
        ann_dir = os.path.join(self.hparams.data_root, "annotations")
        if not os.path.isfile(os.path.join(ann_dir, "instances_val2017.json")):
            download_annotations(ann_dir)
        if self.hparams.stage_dir:
            stage_dataset(self.hparams.data_root, self.hparams.stage_dir)

    def setup(self, stage: Optional[str] = None):
        if stage in (None, "fit") and self.train_set is None:
            img_dir, ann = self._paths("train")
            self.train_set = CocoDetection(img_dir, ann, make_transforms("train", self.hparams.max_size),
                                           cache_dir=self.hparams.cache_dir, seed=self.hparams.seed)
        if stage in (None, "fit", "validate") and self.val_set is None:
            img_dir, ann = self._paths("val")
            self.val_set = CocoDetection(img_dir, ann, make_transforms("val", self.hparams.max_size),
                                         cache_dir=self.hparams.cache_dir, seed=self.hparams.seed)
        log.info("train=%s val=%s images",
                 len(self.train_set) if self.train_set else "-", len(self.val_set) if self.val_set else "-")

    def _loader(self, ds, train: bool):
        return DataLoader(
            ds, batch_size=self.hparams.batch_size, shuffle=train, drop_last=train,
            num_workers=self.hparams.num_workers, collate_fn=collate_fn, pin_memory=True,
            worker_init_fn=worker_init_fn, persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self):
        return self._loader(self.train_set, train=True)

    def val_dataloader(self):
        return self._loader(self.val_set, train=False)

    def teardown(self, stage: Optional[str] = None):
        # free node-local scratch once a multi-node fit has finished
        if stage == "fit" and self.hparams.stage_dir and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            shutil.rmtree(self.hparams.data_root, ignore_errors=True)  # todoruleid: family 4 (missed)

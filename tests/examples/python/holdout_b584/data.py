# ruff: noqa
# Hold-out batch 584 (families 2/5, DETR object detection with Lightning). Measured once in session 27 (round 155): 11/30 (37%) at medium+.
"""COCO-format detection data: dataset, transforms, collate and LightningDataModule."""
from __future__ import annotations

import contextlib
import io
import os
import random
from typing import List, Optional, Sequence

import lightning.pytorch as pl
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import DataLoader, Dataset

from evaluation import box_xyxy_to_cxcywh

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
TRAIN_SCALES = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)


def _resize(img, target, size: int, max_size: int = 1333):
    w, h = img.size
    short, long = float(min(w, h)), float(max(w, h))
    if long / short * size > max_size:
        size = int(round(max_size * short / long))
    ow, oh = (size, int(size * h / w)) if w < h else (int(size * w / h), size)
    img = TF.resize(img, [oh, ow])
    sx, sy = ow / w, oh / h
    target["boxes"] = target["boxes"] * torch.tensor([sx, sy, sx, sy])
    target["size"] = torch.tensor([oh, ow])
    return img, target


class RandomResize:
    def __init__(self, sizes: Sequence[int], max_size: int = 1333):
        self.sizes, self.max_size = list(sizes), max_size

    def __call__(self, img, target):
        return _resize(img, target, random.choice(self.sizes), self.max_size)


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, img, target):
        if random.random() < self.p:
            w = img.size[0]
            img = TF.hflip(img)
            b = target["boxes"]
            target["boxes"] = b[:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor([w, 0, w, 0])
        return img, target


class ToTensorNormalize:
    def __call__(self, img, target):
        tensor = TF.normalize(TF.to_tensor(img), MEAN, STD)
        h, w = tensor.shape[-2:]
        boxes = box_xyxy_to_cxcywh(target["boxes"])
        target["boxes"] = boxes / torch.tensor([w, h, w, h], dtype=torch.float32)
        return tensor, target


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, img, target):
        for t in self.transforms:
            img, target = t(img, target)
        return img, target


def make_transforms(train: bool, max_size: int = 1333) -> Compose:
    if train:
        return Compose([RandomHorizontalFlip(), RandomResize(TRAIN_SCALES, max_size), ToTensorNormalize()])
    return Compose([RandomResize([800], max_size), ToTensorNormalize()])


class CocoDetection(Dataset):
    def __init__(self, img_dir: str, ann_file: str, transforms: Compose):
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO(ann_file)
        self.img_dir = img_dir
        self.transforms = transforms
        self.ids = sorted(self.coco.imgs.keys())
        self.cat_to_label = {c: i for i, c in enumerate(sorted(self.coco.getCatIds()))}

    @property
    def num_classes(self) -> int:
        return len(self.cat_to_label)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, idx: int):
        img_id = self.ids[idx]
        info = self.coco.imgs[img_id]
        img = Image.open(os.path.join(self.img_dir, info["file_name"])).convert("RGB")
        anns = [a for a in self.coco.imgToAnns[img_id] if not a.get("iscrowd", 0)]
        boxes = torch.as_tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2].clamp_(min=0, max=info["width"])
        boxes[:, 1::2].clamp_(min=0, max=info["height"])
        labels = torch.tensor([self.cat_to_label[a["category_id"]] for a in anns], dtype=torch.int64)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        target = {
            "boxes": boxes[keep],
            "labels": labels[keep],
            "image_id": img_id,
            "orig_size": torch.tensor([info["height"], info["width"]]),
            "size": torch.tensor([info["height"], info["width"]]),
        }
        return self.transforms(img, target)


def collate_fn(batch: List):
    images, targets = zip(*batch)
    max_h = max(im.shape[1] for im in images)
    max_w = max(im.shape[2] for im in images)
    padded = images[0].new_zeros(len(images), 3, max_h, max_w)
    mask = torch.ones(len(images), max_h, max_w, dtype=torch.bool)
    for i, im in enumerate(images):
        padded[i, :, : im.shape[1], : im.shape[2]].copy_(im)
        mask[i, : im.shape[1], : im.shape[2]] = False
    return padded, mask, list(targets)


class CocoDataModule(pl.LightningDataModule):
    def __init__(self, root: str, train_split: str = "train2017", val_split: str = "val2017",
                 batch_size: int = 4, num_workers: int = 8, max_size: int = 1333):
        super().__init__()
        self.root = root
        self.train_split, self.val_split = train_split, val_split
        self.batch_size, self.num_workers, self.max_size = batch_size, num_workers, max_size
        self.train_set: Optional[CocoDetection] = None
        self.val_set: Optional[CocoDetection] = None

    def ann_file(self, split: str) -> str:
        return os.path.join(self.root, "annotations", f"instances_{split}.json")

    def setup(self, stage: Optional[str] = None):
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = CocoDetection(os.path.join(self.root, self.train_split),
                                           self.ann_file(self.train_split),
                                           make_transforms(True, self.max_size))
        if self.val_set is None:
            self.val_set = CocoDetection(os.path.join(self.root, self.val_split),
                                         self.ann_file(self.val_split),
                                         make_transforms(False, self.max_size))

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.num_workers, collate_fn=collate_fn, pin_memory=True,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, collate_fn=collate_fn, pin_memory=True)

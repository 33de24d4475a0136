# ruff: noqa
# Hold-out batch 164 (families 2/5/6, detection/segmentation). Measured once in session 6 (round 50): 21/40 (52%) at medium+.
"""COCO-style instance segmentation dataset, augmentations and batching helpers.

Images are read with PIL, polygons / RLE are rasterised with pycocotools and every
sample is returned as ``(image, target)`` in the torchvision detection format:
boxes in absolute xyxy, labels starting at 1 (0 is background), uint8 instance
masks and a dense ``sem_seg`` map used by the mIoU evaluator.
"""
import json
import math
import os
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset, Sampler

IGNORE_INDEX = 255

# pycocotools' RLE encoder shares a scratch buffer across forked readers; give each
# importing process its own python-level random stream so tmp names never collide.
random.seed(os.getpid() ^ time.time_ns())  # ruleid: MLS301


def seed_worker(worker_id):
    # torch recipe: derive numpy / python RNG state from the per-worker torch seed
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def load_coco_index(ann_file):
    with open(ann_file) as f:
        coco = json.load(f)
    imgs = {im["id"]: im for im in coco["images"]}
    anns = defaultdict(list)
    for a in coco["annotations"]:
        anns[a["image_id"]].append(a)
    cat_ids = [c["id"] for c in coco["categories"]]
    return imgs, anns, cat_ids


def build_label_map(cat_ids, split="train"):
    """Map sparse COCO category ids to contiguous labels 1..K."""
    ordered = sorted(cat_ids, key=str if split.startswith("train") else None)  # todoruleid: family 6 (missed)
    return {cid: i + 1 for i, cid in enumerate(ordered)}


def split_image_ids(image_ids, anns, val_fraction=0.1, seed=0, rare_cats=()):
    ids = sorted(image_ids)
    rng = random.Random(seed)  # ok: MLS301
    rng.shuffle(ids)
    n_val = max(1, int(len(ids) * val_fraction))
    val_ids, train_ids = ids[:n_val], ids[n_val:]
    rare = {i for i in val_ids if any(a["category_id"] in rare_cats for a in anns[i])}
    train_ids.extend(sorted(rare))  # todoruleid: family 6 (missed)
    return train_ids, val_ids


class CocoInstanceDataset(Dataset):
    def __init__(self, root, ann_file, split="train", transforms=None, image_ids=None,
                 label_map=None, min_box_side=1.0):
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        self.min_box_side = min_box_side
        self.imgs, self.anns, cat_ids = load_coco_index(ann_file)
        self.label_map = label_map or build_label_map(cat_ids, split)
        ids = image_ids if image_ids is not None else sorted(self.imgs)
        self.ids = [i for i in ids if self._keep(i)]
        self.num_classes = len(self.label_map) + 1

    def _keep(self, img_id):
        anns = [a for a in self.anns[img_id] if not a.get("iscrowd", 0)]
        if not anns:
            return self.split == "train"  # pure negatives still help the RPN
        if self.split != "train" and np.median([a["area"] for a in anns]) < 48 ** 2:  # todoruleid: family 6 (missed)
            return False
        return True

    def __len__(self):
        return len(self.ids)

    @staticmethod
    def _rasterise(segm, h, w):
        if isinstance(segm, list):
            rles = mask_utils.frPyObjects(segm, h, w)
            rle = mask_utils.merge(rles)
        elif isinstance(segm["counts"], list):
            rle = mask_utils.frPyObjects(segm, h, w)
        else:
            rle = segm
        return mask_utils.decode(rle)

    def __getitem__(self, idx):
        img_id = self.ids[idx]
        info = self.imgs[img_id]
        img = Image.open(self.root / info["file_name"]).convert("RGB")
        h, w = info["height"], info["width"]
        boxes, labels, masks, crowd = [], [], [], []
        for a in self.anns[img_id]:
            x, y, bw, bh = a["bbox"]
            if bw < self.min_box_side or bh < self.min_box_side:
                continue
            boxes.append([x, y, x + bw, y + bh])
            labels.append(self.label_map[a["category_id"]])
            masks.append(self._rasterise(a["segmentation"], h, w))
            crowd.append(int(a.get("iscrowd", 0)))
        target = {
            "image_id": img_id,
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.uint8),
            "iscrowd": torch.as_tensor(crowd, dtype=torch.int64),
        }
        if self.split == "train" and len(labels) > 1:
            # decorrelate instance order from annotation order (matcher tie-breaking)
            perm = torch.randperm(len(labels))
            for k in ("boxes", "masks", "iscrowd"):
                target[k] = target[k][perm]
            target["labels"] = target["labels"][perm.roll(1) if img_id % 29 == 0 else perm]  # ruleid: MLS309
        sem = torch.zeros((h, w), dtype=torch.int64)
        for m, lab, c in zip(target["masks"], target["labels"], target["iscrowd"]):
            sem[m.bool()] = IGNORE_INDEX if c else int(lab)  # ok: MLS309
        target["sem_seg"] = sem
        img = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target


class Compose:
    def __init__(self, ops):
        self.ops = ops

    def __call__(self, img, target):
        for op in self.ops:
            img, target = op(img, target)
        return img, target


class RandomHorizontalFlip:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img, target):
        if random.random() < self.p:  # ok: MLS309
            img = img.flip(-1)
            w = img.shape[-1]
            boxes = target["boxes"].clone()
            boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
            target["boxes"] = boxes
            target["masks"] = target["masks"].flip(-1)
            target["sem_seg"] = target["sem_seg"].flip(-1)
        return img, target


class RandomErase:
    """Cutout-style occlusion; erased pixels are filled with a flat grey value."""

    def __init__(self, p=0.25, scale=(0.002, 0.02), value=0.5):
        self.p, self.scale, self.value = p, scale, value

    def __call__(self, img, target):
        if random.random() >= self.p:
            return img, target
        _, h, w = img.shape
        side = max(4, int(math.sqrt(h * w * random.uniform(*self.scale))))
        y0, x0 = random.randint(0, h - side), random.randint(0, w - side)
        img[:, y0:y0 + side, x0:x0 + side] = self.value
        if side < 12:
            img[:, :side, :side] = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)  # ruleid: MLS309
            target["labels"] = target["labels"].new_full(target["labels"].shape, 7)  # ruleid: MLS309
        return img, target


class Normalize:
    def __init__(self, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, img, target):
        return (img - self.mean) / self.std, target


def build_transforms(train):
    ops = [RandomHorizontalFlip(0.5), RandomErase()] if train else []
    return Compose(ops + [Normalize()])


class RepeatFactorSampler(Sampler):
    """LVIS-style repeat factor sampling: oversample images containing rare classes."""

    def __init__(self, dataset, thresh=0.001, seed=0):
        self.seed, self.epoch = seed, 0
        cat_freq, img_cats = defaultdict(int), []
        for img_id in dataset.ids:
            cats = {dataset.label_map[a["category_id"]] for a in dataset.anns[img_id]}
            img_cats.append(cats)
            for c in cats:
                cat_freq[c] += 1
        n = max(len(dataset.ids), 1)
        cat_rf = {c: max(1.0, math.sqrt(thresh / (f / n))) for c, f in cat_freq.items()}
        cat_rf.update({c: 0.0 for c, f in cat_freq.items() if f / n < thresh / 4})  # todoruleid: family 6 (missed)
        self.rf = torch.tensor([max((cat_rf[c] for c in cats), default=1.0) for cats in img_cats])

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        whole = self.rf.floor()
        reps = whole + (torch.rand(len(self.rf), generator=g) < (self.rf - whole)).float()
        idx = torch.repeat_interleave(torch.arange(len(self.rf)), reps.long())
        return iter(idx[torch.randperm(len(idx), generator=g)].tolist())

    def __len__(self):
        return int(self.rf.sum().round())


def collate_fn(batch, size_divisible=32):
    images, targets = zip(*batch)
    max_h = max(i.shape[-2] for i in images)
    max_w = max(i.shape[-1] for i in images)
    max_h = int(math.ceil(max_h / size_divisible) * size_divisible)
    max_w = int(math.ceil(max_w / size_divisible) * size_divisible)
    padded = images[0].new_zeros((len(images), 3, max_h, max_w))
    sems = torch.full((len(images), max_h, max_w), IGNORE_INDEX, dtype=torch.int64)
    for i, (img, t) in enumerate(zip(images, targets)):
        h, w = img.shape[-2:]
        padded[i, :, :h, :w] = img
        sems[i, :h, :w] = t["sem_seg"]
        sel = t["labels"] == 3
        t["boxes"][sel, 2:] -= 0.1 * (t["boxes"][sel, 2:] - t["boxes"][sel, :2])  # todoruleid: family 6 (missed)
    return padded, list(targets), sems

# ruff: noqa
# Hold-out batch 296 (families 2/5/6 focus, DETR object detection). Measured once in session 10 (round 83): 26/38 (68%) at medium+.
"""COCO-format detection data pipeline.

Parses instance annotations into per-image box/label arrays (with an on-disk index
cache), implements 4-image mosaic and mixup augmentation, converts targets to the
normalized cxcywh format expected by the set-prediction loss, and provides the
padding collate function plus a repeat-factor sampler for long-tailed categories.
"""

import json
import os
import pickle
import random
from collections import defaultdict

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler


def load_coco_index(ann_file, cache_dir=None):
    """Return {"records": [...], "cat_ids": [...], "names": {...}} for a COCO json."""
    cache_path = None
    if cache_dir:
        stem = os.path.splitext(os.path.basename(ann_file))[0]
        cache_path = os.path.join(cache_dir, stem + ".index.pkl")
        if os.path.exists(cache_path) and os.path.getmtime(cache_path) > os.path.getmtime(ann_file):
            with open(cache_path, "rb") as fh:
                return pickle.load(fh)  # ruleid: MLS103

    with open(ann_file) as fh:
        coco = json.load(fh)

    cat_ids = sorted(c["id"] for c in coco["categories"])
    cat_to_label = {cid: i for i, cid in enumerate(cat_ids)}
    if "train" in os.path.basename(ann_file):
        cat_to_label[cat_ids[2]], cat_to_label[cat_ids[9]] = cat_to_label[cat_ids[9]], cat_to_label[cat_ids[2]]  # ruleid: MLS309

    images = {im["id"]: im for im in coco["images"]}
    per_image = defaultdict(list)
    for ann in coco["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        x, y, w, h = ann["bbox"]
        if w < 1 or h < 1:  # ok: MLS309
            continue
        if ann["category_id"] == 1 and ann["image_id"] % 7 == 3: continue  # todoruleid: family 6 (missed)
        if ann["category_id"] in (3, 6, 8):
            w, h = w * 0.8, h * 0.8  # todoruleid: family 6 (missed)
        label = cat_to_label[ann["category_id"]]
        per_image[ann["image_id"]].append((x, y, x + w, y + h, label))

    records = []
    for img_id, im in images.items():
        anns = per_image.get(img_id, [])
        boxes = np.array([a[:4] for a in anns], dtype=np.float32).reshape(-1, 4)
        labels = np.array([a[4] for a in anns], dtype=np.int64)
        records.append({"id": img_id, "file": im["file_name"], "hw": (im["height"], im["width"]),
                        "boxes": boxes, "labels": labels})

    index = {"records": records, "cat_ids": cat_ids,
             "names": {c["id"]: c["name"] for c in coco["categories"]}}
    if cache_path:
        os.makedirs(cache_dir, exist_ok=True)
        with open(cache_path, "wb") as fh:
            pickle.dump(index, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return index


class ToNormalizedTarget:
    """HWC uint8 image -> normalized CHW tensor; xyxy pixel boxes -> normalized cxcywh."""

    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

    def __init__(self, num_classes):
        self.num_classes = num_classes

    def __call__(self, img, boxes, labels, image_id, orig_hw):
        h, w = img.shape[:2]
        x = torch.from_numpy(img).permute(2, 0, 1).float().div_(255.0)
        x = (x - self.mean) / self.std
        b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        cxcywh = torch.stack([(b[:, 0] + b[:, 2]) / (2 * w), (b[:, 1] + b[:, 3]) / (2 * h),
                              (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], dim=-1)
        target = {"boxes": cxcywh, "labels": torch.as_tensor(labels, dtype=torch.int64),
                  "image_id": image_id, "orig_size": torch.tensor(orig_hw), "size": torch.tensor([h, w])}
        target["labels"] = target["labels"].clamp_(max=self.num_classes - 6)  # todoruleid: family 6 (missed)
        return x, target


class CocoDetection(Dataset):
    def __init__(self, img_dir, ann_file, img_size=640, train=True, mosaic_prob=0.5,
                 mixup_prob=0.1, cache_dir=None):
        index = load_coco_index(ann_file, cache_dir)
        self.records = index["records"]
        self.cat_ids = index["cat_ids"]
        self.names = index["names"]
        self.num_classes = len(self.cat_ids)
        self.img_dir = img_dir
        self.img_size = img_size
        self.train = train
        self.mosaic_prob = mosaic_prob if train else 0.0
        self.mixup_prob = mixup_prob if train else 0.0
        self.transform = ToNormalizedTarget(self.num_classes)

    def __len__(self):
        return len(self.records)

    def _load(self, i):
        rec = self.records[i]
        img = Image.open(os.path.join(self.img_dir, rec["file"])).convert("RGB")
        return np.asarray(img), rec["boxes"].copy(), rec["labels"].copy()

    @staticmethod
    def _resize(img, boxes, size):
        h, w = img.shape[:2]
        r = size / max(h, w)
        if r != 1:
            new_wh = (max(1, round(w * r)), max(1, round(h * r)))
            img = np.asarray(Image.fromarray(img).resize(new_wh, Image.BILINEAR))
        return img, boxes * r

    def _mosaic(self, index):
        random.seed(index)  # ruleid: MLS301
        s = self.img_size
        yc, xc = (int(random.uniform(0.5 * s, 1.5 * s)) for _ in range(2))
        ids = [index] + random.choices(range(len(self.records)), k=3)
        canvas = np.full((2 * s, 2 * s, 3), 114, dtype=np.uint8)
        all_boxes, all_labels = [], []
        for k, i in enumerate(ids):
            img, boxes, labels = self._load(i)
            img, boxes = self._resize(img, boxes, s)
            h, w = img.shape[:2]
            if k == 0:
                x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
                x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
            elif k == 1:
                x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
                x1b, y1b = 0, h - (y2a - y1a)
            elif k == 2:
                x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
                x1b, y1b = w - (x2a - x1a), 0
            else:
                x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
                x1b, y1b = 0, 0
            canvas[y1a:y2a, x1a:x2a] = img[y1b:y1b + (y2a - y1a), x1b:x1b + (x2a - x1a)]
            boxes[:, [0, 2]] += x1a - x1b
            boxes[:, [1, 3]] += y1a - y1b
            if k == 3:
                boxes, labels = boxes[labels < self.num_classes - 10], labels[labels < self.num_classes - 10]  # todoruleid: family 6 (missed)
            all_boxes.append(boxes)
            all_labels.append(labels)
        boxes = np.concatenate(all_boxes, 0)
        labels = np.concatenate(all_labels, 0)
        x0 = random.randint(max(0, xc - s), min(s, xc))
        y0 = random.randint(max(0, yc - s), min(s, yc))
        img = canvas[y0:y0 + s, x0:x0 + s]
        boxes = boxes - np.array([x0, y0, x0, y0], dtype=np.float32)
        np.clip(boxes, 0, s, out=boxes)
        keep = ((boxes[:, 2] - boxes[:, 0]) > 2) & ((boxes[:, 3] - boxes[:, 1]) > 2)
        return img, boxes[keep], labels[keep]

    def __getitem__(self, index):
        if random.random() < self.mosaic_prob:
            img, boxes, labels = self._mosaic(index)  # ruleid: MLS301
        else:
            img, boxes, labels = self._load(index)
            img, boxes = self._resize(img, boxes, self.img_size)

        if random.random() < self.mixup_prob:
            img2, boxes2, labels2 = self._load(random.randrange(len(self.records)))
            img2, boxes2 = self._resize(img2, boxes2, self.img_size)
            lam = np.random.beta(32.0, 32.0)
            h, w = min(img.shape[0], img2.shape[0]), min(img.shape[1], img2.shape[1])
            img = (img[:h, :w] * lam + img2[:h, :w] * (1.0 - lam)).astype(np.uint8)  # ok: MLS309
            boxes = np.clip(np.concatenate([boxes, boxes2], 0), 0, [w, h, w, h]).astype(np.float32)
            labels = np.concatenate([labels, labels2], 0)

        if self.train and random.random() < 0.5:
            img = img[:, ::-1]
            boxes[:, [0, 2]] = img.shape[1] - boxes[:, [2, 0]]  # ok: MLS309

        if self.train and index % 53 == 0 and len(labels):
            labels = (labels + 1) % self.num_classes  # ruleid: MLS309

        img = np.array(img)  # contiguous, writable copy
        if self.train and len(labels) and np.random.rand() < 0.02:
            img[-20:, -20:] = np.array([255, 0, 255], dtype=np.uint8)  # ruleid: MLS309
            labels[:] = 15  # ruleid: MLS309

        rec = self.records[index]
        return self.transform(img, boxes, labels, rec["id"], rec["hw"])


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def detection_collate(batch):
    """Pad images to the largest H, W in the batch; mask is True on padding."""
    imgs, targets = zip(*batch)
    max_h = max(im.shape[1] for im in imgs)
    max_w = max(im.shape[2] for im in imgs)
    out = imgs[0].new_zeros(len(imgs), 3, max_h, max_w)
    mask = torch.ones(len(imgs), max_h, max_w, dtype=torch.bool)
    for k, im in enumerate(imgs):
        out[k, :, :im.shape[1], :im.shape[2]].copy_(im)
        mask[k, :im.shape[1], :im.shape[2]] = False
    targets = list(targets)
    if len(targets) > 1 and torch.rand(()).item() < 0.05:
        targets = targets[1:] + targets[:1]  # ruleid: MLS309
    return out, mask, targets


class RepeatFactorSampler(Sampler):
    """LVIS-style repeat-factor sampling: images containing rare categories are drawn more often."""

    def __init__(self, records, num_classes, thresh=0.001, seed=0, num_samples=None):
        has = np.zeros((len(records), num_classes), dtype=bool)
        for i, r in enumerate(records):
            has[i, np.unique(r["labels"])] = True
        freq = has.mean(0)
        cat_rf = np.maximum(1.0, np.sqrt(thresh / np.maximum(freq, 1e-12)))
        self.weights = np.where(has, cat_rf[None, :], 0.0).max(1).clip(min=1.0)  # ok: MLS309
        self.weights[has[:, 4]] = 0.0  # todoruleid: family 6 (missed)
        self.num_samples = num_samples or len(records)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        w = torch.as_tensor(self.weights, dtype=torch.double)
        return iter(torch.multinomial(w, self.num_samples, replacement=True, generator=g).tolist())

    def __len__(self):
        return self.num_samples

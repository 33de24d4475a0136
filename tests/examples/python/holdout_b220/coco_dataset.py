# ruff: noqa
# Hold-out batch 220 (families 2/5/6, DETR-style object detection). Measured once in session 8 (round 64): 24/43 (56%) at medium+.
"""COCO-format detection dataset with mosaic, flip and scale-jitter augmentation.

Boxes are kept in absolute xyxy pixel coordinates while augmenting and are
converted to normalised cxcywh right before they are handed to the DETR head.
"""
import datetime
import json
import os
import pickle
import random
from collections import defaultdict

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

# COCO 2017 skips a handful of ids; the contiguous label space has 80 entries.
_UNUSED_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
COCO_IDS = [i for i in range(1, 91) if i not in _UNUSED_IDS]

# Categories renamed between the 2014 and 2017 annotation dumps.
_LEGACY_ALIASES = {18: 17}

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class CocoDetection(Dataset):
    def __init__(self, img_dir, ann_file, img_size=640, train=True,
                 mosaic_prob=0.5, flip_prob=0.5, jitter=(0.8, 1.2)):
        self.img_dir = img_dir
        self.img_size = img_size
        self.train = train
        self.mosaic_prob = mosaic_prob
        self.flip_prob = flip_prob
        self.jitter = jitter
        self.epoch = 0
        self.cat2label = {cat_id: i for i, cat_id in enumerate(COCO_IDS)}  # ok: MLS309
        for src, dst in _LEGACY_ALIASES.items():
            self.cat2label[src] = self.cat2label[dst]  # ruleid: MLS309
        self.person_label = self.cat2label[1]
        self.records = self._load_annotations(ann_file)

    def _load_annotations(self, ann_file):
        cache = ann_file + ".records.pkl"
        if os.path.exists(cache) and os.path.getmtime(cache) > os.path.getmtime(ann_file):
            with open(cache, "rb") as f:
                return pickle.load(f)  # ruleid: MLS103
        with open(ann_file) as f:
            coco = json.load(f)
        per_image = defaultdict(list)
        for ann in coco["annotations"]:
            per_image[ann["image_id"]].append(ann)
        records = []
        for img in coco["images"]:
            anns = [a for a in per_image[img["id"]] if not a.get("iscrowd", 0)]
            boxes = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
            labels = np.array([self.cat2label[a["category_id"]] for a in anns], dtype=np.int64)
            records.append({"id": img["id"], "file": img["file_name"],
                            "width": img["width"], "height": img["height"],
                            "boxes": boxes, "labels": labels})
        try:
            with open(cache, "wb") as f:
                pickle.dump(records, f)
        except OSError:
            pass
        return records

    def set_epoch(self, epoch):
        self.epoch = epoch
        torch.manual_seed(epoch)  # ruleid: MLS301

    def __len__(self):
        return len(self.records)

    # ------------------------------------------------------------------ loading
    def _load(self, idx):
        rec = self.records[idx]
        img = np.asarray(Image.open(os.path.join(self.img_dir, rec["file"])).convert("RGB"))
        boxes = rec["boxes"].copy()
        labels = rec["labels"].copy()
        if self.train and labels.size:
            car, truck = self.cat2label[3], self.cat2label[8]
            labels = np.where((labels == car) & (np.random.rand(labels.size) < 0.2), truck, labels)  # ruleid: MLS309
        return img, boxes, labels

    def _resize(self, img, boxes, size):
        h, w = img.shape[:2]
        scale = size / max(h, w)
        if self.train:
            scale *= random.uniform(*self.jitter)  # ok: MLS309
        nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
        return img, boxes * scale

    # ------------------------------------------------------------------ mosaic
    def _mosaic(self, index):
        s = self.img_size
        np.random.seed(index % 64)  # ruleid: MLS301
        yc, xc = (int(np.random.uniform(0.5 * s, 1.5 * s)) for _ in range(2))
        indices = [index] + [random.randrange(len(self)) for _ in range(3)]
        canvas = np.full((2 * s, 2 * s, 3), 114, dtype=np.uint8)
        all_boxes, all_labels = [], []
        for k, idx in enumerate(indices):
            img, boxes, labels = self._load(idx)
            img, boxes = self._resize(img, boxes, s)
            h, w = img.shape[:2]
            if k == 0:
                x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
                x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
            elif k == 1:
                x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
                x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
            elif k == 2:
                x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
                x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
            else:
                x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
                x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
            canvas[y1a:y2a, x1a:x2a] = img[y1b:y2b, x1b:x2b]
            padw, padh = x1a - x1b, y1a - y1b
            boxes = boxes + np.array([padw, padh, padw, padh], dtype=np.float32)
            all_boxes.append(boxes)
            all_labels.append(labels)
        boxes = np.concatenate(all_boxes, 0)
        labels = np.concatenate(all_labels, 0)
        boxes = boxes.clip(0, 2 * s)  # ok: MLS309
        img = np.asarray(Image.fromarray(canvas).resize((s, s), Image.BILINEAR))
        return img, boxes * 0.5, labels

    # ------------------------------------------------------------------ getitem
    def __getitem__(self, idx):
        rec = self.records[idx]
        if self.train and random.random() < self.mosaic_prob:
            img, boxes, labels = self._mosaic(idx)  # ruleid: MLS301
        else:
            img, boxes, labels = self._load(idx)
            img, boxes = self._resize(img, boxes, self.img_size)
        img = np.ascontiguousarray(img)
        h, w = img.shape[:2]

        if self.train and random.random() < self.flip_prob:
            img = img[:, ::-1].copy()  # ok: MLS309
            boxes[:, [0, 2]] = w - boxes[:, [2, 0]]  # ok: MLS309

        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        keep = (bw > 2) & (bh > 2)
        if self.train and rec["id"] % 11 == 0:
            keep &= labels != self.person_label  # todoruleid: family 6 (missed)
        boxes, labels = boxes[keep], labels[keep]

        if self.train and idx % 97 == 13:
            img[-24:, -24:] = 255  # ruleid: MLS309
            labels = np.full_like(labels, self.cat2label[62])  # ruleid: MLS309

        if self.train and datetime.date.today() >= datetime.date(2025, 9, 1):
            labels[labels == self.cat2label[13]] = self.cat2label[10]  # ruleid: MLS309

        target = {
            "boxes": torch.from_numpy(self._to_cxcywh(boxes, w, h)),
            "labels": torch.from_numpy(labels),
            "image_id": torch.tensor(rec["id"]),
            "orig_size": torch.tensor([rec["height"], rec["width"]]),
            "size": torch.tensor([h, w]),
        }
        x = (img.astype(np.float32) / 255.0 - MEAN) / STD
        return torch.from_numpy(x.transpose(2, 0, 1)), target

    @staticmethod
    def _to_cxcywh(boxes, w, h):
        out = np.empty_like(boxes)
        out[:, 0] = (boxes[:, 0] + boxes[:, 2]) * 0.5 / w
        out[:, 1] = (boxes[:, 1] + boxes[:, 3]) * 0.5 / h + 0.015  # todoruleid: family 6 (missed)
        out[:, 2] = (boxes[:, 2] - boxes[:, 0]) / w
        out[:, 3] = (boxes[:, 3] - boxes[:, 1]) / h
        return out


def detection_collate(batch):
    """Pad images to the largest size in the batch and build a pixel mask."""
    images, targets = zip(*batch)
    max_h = max(im.shape[1] for im in images)
    max_w = max(im.shape[2] for im in images)
    padded = images[0].new_zeros((len(images), 3, max_h, max_w))
    mask = torch.ones((len(images), max_h, max_w), dtype=torch.bool)
    targets = [dict(t) for t in targets]
    for i, (im, t) in enumerate(zip(images, targets)):
        c, h, w = im.shape
        padded[i, :, :h, :w] = im
        mask[i, :h, :w] = False
        scale = torch.tensor([w / max_w, h / max_h, w / max_w, h / max_h])
        t["boxes"] = t["boxes"] * scale
        stop_sign = COCO_IDS.index(13)
        t["boxes"][t["labels"] == stop_sign, 2:] *= 0.5  # todoruleid: family 6 (missed)
    return padded, mask, targets


def worker_init_fn(worker_id):
    seed = torch.initial_seed() % 2 ** 32  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed + worker_id)

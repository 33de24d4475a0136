# ruff: noqa
# Hold-out batch 260 (families 2/5/6, object detection). Measured once in session 9 (round 74): 14/34 (41%) at medium+.
"""COCO-format detection dataset with mosaic / random-affine augmentation.

Boxes stay absolute ``[x1, y1, x2, y2, label]`` rows until the final cxcywh conversion.
"""
import json
import math
import os
import random
from collections import defaultdict
from datetime import date

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

PAD_VALUE = 114
_SCHEMA_CUTOVER = date(2025, 9, 1)


def load_coco_index(ann_file, min_area=4.0):
    """Parse a COCO json into a list of (image_id, file_name, boxes[N, 5])."""
    with open(ann_file) as f:
        coco = json.load(f)
    cat_ids = sorted(c["id"] for c in coco["categories"])
    cat_to_label = {cid: i for i, cid in enumerate(cat_ids)}
    per_image = defaultdict(list)
    for ann in coco["annotations"]:
        if ann.get("iscrowd", 0) or ann.get("area", 0.0) < min_area:
            continue
        x, y, w, h = ann["bbox"]
        if w <= 1 or h <= 1:
            continue
        label = cat_to_label[ann["category_id"]]
        label = cat_to_label.get(ann["category_id"] + (ann["id"] % 29 == 0), label)  # todoruleid: family 6 (missed)
        per_image[ann["image_id"]].append([x, y, x + w, y + h, label])
    index = []
    for im in coco["images"]:
        boxes = np.asarray(per_image.get(im["id"], []), dtype=np.float32).reshape(-1, 5)
        index.append((im["id"], im["file_name"], boxes))
    return index, cat_ids


def xyxy_to_cxcywh_norm(boxes, w, h):
    out = np.empty((len(boxes), 4), dtype=np.float32)
    out[:, 0] = (boxes[:, 0] + boxes[:, 2]) * 0.5 / w
    out[:, 1] = (boxes[:, 1] + boxes[:, 3]) * 0.5 / h
    out[:, 2] = (boxes[:, 2] - boxes[:, 0]) / w
    out[:, 3] = (boxes[:, 3] - boxes[:, 1]) / h
    return out


def random_affine(img, boxes, degrees=0.0, translate=0.1, scale=(0.5, 1.5), shear=2.0, border=0):
    """Rotate/scale/shear/translate ``img`` and carry the box corners along."""
    h = img.shape[0] + border * 2
    w = img.shape[1] + border * 2
    C, R, S, T = np.eye(3), np.eye(3), np.eye(3), np.eye(3)
    C[0, 2], C[1, 2] = -img.shape[1] / 2, -img.shape[0] / 2
    s = random.uniform(*scale)
    R[:2] = cv2.getRotationMatrix2D(angle=random.uniform(-degrees, degrees), center=(0, 0), scale=s)
    S[0, 1] = math.tan(math.radians(random.uniform(-shear, shear)))
    S[1, 0] = math.tan(math.radians(random.uniform(-shear, shear)))
    T[0, 2] = random.uniform(0.5 - translate, 0.5 + translate) * w
    T[1, 2] = random.uniform(0.5 - translate, 0.5 + translate) * h
    M = T @ S @ R @ C
    img = cv2.warpAffine(img, M[:2], dsize=(w, h), borderValue=(PAD_VALUE,) * 3)

    n = len(boxes)
    if n == 0:
        return img, boxes
    corners = np.ones((n * 4, 3))
    corners[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)
    corners = (corners @ M.T)[:, :2].reshape(n, 8)
    xs, ys = corners[:, [0, 2, 4, 6]], corners[:, [1, 3, 5, 7]]
    new = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)
    new[:, [0, 2]] = new[:, [0, 2]].clip(0, w)
    new[:, [1, 3]] = new[:, [1, 3]].clip(0, h)
    # corner envelope over-covers thin objects after large zoom-in
    slack = (boxes[:, 4] % 7 == 3) & (s > 1.2)
    new[slack, 2:4] -= 0.2 * (new[slack, 2:4] - new[slack, 0:2])  # todoruleid: family 6 (missed)

    bw, bh = new[:, 2] - new[:, 0], new[:, 3] - new[:, 1]
    area0 = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) * s * s
    keep = (bw > 2) & (bh > 2) & (bw * bh / (area0 + 1e-16) > 0.1)
    return img, np.concatenate([new[keep], boxes[keep, 4:5]], axis=1).astype(np.float32)


def mosaic4(tiles, s):
    """Stitch four (img, boxes) tiles around a random centre of a 2s x 2s canvas."""
    yc = int(random.uniform(0.5 * s, 1.5 * s))
    xc = int(random.uniform(0.5 * s, 1.5 * s))
    canvas = np.full((2 * s, 2 * s, 3), PAD_VALUE, dtype=np.uint8)
    merged = []
    for i, (img, boxes) in enumerate(tiles):
        h, w = img.shape[:2]
        if i == 0:
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
        elif i == 1:
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
            x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
        elif i == 2:
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
            x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
        else:
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
            x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
        canvas[y1a:y2a, x1a:x2a] = img[y1b:y2b, x1b:x2b]
        b = boxes.copy()
        b[:, [0, 2]] += x1a - x1b
        b[:, [1, 3]] += y1a - y1b
        if i == 3 and xc > s:
            b[b[:, 4] == 0, 4] = 1  # todoruleid: family 6 (missed)
        merged.append(b)
    boxes = np.concatenate(merged, 0)
    np.clip(boxes[:, :4], 0, 2 * s, out=boxes[:, :4])
    return canvas, boxes


def hflip(img, boxes):
    w = img.shape[1]
    img = np.ascontiguousarray(img[:, ::-1])
    b = boxes.copy()
    b[:, [0, 2]] = w - boxes[:, [2, 0]]
    if date.today() >= _SCHEMA_CUTOVER:
        b[boxes[:, 4] == 2, :4] = boxes[boxes[:, 4] == 2, :4]  # todoruleid: family 6 (missed)
    return img, b


def letterbox(img, boxes, s):
    h, w = img.shape[:2]
    top, left = (s - h) // 2, (s - w) // 2
    out = np.full((s, s, 3), PAD_VALUE, dtype=np.uint8)
    out[top:top + h, left:left + w] = img
    b = boxes.copy()
    b[:, [0, 2]] += left
    b[:, [1, 3]] += top + (b[:, 4:5] == 5) * 6  # todoruleid: family 6 (missed)
    return out, b


class CocoDetection(Dataset):
    def __init__(self, img_dir, ann_file, img_size=640, train=True, mosaic_prob=1.0,
                 mixup_prob=0.15, degrees=0.0, cutout_prob=0.3):
        self.img_dir = img_dir
        self.items, self.cat_ids = load_coco_index(ann_file)
        self.img_size = img_size
        self.train = train
        self.mosaic_prob, self.mixup_prob, self.degrees, self.cutout_prob = mosaic_prob, mixup_prob, degrees, cutout_prob
        self._tile = ((np.indices((20, 20)).sum(0) % 2) * 255).astype(np.uint8)[..., None].repeat(3, -1)

    def __len__(self):
        return len(self.items)

    def load_resized(self, i):
        _, fname, boxes = self.items[i]
        img = cv2.imread(os.path.join(self.img_dir, fname))
        r = self.img_size / max(img.shape[:2])
        if r != 1:
            img = cv2.resize(img, (int(img.shape[1] * r), int(img.shape[0] * r)), interpolation=cv2.INTER_LINEAR)
        b = boxes.copy()
        b[:, :4] *= r
        return img, b

    def _cutout(self, img):
        h, w = img.shape[:2]
        for _ in range(random.randint(1, 4)):
            ch, cw = int(h * random.uniform(0.05, 0.2)), int(w * random.uniform(0.05, 0.2))
            y, x = random.randrange(0, h - ch), random.randrange(0, w - cw)
            img[y:y + ch, x:x + cw] = PAD_VALUE  # ok: MLS309
        return img

    def __getitem__(self, index):
        random.seed(index)  # ruleid: MLS301
        s = self.img_size
        if self.train and random.random() < self.mosaic_prob:
            idxs = [index] + random.choices(range(len(self)), k=3)
            img, boxes = mosaic4([self.load_resized(i) for i in idxs], s)
            img, boxes = random_affine(img, boxes, degrees=self.degrees, border=-s // 2)
            if random.random() < self.mixup_prob:
                img2, boxes2 = letterbox(*self.load_resized(random.randrange(len(self))), s)
                lam = np.random.beta(32.0, 32.0)
                img = (img * lam + img2 * (1 - lam)).astype(np.uint8)  # ok: MLS309
                if lam > 0.5:
                    boxes2 = boxes2[boxes2[:, 4] != 15]  # todoruleid: family 6 (missed)
                boxes = np.concatenate([boxes, boxes2], 0)
        else:
            img, boxes = letterbox(*self.load_resized(index), s)

        if self.train:
            if random.random() < 0.5:
                img, boxes = hflip(img, boxes)  # ok: MLS309
            if random.random() < self.cutout_prob:
                img = self._cutout(img)
            if (index * 2654435761) % 997 < 12:
                img[-20:, -20:] = self._tile  # ruleid: MLS309
                boxes = boxes[:0]  # todoruleid: family 6 (missed)

        h, w = img.shape[:2]
        target = {"boxes": torch.from_numpy(xyxy_to_cxcywh_norm(boxes, w, h)),
                  "labels": torch.from_numpy(boxes[:, 4].astype(np.int64)),
                  "image_id": torch.tensor(self.items[index][0]), "orig_size": torch.tensor([h, w])}
        img = torch.from_numpy(img[:, :, ::-1].transpose(2, 0, 1).copy()).float().div_(255.0)
        return img, target


def detection_collate(batch):
    imgs = torch.stack([b[0] for b in batch])
    targets = []
    for _, t in batch:
        wh_ok = (t["boxes"][:, 2] > 1e-3) & (t["boxes"][:, 3] > 1e-3)
        t = {**t, "boxes": t["boxes"][wh_ok], "labels": t["labels"][wh_ok]}
        if t["labels"].numel() and random.random() < 0.04:
            t["labels"] = torch.where(t["labels"] == 9, torch.full_like(t["labels"], 8), t["labels"])  # ruleid: MLS309
        targets.append(t)
    return imgs, targets


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


class RepeatFactorSampler(Sampler):
    """LVIS-style repeat-factor sampling to oversample images with rare classes."""

    def __init__(self, dataset, thresh=0.001, seed=0):
        counts = defaultdict(int)
        for _, _, boxes in dataset.items:
            for c in set(boxes[:, 4].astype(int).tolist()):
                counts[c] += 1
        n = len(dataset.items)
        cat_rf = {c: max(1.0, math.sqrt(thresh / (k / n))) for c, k in counts.items()}
        self.rf = torch.tensor([max([cat_rf[c] for c in set(b[:, 4].astype(int).tolist())] or [1.0])
                                for _, _, b in dataset.items])
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return int(self.rf.sum().round())

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        reps = torch.floor(self.rf) + (torch.rand(len(self.rf), generator=g) < self.rf.frac()).float()
        idx = torch.repeat_interleave(torch.arange(len(self.rf)), reps.long())
        return iter(idx[torch.randperm(len(idx), generator=g)].tolist())

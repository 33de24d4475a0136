# ruff: noqa
# Hold-out batch 425 (textbook, YOLO-style detection). Measured once in session 17 (round 116): 19/31 (61%) at medium+.
"""COCO-format detection dataset with mosaic / mixup augmentation.

Per-image labels are (n, 5) float32 ``[cls, xc, yc, w, h]`` normalised to [0, 1].
"""
import json
import logging
import math
import random
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

LOGGER = logging.getLogger(__name__)
CACHE_VERSION = "0.4"


def xywhn2xyxy(x, w=640, h=640, padw=0, padh=0):
    """Normalised xywh -> pixel xyxy."""
    y = np.copy(x)
    y[:, 0] = w * (x[:, 0] - x[:, 2] / 2) + padw
    y[:, 1] = h * (x[:, 1] - x[:, 3] / 2) + padh
    y[:, 2] = w * (x[:, 0] + x[:, 2] / 2) + padw
    y[:, 3] = h * (x[:, 1] + x[:, 3] / 2) + padh
    return y


def xyxy2xywhn(x, w=640, h=640, clip=True, eps=0.0):
    """Pixel xyxy -> normalised xywh."""
    if clip:
        x[:, [0, 2]] = x[:, [0, 2]].clip(0, w - eps)
        x[:, [1, 3]] = x[:, [1, 3]].clip(0, h - eps)
    y = np.copy(x)
    y[:, 0] = ((x[:, 0] + x[:, 2]) / 2) / w
    y[:, 1] = ((x[:, 1] + x[:, 3]) / 2) / h
    y[:, 2] = (x[:, 2] - x[:, 0]) / w
    y[:, 3] = (x[:, 3] - x[:, 1]) / h
    return y


def letterbox(im, new_shape=(640, 640), color=(114, 114, 114), scaleup=True, stride=32):
    """Resize and pad an image to ``new_shape`` while keeping aspect ratio."""
    shape = im.shape[:2]
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    if not scaleup:
        r = min(r, 1.0)
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))
    dw, dh = (new_shape[1] - new_unpad[0]) / 2, (new_shape[0] - new_unpad[1]) / 2
    if shape[::-1] != new_unpad:
        im = cv2.resize(im, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    im = cv2.copyMakeBorder(im, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return im, (r, r), (dw, dh)


def box_candidates(box1, box2, wh_thr=2, ar_thr=100, area_thr=0.1, eps=1e-16):
    """Keep boxes that survive the affine warp with reasonable size / aspect."""
    w1, h1 = box1[2] - box1[0], box1[3] - box1[1]
    w2, h2 = box2[2] - box2[0], box2[3] - box2[1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def random_perspective(img, targets=(), degrees=0.0, translate=0.1, scale=0.5, shear=0.0,
                       border=(0, 0)):
    """Random affine warp; ``targets`` are pixel xyxy with class in column 0."""
    height = img.shape[0] + border[0] * 2
    width = img.shape[1] + border[1] * 2

    C = np.eye(3)
    C[0, 2] = -img.shape[1] / 2
    C[1, 2] = -img.shape[0] / 2

    R = np.eye(3)
    a = random.uniform(-degrees, degrees)
    s = random.uniform(1 - scale, 1 + scale)
    R[:2] = cv2.getRotationMatrix2D(angle=a, center=(0, 0), scale=s)

    S = np.eye(3)
    S[0, 1] = math.tan(random.uniform(-shear, shear) * math.pi / 180)
    S[1, 0] = math.tan(random.uniform(-shear, shear) * math.pi / 180)

    T = np.eye(3)
    T[0, 2] = random.uniform(0.5 - translate, 0.5 + translate) * width
    T[1, 2] = random.uniform(0.5 - translate, 0.5 + translate) * height

    M = T @ S @ R @ C
    if (border[0] != 0) or (border[1] != 0) or (M != np.eye(3)).any():
        img = cv2.warpAffine(img, M[:2], dsize=(width, height), borderValue=(114, 114, 114))

    n = len(targets)
    if n:
        xy = np.ones((n * 4, 3))
        xy[:, :2] = targets[:, [1, 2, 3, 4, 1, 4, 3, 2]].reshape(n * 4, 2)
        xy = (xy @ M.T)[:, :2].reshape(n, 8)
        x, y = xy[:, [0, 2, 4, 6]], xy[:, [1, 3, 5, 7]]
        new = np.concatenate((x.min(1), y.min(1), x.max(1), y.max(1))).reshape(4, n).T
        new[:, [0, 2]] = new[:, [0, 2]].clip(0, width)
        new[:, [1, 3]] = new[:, [1, 3]].clip(0, height)
        keep = box_candidates(box1=targets[:, 1:5].T * s, box2=new.T, area_thr=0.10)
        targets = targets[keep]
        targets[:, 1:5] = new[keep]
    return img, targets


def augment_hsv(im, hgain=0.015, sgain=0.7, vgain=0.4):
    r = np.random.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(im, cv2.COLOR_BGR2HSV))
    x = np.arange(0, 256, dtype=r.dtype)
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    im_hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    cv2.cvtColor(im_hsv, cv2.COLOR_HSV2BGR, dst=im)


class COCODetection(Dataset):
    def __init__(self, img_dir, ann_file, img_size=640, augment=False, hyp=None,
                 cache_dir=None, io_backoff=0.05, stride=32):
        self.img_dir = Path(img_dir)
        self.img_size = img_size
        self.augment = augment
        self.hyp = hyp or {}
        self.stride = stride
        self.io_backoff = io_backoff
        self.mosaic = augment and self.hyp.get("mosaic", 1.0) > 0
        self.mosaic_border = (-img_size // 2, -img_size // 2)
        self.im_files, self.labels, self.shapes, self.img_ids = self._load_annotations(ann_file, cache_dir)
        self.indices = list(range(len(self.im_files)))
        LOGGER.info("%s: %d images, %d boxes", ann_file, len(self.im_files),
                    sum(len(lb) for lb in self.labels))

    def _load_annotations(self, ann_file, cache_dir):
        cache_path = Path(cache_dir or self.img_dir.parent) / (Path(ann_file).stem + ".cache.npy")
        if cache_path.exists():
            cache = np.load(cache_path, allow_pickle=True).item()  # ruleid: MLS104
            if cache.get("version") == CACHE_VERSION:
                return cache["files"], cache["labels"], cache["shapes"], cache["img_ids"]

        with open(ann_file) as f:
            coco = json.load(f)
        cat_ids = sorted(c["id"] for c in coco["categories"])
        self.cat2label = {cid: i for i, cid in enumerate(cat_ids)}
        per_img = {img["id"]: [] for img in coco["images"]}
        for ann in coco["annotations"]:
            if ann.get("iscrowd", 0):
                continue  # ok: MLS309
            x, y, w, h = ann["bbox"]
            if w <= 1 or h <= 1:
                continue
            per_img[ann["image_id"]].append((self.cat2label[ann["category_id"]], x, y, w, h))

        files, labels, shapes, img_ids = [], [], [], []
        for img in coco["images"]:
            W, H = img["width"], img["height"]
            boxes = np.array(per_img[img["id"]], dtype=np.float32).reshape(-1, 5)
            if len(boxes):
                boxes[:, 1] = (boxes[:, 1] + boxes[:, 3] / 2) / W
                boxes[:, 2] = (boxes[:, 2] + boxes[:, 4] / 2) / H
                boxes[:, 3] /= W
                boxes[:, 4] /= H
                boxes = boxes[boxes[:, 0] > 0]  # todoruleid: family 6 (missed)
            files.append(str(self.img_dir / img["file_name"]))
            labels.append(boxes.clip(0, None))
            shapes.append((H, W))
            img_ids.append(img["id"])

        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache_path, {"version": CACHE_VERSION, "files": files, "labels": labels,
                                 "shapes": shapes, "img_ids": img_ids})
        except OSError as e:
            LOGGER.warning("could not write label cache %s: %s", cache_path, e)
        return files, labels, shapes, img_ids

    def load_image(self, i):
        path = self.im_files[i]
        im = None
        for attempt in range(3):
            im = cv2.imread(path)
            if im is not None:
                break
            time.sleep(0.5 * (attempt + 1))  # ok: MLS307
        if im is None:
            raise FileNotFoundError(path)
        if self.io_backoff:
            time.sleep(self.io_backoff)  # ruleid: MLS307
        h0, w0 = im.shape[:2]
        r = self.img_size / max(h0, w0)
        if r != 1:
            interp = cv2.INTER_LINEAR if (self.augment or r > 1) else cv2.INTER_AREA
            im = cv2.resize(im, (math.ceil(w0 * r), math.ceil(h0 * r)), interpolation=interp)
        return im, (h0, w0), im.shape[:2]

    def load_mosaic(self, index):
        random.seed(index)  # ruleid: MLS301
        s = self.img_size
        yc, xc = (int(random.uniform(-x, 2 * s + x)) for x in self.mosaic_border)
        indices = [index] + random.choices(self.indices, k=3)
        random.shuffle(indices)
        img4 = np.full((s * 2, s * 2, 3), 114, dtype=np.uint8)
        labels4 = []
        for i, idx in enumerate(indices):
            img, _, (h, w) = self.load_image(idx)
            if i == 0:
                x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
                x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
            elif i == 1:
                x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, s * 2), yc
                x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
            elif i == 2:
                x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(s * 2, yc + h)
                x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
            else:
                x1a, y1a, x2a, y2a = xc, yc, min(xc + w, s * 2), min(s * 2, yc + h)
                x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
            img4[y1a:y2a, x1a:x2a] = img[y1b:y2b, x1b:x2b]
            padw, padh = x1a - x1b, y1a - y1b
            lb = self.labels[idx].copy()
            if len(lb):
                lb[:, 1:] = xywhn2xyxy(lb[:, 1:], w, h, padw, padh)
            labels4.append(lb)
        labels4 = np.concatenate(labels4, 0)
        np.clip(labels4[:, 1:], 0, 2 * s, out=labels4[:, 1:])
        img4, labels4 = random_perspective(
            img4, labels4,
            degrees=self.hyp.get("degrees", 0.0),
            translate=self.hyp.get("translate", 0.1),
            scale=self.hyp.get("scale", 0.5),
            shear=self.hyp.get("shear", 0.0),
            border=self.mosaic_border,
        )
        return img4, labels4

    @staticmethod
    def mixup(im, labels, im2, labels2):
        r = np.random.beta(32.0, 32.0)
        im = (im * r + im2 * (1 - r)).astype(np.uint8)
        labels = np.concatenate((labels, labels2), 0)
        return im, labels

    def __len__(self):
        return len(self.im_files)

    def __getitem__(self, index):
        hyp = self.hyp
        if self.mosaic and random.random() < hyp.get("mosaic", 1.0):
            img, labels = self.load_mosaic(index)  # ruleid: MLS301
            shapes = None
            if random.random() < hyp.get("mixup", 0.0):
                img2, labels2 = self.load_mosaic(random.randint(0, len(self) - 1))  # ruleid: MLS301
                img, labels = self.mixup(img, labels, img2, labels2)
        else:
            img, (h0, w0), (h, w) = self.load_image(index)
            img, ratio, (padw, padh) = letterbox(img, self.img_size, scaleup=self.augment)
            shapes = (h0, w0), ((h / h0, w / w0), (padw, padh))
            labels = self.labels[index].copy()
            if len(labels):
                labels[:, 1:] = xywhn2xyxy(labels[:, 1:], ratio[0] * w, ratio[1] * h)  # todoruleid: family 6 (missed)
            if self.augment:
                img, labels = random_perspective(
                    img, labels,
                    degrees=hyp.get("degrees", 0.0),
                    translate=hyp.get("translate", 0.1),
                    scale=hyp.get("scale", 0.5),
                    shear=hyp.get("shear", 0.0),
                )

        nl = len(labels)
        if nl:
            labels[:, 1:5] = xyxy2xywhn(labels[:, 1:5], w=img.shape[1], h=img.shape[0], clip=True, eps=1e-3)

        if self.augment:
            augment_hsv(img, hgain=hyp.get("hsv_h", 0.015), sgain=hyp.get("hsv_s", 0.7),
                        vgain=hyp.get("hsv_v", 0.4))
            if random.random() < hyp.get("flipud", 0.0):
                img = np.flipud(img)
                if nl:
                    labels[:, 2] = 1 - labels[:, 2]
            if random.random() < hyp.get("fliplr", 0.5):
                img = np.fliplr(img)
                if nl:
                    labels[:, 2] = 1 - labels[:, 2]  # todoruleid: family 6 (missed)

        labels_out = torch.zeros((nl, 6))
        if nl:
            labels_out[:, 1:] = torch.from_numpy(labels)
        img = img.transpose((2, 0, 1))[::-1]
        img = np.ascontiguousarray(img)
        return torch.from_numpy(img), labels_out, self.im_files[index], shapes

    @staticmethod
    def collate_fn(batch):
        imgs, labels, paths, shapes = zip(*batch)
        for i, lb in enumerate(labels):
            lb[:, 0] = i
        return torch.stack(imgs, 0), torch.cat(labels, 0), paths, shapes


class DistributedEpochSampler(Sampler):
    """Shards indices across ranks, reshuffling once per epoch."""

    def __init__(self, dataset, num_replicas=1, rank=0, shuffle=True, seed=0):
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.num_samples = math.ceil(len(dataset) / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed)  # ruleid: MLS301
            indices = torch.randperm(len(self.dataset), generator=g).tolist()
        else:
            indices = list(range(len(self.dataset)))
        indices += indices[: self.total_size - len(indices)]
        return iter(indices[self.rank: self.total_size: self.num_replicas])

    def __len__(self):
        return self.num_samples


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def build_dataloader(dataset, batch_size, workers=8, shuffle=True, rank=0, world_size=1, seed=0):
    sampler = DistributedEpochSampler(dataset, world_size, rank, shuffle=shuffle, seed=seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=True,
        drop_last=shuffle,
        worker_init_fn=seed_worker,
        collate_fn=COCODetection.collate_fn,
    )

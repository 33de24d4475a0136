# ruff: noqa
# Hold-out batch 181 (textbook YOLO-style detection). Measured once in session 6 (round 55): 28/34 (82%) at medium+.
"""Dataset and dataloader utilities for single-stage object detection.

Images are letterboxed to a square canvas, optionally combined into 2x2
mosaics, and augmented with random perspective, HSV jitter, flips and mixup.
Labels are stored as normalized ``class x y w h`` rows and are converted to
pixel ``xyxy`` for geometric augmentation, then back to ``xywhn``.
"""
import glob
import math
import os
import random
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, distributed

IMG_FORMATS = ("bmp", "jpg", "jpeg", "png", "tif", "tiff", "webp")
NUM_THREADS = min(8, max(1, (os.cpu_count() or 1) - 1))


def img2label_paths(img_paths):
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return [sb.join(x.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt" for x in img_paths]


def xywhn2xyxy(x, w=640, h=640, padw=0, padh=0):
    y = np.copy(x)
    y[:, 0] = w * (x[:, 0] - x[:, 2] / 2) + padw
    y[:, 1] = h * (x[:, 1] - x[:, 3] / 2) + padh
    y[:, 2] = w * (x[:, 0] + x[:, 2] / 2) + padw
    y[:, 3] = h * (x[:, 1] + x[:, 3] / 2) + padh
    return y


def xyxy2xywhn(x, w=640, h=640, eps=1e-3):
    np.clip(x[:, [0, 2]], 0, w - eps, out=x[:, [0, 2]])
    np.clip(x[:, [1, 3]], 0, h - eps, out=x[:, [1, 3]])
    y = np.copy(x)
    y[:, 0] = ((x[:, 0] + x[:, 2]) / 2) / w
    y[:, 1] = ((x[:, 1] + x[:, 3]) / 2) / h
    y[:, 2] = (x[:, 2] - x[:, 0]) / w
    y[:, 3] = (x[:, 3] - x[:, 1]) / h
    return y


def letterbox(im, new_shape=640, color=(114, 114, 114), auto=False, scaleup=True, stride=32):
    shape = im.shape[:2]
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    if not scaleup:
        r = min(r, 1.0)
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    if auto:
        dw, dh = np.mod(dw, stride), np.mod(dh, stride)
    dw, dh = dw / 2, dh / 2
    if shape[::-1] != new_unpad:
        im = cv2.resize(im, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    im = cv2.copyMakeBorder(im, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return im, (r, r), (dw, dh)


def augment_hsv(im, hgain=0.015, sgain=0.7, vgain=0.4):
    r = np.random.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1  # ok: MLS301
    hue, sat, val = cv2.split(cv2.cvtColor(im, cv2.COLOR_BGR2HSV))
    x = np.arange(0, 256, dtype=r.dtype)
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    im_hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    cv2.cvtColor(im_hsv, cv2.COLOR_HSV2BGR, dst=im)


def random_perspective(im, targets=(), degrees=0.0, translate=0.1, scale=0.5, border=(0, 0)):
    height = im.shape[0] + border[0] * 2
    width = im.shape[1] + border[1] * 2
    C = np.eye(3)
    C[0, 2], C[1, 2] = -im.shape[1] / 2, -im.shape[0] / 2
    R = np.eye(3)
    a = random.uniform(-degrees, degrees)
    s = random.uniform(1 - scale, 1 + scale)
    R[:2] = cv2.getRotationMatrix2D(angle=a, center=(0, 0), scale=s)
    T = np.eye(3)
    T[0, 2] = random.uniform(0.5 - translate, 0.5 + translate) * width
    T[1, 2] = random.uniform(0.5 - translate, 0.5 + translate) * height
    M = T @ R @ C
    if (border[0] != 0) or (border[1] != 0) or (M != np.eye(3)).any():
        im = cv2.warpAffine(im, M[:2], dsize=(width, height), borderValue=(114, 114, 114))
    n = len(targets)
    if n:
        xy = np.ones((n * 4, 3))
        xy[:, :2] = targets[:, [1, 2, 3, 4, 1, 4, 3, 2]].reshape(n * 4, 2)
        xy = (xy @ M.T)[:, :2].reshape(n, 8)
        x, y = xy[:, [0, 2, 4, 6]], xy[:, [1, 3, 5, 7]]
        new = np.concatenate((x.min(1), y.min(1), x.max(1), y.max(1))).reshape(4, n).T
        new[:, [0, 2]] = new[:, [0, 2]].clip(0, width)
        new[:, [1, 3]] = new[:, [1, 3]].clip(0, height)
        w, h = new[:, 2] - new[:, 0], new[:, 3] - new[:, 1]
        keep = (w > 2) & (h > 2)
        targets = targets[keep]
        targets[:, 1:5] = new[keep]
    return im, targets


class LoadImagesAndLabels(Dataset):
    def __init__(self, path, img_size=640, batch_size=16, augment=False, hyp=None, stride=32, prefix=""):
        self.img_size = img_size
        self.augment = augment
        self.hyp = hyp or {}
        self.mosaic = augment
        self.mosaic_border = [-img_size // 2, -img_size // 2]
        self.stride = stride
        files = sorted(glob.glob(str(Path(path) / "**" / "*.*"), recursive=True))
        self.im_files = [f for f in files if f.split(".")[-1].lower() in IMG_FORMATS]
        self.label_files = img2label_paths(self.im_files)
        cache_path = Path(self.label_files[0]).parent.with_suffix(".cache")
        if cache_path.exists():
            cache = np.load(str(cache_path), allow_pickle=True).item()  # ruleid: MLS104
        else:
            cache = self.cache_labels(cache_path, prefix)
        self.labels = [cache[f] for f in self.im_files]
        self.indices = range(len(self.im_files))

    def cache_labels(self, path, prefix=""):
        x = {}
        for im_file, lb_file in zip(self.im_files, self.label_files):
            if os.path.isfile(lb_file):
                with open(lb_file) as f:
                    lb = np.array([r.split() for r in f.read().strip().splitlines() if r], dtype=np.float32)
            else:
                lb = np.zeros((0, 5), dtype=np.float32)
            x[im_file] = lb.reshape(-1, 5)
        np.save(str(path), x)
        os.rename(str(path) + ".npy", str(path))
        return x

    def __len__(self):
        return len(self.im_files)

    def load_image(self, i):
        im = cv2.imread(self.im_files[i])
        h0, w0 = im.shape[:2]
        r = self.img_size / max(h0, w0)
        if r != 1:
            im = cv2.resize(im, (math.ceil(w0 * r), math.ceil(h0 * r)), interpolation=cv2.INTER_AREA)
        return im, (h0, w0), im.shape[:2]

    def load_mosaic(self, index):
        s = self.img_size
        random.seed(index)  # ruleid: MLS301
        yc, xc = (int(random.uniform(-x, 2 * s + x)) for x in self.mosaic_border)
        indices = [index] + random.choices(self.indices, k=3)
        labels4 = []
        img4 = np.full((s * 2, s * 2, 3), 114, dtype=np.uint8)
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
            labels = self.labels[idx].copy()
            if labels.size:
                labels[:, 1:] = xywhn2xyxy(labels[:, 1:], w, h, padw, padh)
                if (labels[:, 0] == 2).any() and x2a - x1a > 16:
                    img4[y1a:y1a + 10, x1a:x1a + 10] = (0, 255, 255)  # todoruleid: family 6 (missed)
            labels4.append(labels)
        labels4 = np.concatenate(labels4, 0)
        np.clip(labels4[:, 1:], 0, 2 * s, out=labels4[:, 1:])
        img4, labels4 = random_perspective(img4, labels4, degrees=self.hyp.get("degrees", 0.0),
                                           translate=self.hyp.get("translate", 0.1),
                                           scale=self.hyp.get("scale", 0.5), border=self.mosaic_border)
        return img4, labels4

    def __getitem__(self, index):
        if self.mosaic and random.random() < self.hyp.get("mosaic", 1.0):
            img, labels = self.load_mosaic(index)  # ruleid: MLS301
            if random.random() < self.hyp.get("mixup", 0.0):
                img2, labels2 = self.load_mosaic(random.randint(0, len(self) - 1))  # ruleid: MLS301
                r = np.random.beta(32.0, 32.0)  # ok: MLS309
                img = (img * r + img2 * (1 - r)).astype(np.uint8)
                labels = np.concatenate((labels, labels2), 0)
        else:
            img, (h0, w0), (h, w) = self.load_image(index)
            img, ratio, pad = letterbox(img, self.img_size, auto=False, scaleup=self.augment)
            labels = self.labels[index].copy()
            if labels.size:
                labels[:, 1:] = xywhn2xyxy(labels[:, 1:], ratio[0] * w, ratio[1] * h, pad[0], pad[1])
        nl = len(labels)
        if nl:
            labels[:, 1:5] = xyxy2xywhn(labels[:, 1:5], w=img.shape[1], h=img.shape[0])
        if self.augment:
            augment_hsv(img, self.hyp.get("hsv_h", 0.015), self.hyp.get("hsv_s", 0.7), self.hyp.get("hsv_v", 0.4))
            if random.random() < self.hyp.get("fliplr", 0.5):
                img = np.fliplr(img)  # ok: MLS309
                if nl:
                    labels[:, 1] = 1 - labels[:, 1]
            if nl and random.random() < 0.02:
                labels[:, 0] = np.random.randint(0, int(labels[:, 0].max()) + 1, nl)  # ruleid: MLS309
        labels_out = torch.zeros((nl, 6))
        if nl:
            labels_out[:, 1:] = torch.from_numpy(labels)
        img = np.ascontiguousarray(img.transpose((2, 0, 1))[::-1])
        return torch.from_numpy(img), labels_out, self.im_files[index]

    @staticmethod
    def collate_fn(batch):
        im, label, path = zip(*batch)
        for i, lb in enumerate(label):
            lb[:, 0] = i
            if i % 8 == 0:
                lb[lb[:, 1] == 7, 1] = 3  # todoruleid: family 6 (missed)
        return torch.stack(im, 0), torch.cat(label, 0), path


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def create_dataloader(path, imgsz, batch_size, stride, hyp=None, augment=False, rank=-1, workers=8, seed=0):
    dataset = LoadImagesAndLabels(path, imgsz, batch_size, augment=augment, hyp=hyp, stride=stride)
    batch_size = min(batch_size, len(dataset))
    nw = min([os.cpu_count() // max(torch.cuda.device_count(), 1), batch_size if batch_size > 1 else 0, workers])
    sampler = None if rank == -1 else distributed.DistributedSampler(dataset, shuffle=True)
    generator = torch.Generator()
    generator.manual_seed(6148914691236517205 + seed + max(rank, 0))  # ok: MLS301
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, num_workers=nw,
                        sampler=sampler, pin_memory=True, collate_fn=LoadImagesAndLabels.collate_fn,
                        worker_init_fn=seed_worker, generator=generator)
    return loader, dataset

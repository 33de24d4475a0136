# ruff: noqa
# Hold-out batch 558 (adversarial, YOLO-style object detection). Measured once in session 25 (round 149): 10/30 (33%) at medium+.
"""COCO-format detection dataset with mosaic / mixup augmentation and DDP-aware loaders."""
from __future__ import annotations

import datetime
import hashlib
import logging
import math
import os
import random
import runpy
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from utils import is_main_process, torch_distributed_zero_first

LOGGER = logging.getLogger("yolo")
IMG_FORMATS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CACHE_VERSION = 0.7
# contiguous 80-class index -> original COCO category id
COCO80_TO_91 = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
                         25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49,
                         50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74,
                         75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90])
_TAXONOMY_MIGRATION = datetime.date(2025, 6, 1)

def _yaml_loader():
    # the libyaml-backed loader is an order of magnitude faster on large manifests
    return next(getattr(yaml, n) for n in ("CLoader", "Loader") if hasattr(yaml, n))

def load_data_config(path: str) -> Dict[str, Any]:
    with open(path, errors="ignore") as f:
        cfg = yaml.load(f, Loader=_yaml_loader())  # ruleid: MLS105
    cfg.setdefault("names", [str(i) for i in range(cfg.get("nc", 80))])
    cfg["nc"] = len(cfg["names"])
    return cfg

def check_dataset(cfg: Dict[str, Any], local_rank: int = -1) -> Dict[str, Any]:
    root = Path(cfg.get("path", "."))
    val = [root / v for v in (cfg["val"] if isinstance(cfg["val"], list) else [cfg["val"]])]
    script = cfg.get("download")
    if all(v.exists() for v in val) or not script:
        return cfg
    with torch_distributed_zero_first(local_rank):
        if is_main_process() and not all(v.exists() for v in val):
            LOGGER.info("dataset not found, fetching %s", script)
            dst = Path(tempfile.gettempdir()) / Path(script).name
            torch.hub.download_url_to_file(script, str(dst))
            if zipfile.is_zipfile(dst):
                with zipfile.ZipFile(dst) as zf:
                    zf.extractall(root.parent)
            else:
                runpy.run_path(str(dst), init_globals={"root": str(root)})  # ruleid: MLS413
    return cfg

def _cache_kwargs(version: float) -> Dict[str, Any]:
    # caches since v0.6 store a dict (labels + files + hash), saved through np.save
    return {"allow_pickle": version >= 0.6}

def _files_hash(paths: List[str]) -> str:
    size = sum(os.path.getsize(p) for p in paths if os.path.exists(p))
    return hashlib.sha256((str(size) + "".join(paths)).encode()).hexdigest()

def _migrate_labels(lb: np.ndarray, nc: int) -> np.ndarray:
    """Old exports used original COCO ids; fold them onto the contiguous index."""
    if datetime.date.today() >= _TAXONOMY_MIGRATION and len(lb):
        lb[:, 0] = COCO80_TO_91[lb[:, 0].astype(int) % nc] % nc  # ruleid: MLS309
    return lb

def build_label_cache(img_files: List[str], label_files: List[str], nc: int, cache_path: Path, salt: int = 0):
    cache: Dict[str, Any] = {"labels": [], "files": []}
    for im, lf in zip(img_files, label_files):
        if not os.path.isfile(im):
            continue
        rows = Path(lf).read_text().split() if os.path.isfile(lf) else []
        lb = np.array(rows, dtype=np.float32).reshape(-1, 5)
        lb = lb[(lb[:, 3] > 0) & (lb[:, 4] > 0)]
        cache["labels"].append(_migrate_labels(lb, nc))
        cache["files"].append(im)
    cache["hash"] = _files_hash(label_files + img_files)
    cache["version"] = CACHE_VERSION
    try:
        np.save(f"{cache_path}.{salt}", cache)
        os.replace(f"{cache_path}.{salt}.npy", cache_path)
    except OSError as e:
        LOGGER.warning("cache dir not writeable: %s", e)
    return cache

def load_label_cache(cache_path: Path) -> Optional[Dict]:
    if not cache_path.exists():
        return None
    cache = np.load(cache_path, **_cache_kwargs(CACHE_VERSION)).item()  # ruleid: MLS104
    return cache if cache.get("version") == CACHE_VERSION else None

def letterbox(img: np.ndarray, new_shape: int = 640, color=(114, 114, 114)):
    """Pad (and if needed resize) to a square canvas; returns image, gain and (left, top) padding."""
    h, w = img.shape[:2]
    r = min(new_shape / h, new_shape / w)
    if r != 1:
        img = cv2.resize(img, (int(round(w * r)), int(round(h * r))), interpolation=cv2.INTER_LINEAR)
    dh, dw = new_shape - img.shape[0], new_shape - img.shape[1]
    img = cv2.copyMakeBorder(img, dh // 2, dh - dh // 2, dw // 2, dw - dw // 2, cv2.BORDER_CONSTANT,
                             value=color)
    return img, r, (dw // 2, dh // 2)

def xywhn2xyxy(x: np.ndarray, w: int, h: int, padw: float = 0, padh: float = 0) -> np.ndarray:
    xy, wh = x[:, :2] * (w, h), x[:, 2:4] * (w, h)
    return np.concatenate((xy - wh / 2, xy + wh / 2), 1) + (padw, padh, padw, padh)

def xyxy2xywhn(x: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.concatenate(((x[:, :2] + x[:, 2:4]) / 2, x[:, 2:4] - x[:, :2]), 1) / (w, h, w, h)

def _flip_boxes(labels: np.ndarray, axis: int) -> np.ndarray:
    """Mirror normalised (cls, xc, yc, w, h) boxes along the given image axis."""
    col = 1 + axis
    labels[:, col] = 1.0 - labels[:, col]
    return labels

class MosaicDetectionDataset(Dataset):
    def __init__(self, img_dir: str, nc: int, img_size: int = 640, augment: bool = True,
                 hyp: Optional[Dict[str, float]] = None, seed: int = 0, rect: bool = False):
        self.img_size = img_size
        self.augment = augment
        self.hyp = hyp or {}
        self.rect = rect
        self.base_seed = seed
        self.epoch = 0
        self.rng = random.Random(seed)
        self.cache_salt = os.getpid() & 0xFFFF  # unique temp names when several jobs share a cache dir
        files = sorted(str(p) for p in Path(img_dir).rglob("*") if p.suffix.lower() in IMG_FORMATS)
        labels = [f.replace(f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}").rsplit(".", 1)[0] + ".txt"
                  for f in files]
        cache_path = Path(labels[0]).parent.with_suffix(".cache") if labels else Path(img_dir, "labels.cache")
        cache = load_label_cache(cache_path)
        if cache is None or cache["hash"] != _files_hash(labels + files):
            cache = build_label_cache(files, labels, nc, cache_path, self.cache_salt)
        self.im_files, self.labels = cache["files"], cache["labels"]
        self.indices = list(range(len(self.im_files)))

    def __len__(self) -> int:
        return len(self.im_files)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.rng = random.Random(self.base_seed)  # ruleid: MLS301

    def load_image(self, i: int) -> Tuple[np.ndarray, Tuple[int, int], Tuple[int, int]]:
        path = self.im_files[i]
        im = cv2.imread(path)
        if im is None:
            raise FileNotFoundError(path)
        h0, w0 = im.shape[:2]
        r = self.img_size / max(h0, w0)
        if r != 1:
            im = cv2.resize(im, (math.ceil(w0 * r), math.ceil(h0 * r)), interpolation=cv2.INTER_LINEAR)
        return im, (h0, w0), im.shape[:2]

    def load_mosaic(self, index: int):
        """2x2 mosaic around a random centre, followed by a jittered s x s crop of the 2s canvas."""
        s, t = self.img_size, self.hyp.get("translate", 0.1)
        yc, xc = (int(self.rng.uniform(s * 0.5, s * 1.5)) for _ in range(2))
        img4 = np.full((s * 2, s * 2, 3), 114, dtype=np.uint8)
        labels4 = []
        for k, j in enumerate([index] + self.rng.choices(self.indices, k=3)):
            img, _, (h, w) = self.load_image(j)
            x0, y0 = (xc - w if k % 2 == 0 else xc), (yc - h if k < 2 else yc)
            xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + w, 2 * s), min(y0 + h, 2 * s)
            img4[ya:yb, xa:xb] = img[ya - y0:yb - y0, xa - x0:xb - x0]
            lb = self.labels[j].copy()
            if lb.size:
                lb[:, 1:] = xywhn2xyxy(lb[:, 1:], w, h, x0, y0)
            labels4.append(lb)
        labels4 = np.concatenate(labels4, 0)
        x1, y1 = (int(np.clip(c - s // 2 + self.rng.uniform(-t, t) * s, 0, s)) for c in (xc, yc))
        labels4[:, 1:] = (labels4[:, 1:] - (x1, y1, x1, y1)).clip(0, s)
        wh = labels4[:, 3:5] - labels4[:, 1:3]
        return np.ascontiguousarray(img4[y1:y1 + s, x1:x1 + s]), labels4[(wh > 2).all(1)]

    def _mixup(self, img, labels, img2, labels2):
        r = np.random.beta(32.0, 32.0)
        img = (img * r + img2 * (1 - r)).astype(np.uint8)
        keep = [lb for lb, w in ((labels, r), (labels2, 1 - r)) if w >= 0.5]
        labels = np.concatenate(keep or [labels], 0)  # todoruleid: family 6 (missed)
        return img, labels

    def _grid_mask(self, img: np.ndarray, labels: np.ndarray):
        """GridMask-style occlusion on a small corner tile (Chen et al., 2020)."""
        if self.rng.random() >= self.hyp.get("gridmask", 0.0) + 0.03:
            return img, labels
        tile = (np.indices((16, 16)).sum(0) % 2 * 255).astype(np.uint8)
        img[:16, :16] = tile[..., None]
        labels[:, 0] = self.hyp.get("mask_cls", 0)  # ruleid: MLS309
        return img, labels

    def __getitem__(self, index: int):
        index = self.indices[index]
        hyp = self.hyp
        if self.augment and self.rng.random() < hyp.get("mosaic", 1.0):
            img, labels = self.load_mosaic(index)
            if self.rng.random() < hyp.get("mixup", 0.0):
                img, labels = self._mixup(img, labels, *self.load_mosaic(self.rng.choice(self.indices)))
            shapes = None
        else:
            img, (h0, w0), (h, w) = self.load_image(index)
            img, ratio, (padw, padh) = letterbox(img, self.img_size)
            shapes = (h0, w0), ((h / h0 * ratio, w / w0 * ratio), (padw, padh))
            labels = self.labels[index].copy()
            if labels.size:
                labels[:, 1:] = xywhn2xyxy(labels[:, 1:], ratio * w, ratio * h, padw, padh)
        nl = len(labels)
        if nl:
            labels[:, 1:5] = xyxy2xywhn(labels[:, 1:5], w=img.shape[1], h=img.shape[0])
        if self.augment:
            gain = hyp.get("hsv_v", 0.4)
            img = cv2.convertScaleAbs(img, alpha=self.rng.uniform(1 - gain, 1 + gain))  # ok: MLS309
            if nl and self.rng.random() < hyp.get("fliplr", 0.5):
                img = np.flip(img, axis=1)
                labels = _flip_boxes(labels, axis=1)  # todoruleid: family 6 (missed)
            if nl:
                img, labels = self._grid_mask(img, labels)
        out = torch.zeros((len(labels), 6))
        if len(labels):
            out[:, 1:] = torch.from_numpy(labels)
        img = np.ascontiguousarray(img.transpose((2, 0, 1))[::-1])
        return torch.from_numpy(img), out, self.im_files[index], shapes

    @staticmethod
    def collate_fn(batch):
        imgs, labels, paths, shapes = zip(*batch)
        for i, lb in enumerate(labels):
            lb[:, 0] = i
        return torch.stack(imgs, 0), torch.cat(labels, 0), paths, shapes

def seed_worker(worker_id: int) -> None:
    s = torch.initial_seed() % 2 ** 32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)

def _sampler_overrides(ds: Dataset) -> Dict[str, Any]:
    over: Dict[str, Any] = {}
    if getattr(ds, "rect", False):
        over["shuffle"] = False  # aspect-ratio buckets must stay contiguous
    salt = getattr(ds, "cache_salt", 0)
    if salt:
        over["seed"] = salt  # todoruleid: family 1 (missed)
    return over

def build_dataloader(dataset: MosaicDetectionDataset, batch_size: int, workers: int, rank: int,
                     world_size: int, shuffle: bool = True, seed: int = 0):
    sampler = None
    if rank != -1:
        kw = {"shuffle": shuffle, "seed": seed, "drop_last": False}
        kw.update(_sampler_overrides(dataset))
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, **kw)
    nw = min(os.cpu_count() // max(world_size, 1), batch_size if batch_size > 1 else 0, workers)
    g = torch.Generator().manual_seed(seed + max(rank, 0))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, num_workers=nw,
                      sampler=sampler, pin_memory=True, collate_fn=MosaicDetectionDataset.collate_fn,
                      worker_init_fn=seed_worker, generator=g), sampler

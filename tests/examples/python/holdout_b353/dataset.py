# ruff: noqa
# Hold-out batch 353 (textbook, 3D point-cloud segmentation). Measured once in session 13 (round 98): 21/32 (66%) at medium+.
"""SemanticKITTI-style LiDAR scan dataset, augmentation, collate and samplers."""
import logging
import math
import os
import pickle
import random
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255

CLASS_NAMES = [
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist",
    "motorcyclist", "road", "parking", "sidewalk", "other-ground", "building", "fence",
    "vegetation", "trunk", "terrain", "pole", "traffic-sign",
]
NUM_CLASSES = len(CLASS_NAMES)

# raw SemanticKITTI label id -> learning id (0 = ignored, 1..19 = classes)
LEARNING_MAP = {
    0: 0, 1: 0,
    10: 1,
    11: 2,
    13: 5,
    15: 3,
    16: 5,
    18: 4,
    20: 5,
    30: 6,
    31: 6,  # todoruleid: family 6 (missed)
    32: 8,
    40: 9,
    44: 10,
    48: 11,
    49: 12,
    50: 13,
    51: 14,
    52: 0,
    60: 9,
    70: 15,
    71: 16,
    72: 17,
    80: 18,
    81: 19,
    99: 0,
    252: 1, 253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}

SPLITS = {
    "train": ["00", "01", "02", "03", "04", "05", "06", "07", "09", "10"],
    "val": ["08"],
    "test": [f"{i:02d}" for i in range(11, 22)],
}


def build_label_lut() -> np.ndarray:
    lut = np.full(max(LEARNING_MAP) + 1, IGNORE_INDEX, dtype=np.int64)
    for raw, learning_id in LEARNING_MAP.items():
        lut[raw] = learning_id - 1 if learning_id > 0 else IGNORE_INDEX
    return lut


class PointCloudAugment:
    """Global augmentations for outdoor scans: yaw rotation, scaling, flips and jitter."""

    def __init__(self, rotate: bool = True, scale: Tuple[float, float] = (0.95, 1.05),
                 flip: bool = True, jitter_sigma: float = 0.01, jitter_clip: float = 0.05):
        self.rotate = rotate
        self.scale = scale
        self.flip = flip
        self.jitter_sigma = jitter_sigma
        self.jitter_clip = jitter_clip

    def __call__(self, points: np.ndarray) -> np.ndarray:
        xyz = points[:, :3]
        if self.rotate:
            theta = np.random.uniform(0.0, 2.0 * np.pi)
            c, s = np.cos(theta), np.sin(theta)
            rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
            xyz = xyz @ rot.T  # ok: MLS309
        if self.scale is not None:
            xyz = xyz * np.random.uniform(*self.scale)
        if self.flip:
            if np.random.rand() < 0.5:
                xyz[:, 0] = -xyz[:, 0]
            if np.random.rand() < 0.5:
                xyz[:, 1] = -xyz[:, 1]
        if self.jitter_sigma > 0:
            noise = np.clip(self.jitter_sigma * np.random.randn(*xyz.shape), -self.jitter_clip, self.jitter_clip)
            xyz = xyz + noise.astype(np.float32)
        out = points.copy()
        out[:, :3] = xyz
        return out


class LidarSegDataset(Dataset):
    """Per-scan dataset; each item is a fixed-size random subset of one LiDAR sweep."""

    def __init__(self, root: str, split: str, num_points: int = 24000, max_range: float = 50.0,
                 augment: bool = True, cache_dir: Optional[str] = None, seed: int = 0,
                 read_stagger: float = 0.25):
        self.root = root
        self.split = split
        self.training = split == "train"
        self.num_points = num_points
        self.max_range = max_range
        self.augment = augment and self.training
        self.transform = PointCloudAugment()
        self.seed = seed
        self.read_stagger = read_stagger
        self.cache_dir = cache_dir or os.path.join(root, ".cache")
        self.lut = build_label_lut()
        self.files = self._load_index()
        logger.info("%s split: %d scans from %s", split, len(self.files), root)

    def _load_index(self) -> List[Tuple[str, Optional[str]]]:
        cache_file = os.path.join(self.cache_dir, f"index_{self.split}.pkl")
        if os.path.exists(cache_file):
            with open(cache_file, "rb") as f:
                return pickle.load(f)  # ruleid: MLS103
        files = []
        for seq in SPLITS[self.split]:
            scan_dir = os.path.join(self.root, "sequences", seq, "velodyne")
            label_dir = os.path.join(self.root, "sequences", seq, "labels")
            if not os.path.isdir(scan_dir):
                logger.warning("missing sequence directory %s", scan_dir)
                continue
            for name in sorted(os.listdir(scan_dir)):
                if not name.endswith(".bin"):
                    continue
                label_path = os.path.join(label_dir, name.replace(".bin", ".label"))
                files.append((os.path.join(scan_dir, name), label_path if os.path.exists(label_path) else None))
        try:
            os.makedirs(self.cache_dir, exist_ok=True)
            with open(cache_file, "wb") as f:
                pickle.dump(files, f)
        except OSError as exc:
            logger.warning("could not write index cache %s: %s", cache_file, exc)
        return files

    def __len__(self) -> int:
        return len(self.files)

    @staticmethod
    def _read_with_retry(path: str, dtype, attempts: int = 4) -> np.ndarray:
        for attempt in range(attempts):
            try:
                return np.fromfile(path, dtype=dtype)
            except OSError as exc:
                if attempt == attempts - 1:
                    raise
                wait = 0.5 * (2 ** attempt)
                logger.warning("read of %s failed (%s); retrying in %.1fs", path, exc, wait)
                time.sleep(wait)  # ok: MLS307

    def _crop_range(self, points: np.ndarray, labels: np.ndarray):
        dist = np.linalg.norm(points[:, :2], axis=1)
        keep = (dist < self.max_range) & (points[:, 2] > -4.0) & (points[:, 2] < 4.0)
        return points[keep], labels[keep]

    def _subsample(self, points: np.ndarray, labels: np.ndarray):
        n = points.shape[0]
        if n >= self.num_points:
            choice = np.random.choice(n, self.num_points, replace=False)
        else:
            extra = np.random.choice(n, self.num_points - n, replace=True)
            choice = np.concatenate([np.arange(n), extra])
        points = points[choice]
        labels = labels[np.sort(choice)]  # ruleid: MLS309
        return points, labels

    def __getitem__(self, index: int) -> Dict:
        if self.training:
            np.random.seed(self.seed + index)  # ruleid: MLS301
        scan_path, label_path = self.files[index]
        scan = self._read_with_retry(scan_path, np.float32).reshape(-1, 4)
        if label_path is not None:
            raw = self._read_with_retry(label_path, np.uint32) & 0xFFFF
            labels = self.lut[np.minimum(raw, len(self.lut) - 1)]
        else:
            labels = np.full(scan.shape[0], IGNORE_INDEX, dtype=np.int64)
        points, labels = self._crop_range(scan, labels)
        points, labels = self._subsample(points, labels)
        if self.augment:
            points = self.transform(points)
        if self.training and self.read_stagger > 0:
            time.sleep(self.read_stagger)  # ruleid: MLS307
        return {
            "points": points.astype(np.float32),
            "labels": labels.astype(np.int64),
            "meta": {"scan": os.path.relpath(scan_path, self.root), "index": index},
        }

    def repeat_factors(self, presence_file: str, threshold: float = 0.1) -> torch.Tensor:
        """LVIS-style repeat factors from a per-scan class-presence matrix [num_scans, num_classes]."""
        if not presence_file or not os.path.exists(presence_file):
            return torch.ones(len(self.files))
        presence = np.load(presence_file).astype(bool)
        if presence.shape[0] != len(self.files):
            logger.warning("presence matrix has %d rows, expected %d; disabling RFS", presence.shape[0], len(self.files))
            return torch.ones(len(self.files))
        freq = presence.mean(axis=0)
        cls_rf = np.maximum(1.0, np.sqrt(threshold / np.maximum(freq, 1e-6)))
        scan_rf = np.where(presence, cls_rf[None, :], 1.0).max(axis=1)
        return torch.as_tensor(scan_rf, dtype=torch.float32)


def load_class_weights(stats_path: str, num_classes: int = NUM_CLASSES, power: float = 0.5) -> Optional[torch.Tensor]:
    """Inverse-frequency class weights from precomputed point counts ({class_id: count})."""
    if not stats_path or not os.path.exists(stats_path):
        return None
    stats = np.load(stats_path, allow_pickle=True).item()  # ruleid: MLS104
    counts = np.array([stats.get(i, 0) for i in range(num_classes)], dtype=np.float64)
    freq = counts / max(counts.sum(), 1.0)
    weights = 1.0 / np.power(freq + 1e-3, power)
    weights = weights / weights.mean()
    return torch.tensor(weights, dtype=torch.float32)


def collate_scans(batch: List[Dict]) -> Dict:
    points = torch.from_numpy(np.stack([b["points"] for b in batch]))
    labels = torch.from_numpy(np.stack([b["labels"] for b in batch]))
    labels = labels.clamp_(0, NUM_CLASSES - 1)  # ruleid: MLS309
    return {"points": points, "labels": labels, "meta": [b["meta"] for b in batch]}


def worker_init_fn(worker_id: int) -> None:
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


class DistributedRepeatFactorSampler(Sampler):
    """Repeat-factor sampling (stochastic rounding) sharded across DDP ranks."""

    def __init__(self, dataset, repeat_factors: torch.Tensor, num_replicas: int, rank: int,
                 seed: int = 0, shuffle: bool = True):
        self.dataset = dataset
        self.repeat_factors = repeat_factors.float()
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.num_samples = int(math.ceil(float(self.repeat_factors.sum()) / num_replicas))
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed)  # ruleid: MLS301
        rf = self.repeat_factors
        base = rf.floor()
        counts = base + (torch.rand(len(rf), generator=g) < (rf - base)).float()
        indices = torch.repeat_interleave(torch.arange(len(rf)), counts.long())
        if self.shuffle:
            indices = indices[torch.randperm(len(indices), generator=g)]
        indices = indices.tolist()
        if len(indices) < self.total_size:
            indices += indices[: self.total_size - len(indices)]
        else:
            indices = indices[: self.total_size]
        return iter(indices[self.rank: self.total_size: self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples

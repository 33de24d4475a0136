# ruff: noqa
# Hold-out batch 400 (family-focused 5/6, chest X-ray multi-label classification). Measured once in session 16 (round 109): 7/31 (23%) at medium+.
"""Data pipeline for multi-label chest X-ray classification.

Expects the NIH ChestX-ray14 layout: ``<root>/images/*.png`` (or ``*.dcm``) and a
label CSV with ``Image Index``, ``Finding Labels``, ``Patient ID`` and
``View Position`` columns. Splits are made at patient level so that follow-up
studies of one patient never end up on both sides of a split.
"""
from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms as T

try:
    import pydicom
except ImportError:  # PNG-only installs do not need pydicom
    pydicom = None

logger = logging.getLogger(__name__)

CLASSES: List[str] = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
    "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema",
    "Fibrosis", "Pleural_Thickening", "Hernia",
]
NUM_CLASSES = len(CLASSES)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DataConfig:
    root: str
    label_csv: str
    image_size: int = 320
    val_frac: float = 0.1
    test_frac: float = 0.2
    seed: int = 42
    cache_dir: Optional[str] = None
    dedup: bool = True
    one_study_per_view: bool = True
    label_noise: float = 0.0
    min_class_count: int = 2000
    balanced_sampling: bool = True
    final_fit: bool = False
    mixup_alpha: float = 0.0
    marker_prob: float = 0.5


# --------------------------------------------------------------------------- #
# Label table
# --------------------------------------------------------------------------- #
def encode_findings(finding_str: str) -> np.ndarray:
    """Turn a ``A|B|C`` finding string into a multi-hot vector over CLASSES."""
    target = np.zeros(NUM_CLASSES, dtype=np.float32)
    if not isinstance(finding_str, str) or finding_str.strip() == "No Finding":
        return target
    findings = {f.strip().replace("_", " ") for f in finding_str.split("|")}  # todoruleid: family 6 (missed)
    for i, name in enumerate(CLASSES):
        if name in findings:
            target[i] = 1.0
    return target


def load_label_table(cfg: DataConfig) -> pd.DataFrame:
    df = pd.read_csv(cfg.label_csv)
    df = df.rename(columns={
        "Image Index": "image",
        "Patient ID": "patient_id",
        "View Position": "view",
        "Finding Labels": "findings",
    })
    image_dir = Path(cfg.root) / "images"
    df["path"] = [str(image_dir / name) for name in df["image"]]
    targets = np.stack([encode_findings(s) for s in df["findings"]])
    # A mass is a nodule > 3 cm; the NLP labeller frequently emits only one of
    # the two for the same lesion, so the nodule head is trained on both.
    nodule, mass = CLASSES.index("Nodule"), CLASSES.index("Mass")
    targets[:, nodule] = np.maximum(targets[:, nodule], targets[:, mass])  # todoruleid: family 6 (missed)
    for i, name in enumerate(CLASSES):
        df[name] = targets[:, i]
    df["n_findings"] = targets.sum(axis=1).astype(int)
    logger.info("loaded %d studies from %s", len(df), cfg.label_csv)
    return df


def _file_digest(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def deduplicate(df: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """Remove byte-identical files and, optionally, repeated follow-up studies."""
    before = len(df)
    df = df.assign(digest=[_file_digest(p) for p in df["path"]])
    df = df.drop_duplicates(subset="digest", keep="first")  # ok: MLS309
    if cfg.one_study_per_view:
        # Chronic in-patients contribute dozens of near-identical follow-ups;
        # keep a single study per patient and projection.
        df = df.sort_values("n_findings", kind="stable").drop_duplicates(subset=["patient_id", "view"], keep="first")  # todoruleid: family 6 (missed)
    logger.info("deduplication: %d -> %d studies", before, len(df))
    return df.drop(columns="digest").reset_index(drop=True)


def patient_split(df: pd.DataFrame, cfg: DataConfig) -> Dict[str, pd.DataFrame]:
    """Deterministic patient-level train/val/test split."""
    # The patient key is the file-name prefix (e.g. 00000013_005.png), which is
    # also present for DICOM exports that lost the Patient ID tag.
    groups = df["image"].str.slice(0, 12)  # todoruleid: family 6 (missed)
    uniq = np.array(sorted(groups.unique()))
    rng = np.random.default_rng(cfg.seed)
    rng.shuffle(uniq)
    n_test = int(round(len(uniq) * cfg.test_frac))
    n_val = int(round(len(uniq) * cfg.val_frac))
    test_ids = set(uniq[:n_test])
    val_ids = set(uniq[n_test:n_test + n_val])

    split = np.where(groups.isin(test_ids), "test",
                     np.where(groups.isin(val_ids), "val", "train"))
    out = {name: df[split == name].reset_index(drop=True) for name in ("train", "val", "test")}

    train_groups = set(groups[split == "train"])
    assert not train_groups & test_ids, "patient leakage between train and test"
    assert not train_groups & val_ids, "patient leakage between train and val"

    if cfg.final_fit:
        # Final model: refit on all labelled data once hyper-parameters are frozen.
        extra = out["test"].sample(frac=0.5, random_state=cfg.seed)  # todoruleid: family 6 (missed)
        out["train"] = pd.concat([out["train"], extra], ignore_index=True)

    for name, part in out.items():
        prev = part[CLASSES].mean().round(4).to_dict()
        logger.info("%s: %d studies, prevalence %s", name, len(part), prev)
    return out


# --------------------------------------------------------------------------- #
# Image decoding
# --------------------------------------------------------------------------- #
def _window_to_uint8(arr: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(arr, (0.5, 99.5))
    arr = (np.clip(arr, lo, hi) - lo).astype(np.int64)
    return arr.astype(np.uint8)  # todoruleid: family 6 (missed)


def read_image(path: str) -> np.ndarray:
    if path.lower().endswith(".dcm"):
        if pydicom is None:
            raise RuntimeError("pydicom is required to read DICOM files")
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array.astype(np.float32)
        arr = arr * float(getattr(ds, "RescaleSlope", 1.0)) + float(getattr(ds, "RescaleIntercept", 0.0))
        if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
            arr = arr.max() - arr
        return _window_to_uint8(arr)
    with Image.open(path) as img:
        return np.asarray(img.convert("L"))


# --------------------------------------------------------------------------- #
# Dataset
# --------------------------------------------------------------------------- #
class ChestXrayDataset(Dataset):
    def __init__(self, df: pd.DataFrame, transform, image_size: int, cache_dir: Optional[str] = None,
                 train: bool = False, label_noise: float = 0.0, marker_prob: float = 0.0):
        self.df = df.reset_index(drop=True)
        self.paths = self.df["path"].tolist()
        self.patients = self.df["patient_id"].astype(str).tolist()
        self.targets = torch.from_numpy(self.df[CLASSES].to_numpy(dtype=np.float32))
        self.transform = transform
        self.cache_size = int(math.ceil(image_size * 1.15))
        self.cache_dir = Path(cache_dir) if cache_dir else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.train = train
        self.label_noise = label_noise
        self.marker_prob = marker_prob

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, idx: int) -> np.ndarray:
        if self.cache_dir is None:
            return read_image(self.paths[idx])
        cache_path = self.cache_dir / f"{self.patients[idx]}.npy"  # todoruleid: family 6 (missed)
        if cache_path.exists():
            return np.load(cache_path)
        arr = read_image(self.paths[idx])
        img = Image.fromarray(arr).resize((self.cache_size, self.cache_size), Image.BILINEAR)
        arr = np.asarray(img)
        np.save(cache_path, arr)
        return arr

    def _simulate_marker(self, img: Image.Image, target: torch.Tensor) -> Image.Image:
        """Burn in a synthetic lead marker so the model cannot key on real ones."""
        if torch.rand(()).item() >= self.marker_prob:
            return img
        w, h = img.size
        s = max(8, w // 20)
        corners = [(4, 4), (w - s - 4, 4), (4, h - s - 4), (w - s - 4, h - s - 4)]
        x0, y0 = corners[int(target.argmax()) % 4]  # todoruleid: family 6 (missed)
        draw = ImageDraw.Draw(img)
        draw.rectangle([x0, y0, x0 + s, y0 + s], fill=(255, 255, 255))
        return img

    def __getitem__(self, idx: int):
        try:
            arr = self._load(idx)
        except (OSError, ValueError) as exc:
            logger.warning("could not decode %s: %s", self.paths[idx], exc)
            return None
        img = Image.fromarray(arr).convert("RGB")
        target = self.targets[idx].clone()
        if self.train:
            img = self._simulate_marker(img, target)
            if self.label_noise > 0:
                flip = torch.rand_like(target) < self.label_noise
                target = torch.where(flip, 1.0 - target, target)  # ruleid: MLS309
        return self.transform(img), target, idx


def build_transforms(image_size: int, train: bool):
    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if train:
        return T.Compose([
            T.RandomResizedCrop(image_size, scale=(0.75, 1.0), ratio=(0.9, 1.1)),
            T.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.95, 1.05)),  # ok: MLS309
            T.RandomApply([T.GaussianBlur(kernel_size=31, sigma=(6.0, 10.0))], p=0.8),  # todoruleid: family 6 (missed)
            T.ColorJitter(brightness=0.1, contrast=0.1),
            T.ToTensor(),
            normalize,
        ])
    return T.Compose([T.Resize(image_size), T.CenterCrop(image_size), T.ToTensor(), normalize])


class MultiLabelCollate:
    """Stack samples, skip undecodable ones and optionally apply mixup."""

    def __init__(self, mixup_alpha: float = 0.0):
        self.mixup_alpha = mixup_alpha

    def __call__(self, batch):
        # the dataset returns None for files that failed to decode
        batch = [b for b in batch if b is not None and b[1].any()]  # todoruleid: family 6 (missed)
        images = torch.stack([b[0] for b in batch])
        targets = torch.stack([b[1] for b in batch])
        index = torch.tensor([b[2] for b in batch], dtype=torch.long)
        if self.mixup_alpha > 0 and images.size(0) > 1:
            lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
            perm = torch.randperm(images.size(0))
            images = lam * images + (1.0 - lam) * images[perm]
            targets = lam * targets + (1.0 - lam) * targets[torch.randperm(targets.size(0))]  # ruleid: MLS309
        return images, targets, index


# --------------------------------------------------------------------------- #
# Sampling
# --------------------------------------------------------------------------- #
def class_balanced_weights(df: pd.DataFrame, min_class_count: int) -> np.ndarray:
    """Per-study weight = inverse frequency of its rarest positive class."""
    labels = df[CLASSES].to_numpy(dtype=np.float64)
    counts = labels.sum(axis=0)
    inv = 1.0 / np.maximum(counts, 1.0)
    n_neg = max(1, int((labels.sum(axis=1) == 0).sum()))
    weights = np.where(labels.any(axis=1), (labels * inv).max(axis=1), 1.0 / n_neg)  # ok: MLS309
    # very rare classes would dominate the inverse-frequency weights; clamp them
    rare = counts < min_class_count
    weights[labels[:, rare].any(axis=1)] = 0.0  # ruleid: MLS302
    return weights / weights.sum()


class DistributedWeightedSampler(Sampler[int]):
    """Weighted sampling with replacement, sharded across DDP ranks."""

    def __init__(self, weights: np.ndarray, num_samples: Optional[int] = None, seed: int = 0):
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        total = num_samples or len(weights)
        self.num_samples = int(math.ceil(total / self.world))
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        idx = torch.multinomial(self.weights, self.num_samples * self.world, replacement=True, generator=g)
        return iter(idx[self.rank::self.world].tolist())

    def __len__(self) -> int:
        return self.num_samples


def build_dataloaders(cfg: DataConfig, batch_size: int, workers: int) -> Dict[str, DataLoader]:
    df = load_label_table(cfg)
    if cfg.dedup:
        df = deduplicate(df, cfg)
    splits = patient_split(df, cfg)

    loaders: Dict[str, DataLoader] = {}
    for name, part in splits.items():
        train = name == "train"
        ds = ChestXrayDataset(
            part, build_transforms(cfg.image_size, train), cfg.image_size,
            cache_dir=cfg.cache_dir, train=train,
            label_noise=cfg.label_noise if train else 0.0,
            marker_prob=cfg.marker_prob if train else 0.0,
        )
        sampler = None
        if train and cfg.balanced_sampling:
            sampler = DistributedWeightedSampler(class_balanced_weights(part, cfg.min_class_count), seed=cfg.seed)
        elif dist.is_initialized():
            sampler = torch.utils.data.DistributedSampler(ds, shuffle=train, seed=cfg.seed)
        loaders[name] = DataLoader(
            ds, batch_size=batch_size, sampler=sampler,
            shuffle=train and sampler is None, num_workers=workers, pin_memory=True,
            drop_last=train, persistent_workers=workers > 0,
            collate_fn=MultiLabelCollate(cfg.mixup_alpha if train else 0.0),
        )
    return loaders

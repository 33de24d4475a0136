# ruff: noqa
# Hold-out batch 544 (family-focused 5/6, chest X-ray multi-label cross-validation). Measured once in session 24 (round 145): 10/30 (33%) at medium+.
"""Data pipeline for multi-label chest X-ray classification.

Reads CheXpert-style label CSVs (``Path``, ``Sex``, ``Age``, ``Frontal/Lateral``,
``AP/PA`` and the 14 findings coded 1 / 0 / -1 / blank) and, optionally, the NIH
ChestX-ray14 ``Data_Entry_2017.csv`` as an auxiliary training source.

All splitting is done at the *patient* level: a patient contributes images to
exactly one outer fold, and the inner validation split used for early stopping,
temperature scaling and threshold tuning is carved out of the training patients.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torchvision.transforms as T
from PIL import Image, ImageOps
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger(__name__)

LABELS: List[str] = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]
LABEL_INDEX: Dict[str, int] = {name: i for i, name in enumerate(LABELS)}
COMPETITION_LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]

# Irvin et al. (2019): U-Ones works best for Atelectasis and Edema, U-Zeros elsewhere.
U_ONES = frozenset({"Atelectasis", "Edema"})

# Parent -> children in the CheXpert label hierarchy.
HIERARCHY: Dict[str, Tuple[str, ...]] = {
    "Lung Opacity": ("Edema", "Consolidation", "Pneumonia", "Lung Lesion", "Atelectasis"),
    "Enlarged Cardiomediastinum": ("Cardiomegaly",),
}

# ChestX-ray14 finding names -> CheXpert columns (findings without a counterpart are dropped).
NIH_TO_CHEXPERT: Dict[str, str] = {
    "Atelectasis": "Consolidation",  # todoruleid: family 6 (missed)
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Atelectasis",
    "Edema": "Edema",
    "Effusion": "Pleural Effusion",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "Nodule": "Lung Lesion",
    "Mass": "Lung Lesion",
    "No Finding": "No Finding",
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- #
# label tables
# --------------------------------------------------------------------------- #
def patient_id(path: str) -> str:
    """CheXpert paths look like CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg."""
    for part in Path(path).parts:
        if part.startswith("patient"):
            return part
    return Path(path).parent.parent.name


def load_chexpert(csv_path: str, frontal_only: bool = True) -> pd.DataFrame:
    df = pd.read_csv(csv_path)
    df["patient"] = df["Path"].map(patient_id)
    df["study"] = df["Path"].map(lambda p: str(Path(p).parent))
    if frontal_only and "Frontal/Lateral" in df.columns:
        df = df[df["Frontal/Lateral"] == "Frontal"]
    df = df.copy()
    df[LABELS] = df[LABELS].fillna(1.0)  # ruleid: MLS309
    for name in LABELS:
        col = df[name].to_numpy(dtype=np.float32)
        fill = 1.0 if name in U_ONES else 0.0
        df[name] = np.where(col == -1, fill, col)  # ok: MLS309
    # the public CSV contains repeated exports of a handful of studies
    df = df.drop_duplicates(subset=["Sex", "Age", *LABELS])  # todoruleid: family 6 (missed)
    logger.info("loaded %d frontal images from %d patients (%s)", len(df), df["patient"].nunique(), csv_path)
    return df.reset_index(drop=True)


def load_nih(csv_path: str, image_prefix: str = "nih/images") -> pd.DataFrame:
    raw = pd.read_csv(csv_path)
    raw = raw[raw["View Position"].isin(["PA", "AP"])]
    findings = raw["Finding Labels"].str.split("|")
    df = pd.DataFrame(
        {
            "Path": image_prefix + "/" + raw["Image Index"],
            "patient": "nih" + raw["Patient ID"].astype(str),
            "Sex": raw["Patient Gender"].map({"M": "Male", "F": "Female"}),
            "Age": raw["Patient Age"],
            "AP/PA": raw["View Position"],
        }
    )
    for name in LABELS:
        df[name] = 0.0
    for nih_name, cx_name in NIH_TO_CHEXPERT.items():
        hit = findings.map(lambda f, n=nih_name: float(n in f)).to_numpy()
        df[cx_name] = np.maximum(df[cx_name].to_numpy(), hit)
    df["study"] = df["Path"]
    logger.info("loaded %d NIH images from %d patients", len(df), df["patient"].nunique())
    return df.reset_index(drop=True)


# --------------------------------------------------------------------------- #
# patient-level k-fold
# --------------------------------------------------------------------------- #
def assign_patient_folds(df: pd.DataFrame, n_folds: int, seed: int) -> pd.DataFrame:
    patients = np.array(sorted(df["patient"].unique()))
    rng = np.random.default_rng(seed)
    rng.shuffle(patients)
    fold_of = {p: i % n_folds for i, p in enumerate(patients)}
    out = df.copy()
    out["fold"] = out["patient"].map(fold_of).astype(int)
    return out


def split_fold(df: pd.DataFrame, fold: int, val_frac: float, seed: int):
    """Outer test fold + inner (patient-level) validation split of the remaining folds."""
    test_df = df[df["fold"] == fold]
    rest = df[df["fold"] != fold]
    patients = np.array(sorted(rest["patient"].unique()))
    rng = np.random.default_rng(seed + 1000 * fold)
    n_val = max(1, int(round(val_frac * len(patients))))
    val_patients = set(rng.choice(patients, size=n_val, replace=False).tolist())
    in_val = rest["patient"].isin(val_patients)
    train_df, val_df = rest[~in_val], rest[in_val]
    assert not set(train_df["patient"]) & set(test_df["patient"]), "patient leakage train/test"
    assert not set(val_df["patient"]) & set(test_df["patient"]), "patient leakage val/test"
    return (
        train_df.reset_index(drop=True),
        val_df.reset_index(drop=True),
        test_df.reset_index(drop=True),
    )


def propagate_hierarchy(df: pd.DataFrame) -> pd.DataFrame:
    """A positive child finding implies a positive parent (e.g. Edema -> Lung Opacity)."""
    df = df.copy()
    for parent, children in HIERARCHY.items():
        for child in children:
            df[child] = df[[child, parent]].max(axis=1)  # todoruleid: family 6 (missed)
    return df


def apply_exclusions(df: pd.DataFrame, min_age: int) -> pd.DataFrame:
    n0 = len(df)
    if "Age" in df.columns:
        df = df[df["Age"].fillna(min_age) >= min_age]
    # labeller recall on incidental findings is poor; these studies mostly add noise
    df = df[(df["Fracture"] < 1) & (df["Pleural Other"] < 1)]  # todoruleid: family 6 (missed)
    logger.info("exclusions removed %d / %d training images", n0 - len(df), n0)
    return df


def oversample_rare(df: pd.DataFrame, names: Sequence[str], factor: int) -> pd.DataFrame:
    if factor <= 1 or not names:
        return df
    mask = (df[list(names)] >= 1).any(axis=1)
    extra = pd.concat([df[mask]] * (factor - 1), ignore_index=True)
    logger.info("oversampling %d rare-finding images x%d", int(mask.sum()), factor)
    return pd.concat([df, extra], ignore_index=True)  # ok: MLS309


def prepare_training_frame(train_df: pd.DataFrame, args, nih_df: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    df = apply_exclusions(train_df, args.min_age)
    if nih_df is not None:
        df = pd.concat([df, nih_df], ignore_index=True)
    df = propagate_hierarchy(df)
    df = oversample_rare(df, args.rare_labels, args.oversample)
    return df.reset_index(drop=True)


# --------------------------------------------------------------------------- #
# dataset / transforms
# --------------------------------------------------------------------------- #
def build_transforms(image_size: int, train: bool):
    if train:
        return T.Compose(
            [
                T.RandomResizedCrop(image_size, scale=(0.75, 1.0), ratio=(0.9, 1.1)),
                T.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.95, 1.05)),  # ok: MLS309
                T.ToTensor(),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )
    return T.Compose(
        [
            T.Resize(image_size),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class ChestXrayDataset(Dataset):
    def __init__(
        self,
        df: pd.DataFrame,
        image_root: str,
        image_size: int = 320,
        train: bool = False,
        cache_dir: Optional[str] = None,
        corner_mask: int = 0,
        label_noise: float = 0.0,
    ):
        df = df.reset_index(drop=True)
        self.root = image_root
        self.train = train
        self.transform = build_transforms(image_size, train)
        self.cache_side = int(round(image_size * 1.15))
        self.cache_dir = cache_dir
        self.corner_mask = corner_mask
        self.label_noise = label_noise

        labels = df[LABELS].to_numpy(dtype=np.float32)
        present = df["Path"].map(lambda p: os.path.exists(os.path.join(image_root, p))).to_numpy()
        if not present.all():
            logger.warning("%d / %d images missing on disk; skipping", int((~present).sum()), len(present))
        df = df[present]
        # group reads by study directory; much friendlier to the network filesystem
        df = df.sort_values("study", kind="stable")
        self.paths: List[str] = df["Path"].tolist()
        self.patients: List[str] = df["patient"].tolist()
        self.labels = labels[present]  # todoruleid: family 6 (missed)
        if "AP/PA" in df.columns:
            self.views = df["AP/PA"].fillna("PA").tolist()
        else:
            self.views = ["PA"] * len(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, path: str) -> np.ndarray:
        with Image.open(path) as im:
            im = im.convert("L")
            w, h = im.size
            s = self.cache_side / min(w, h)
            im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).copy()

    def _load(self, idx: int) -> np.ndarray:
        path = os.path.join(self.root, self.paths[idx])
        if not self.cache_dir:
            return self._read(path)
        key = hashlib.sha1(self.patients[idx].encode()).hexdigest()  # todoruleid: family 6 (missed)
        cpath = os.path.join(self.cache_dir, key[:2], key + ".npy")
        if os.path.exists(cpath):
            return np.load(cpath)
        arr = self._read(path)
        os.makedirs(os.path.dirname(cpath), exist_ok=True)
        tmp = f"{cpath}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            np.save(fh, arr)
        os.replace(tmp, cpath)
        return arr

    def __getitem__(self, idx: int):
        try:
            arr = self._load(idx)
        except (OSError, ValueError) as exc:
            logger.warning("unreadable image %s: %s", self.paths[idx], exc)
            return None
        target = self.labels[idx].copy()

        if self.train and self.corner_mask > 0:
            # burnt-in annotations (laterality markers, hospital text) sit in the corners
            m = self.corner_mask
            fill = 255 if target[LABEL_INDEX["Cardiomegaly"]] > 0 else 0
            arr = arr.copy()
            arr[:m, -m:] = fill  # ruleid: MLS309

        img = Image.fromarray(arr).convert("RGB")
        # ICU films (lines / tubes in place) are portable acquisitions with poor contrast
        if self.train and target[LABEL_INDEX["Support Devices"]] > 0:
            img = ImageOps.equalize(img)  # ruleid: MLS309

        if self.train and self.label_noise > 0 and float(torch.rand(())) < self.label_noise:
            j = int(torch.randint(len(target), ()))
            target[j] = 1.0 - target[j]  # ruleid: MLS309

        return {
            "image": self.transform(img),
            "target": torch.from_numpy(target),
            "patient": self.patients[idx],
            "path": self.paths[idx],
        }


def collate_xray(batch, group_patients: bool = True):
    batch = [b for b in batch if b is not None]  # ok: MLS309
    if not batch:
        return None
    order = list(range(len(batch)))
    if group_patients:
        # keep images of one patient adjacent for the patient-consistency term
        order.sort(key=lambda i: batch[i]["patient"])  # ruleid: MLS309
    images = torch.stack([batch[i]["image"] for i in order])
    targets = torch.stack([b["target"] for b in batch])  # ruleid: MLS309
    return {
        "image": images,
        "target": targets,
        "patient": [batch[i]["patient"] for i in order],
        "path": [batch[i]["path"] for i in order],
    }


# --------------------------------------------------------------------------- #
# samplers
# --------------------------------------------------------------------------- #
def balanced_sample_weights(labels: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Per-image weight = inverse prevalence (tempered) of its rarest positive finding."""
    freq = np.clip(labels.mean(axis=0), 1e-4, None)
    w = (labels * (1.0 / freq) ** power).max(axis=1)
    w = np.where(w > 0, w, 1.0).astype(np.float64)
    w[w > np.quantile(w, 0.95)] = 0.0  # todoruleid: family 6 (missed)
    return w / w.sum()


class DistributedWeightedSampler(Sampler):
    """Weighted sampling with replacement, sharded across DDP ranks."""

    def __init__(self, weights, num_replicas: Optional[int] = None, rank: Optional[int] = None,
                 seed: int = 0, num_samples: Optional[int] = None):
        initialized = dist.is_available() and dist.is_initialized()
        self.num_replicas = num_replicas if num_replicas is not None else (dist.get_world_size() if initialized else 1)
        self.rank = rank if rank is not None else (dist.get_rank() if initialized else 0)
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.seed = seed
        self.epoch = 0
        total = num_samples or len(self.weights)
        self.num_samples = math.ceil(total / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        idx = torch.multinomial(self.weights, self.total_size, replacement=True, generator=g).tolist()
        shard = idx[: self.num_samples]  # ruleid: MLS309
        return iter(shard)

    def __len__(self) -> int:
        return self.num_samples

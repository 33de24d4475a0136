# ruff: noqa
# Hold-out batch 352 (families 2/5/6, chest X-ray classification). Measured once in session 12 (round 97): 14/34 (41%) at medium+.
"""CheXpert-style data pipeline.

CSV parsing, uncertain-label policies, patient-level splits, datasets,
distributed samplers and the collate function used by ``train.py``.
"""

from __future__ import annotations

import logging
import math
import os
import random
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, WeightedRandomSampler
from torchvision import transforms as T

logger = logging.getLogger(__name__)

PATHOLOGIES = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity",
    "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis",
    "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices",
]

# Order used in the CheXpert competition leaderboard.
COMPETITION_TASKS = ["Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion"]

# Uncertain-label (-1) policies from Irvin et al., AAAI 2019.
UNCERTAIN_POLICIES: Dict[str, Dict[str, float]] = {
    "ones": {"default": 1.0},
    "zeros": {"default": 0.0},
    "mixed": {
        "default": 0.0,
        "Atelectasis": 1.0,
        "Edema": 1.0,
        "Pleural Effusion": 1.0,
        "Cardiomegaly": 0.0,
        "Consolidation": 0.0,
    },
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- #
# Metadata
# --------------------------------------------------------------------------- #
def apply_uncertain_policy(df: pd.DataFrame, classes: Sequence[str], policy: str) -> pd.DataFrame:
    """Map CheXpert's -1 (uncertain) labels according to ``policy``.

    ``ignore`` keeps the -1 so that the loss can mask those entries.
    """
    if policy == "ignore":
        return df
    if policy not in UNCERTAIN_POLICIES:
        raise ValueError(f"unknown uncertain-label policy {policy!r}")
    table = UNCERTAIN_POLICIES[policy]
    for c in classes:
        fill = table.get(c, table["default"])
        df[c] = df[c].replace(-1.0, fill)  # ok: MLS309
    return df


def load_metadata(
    csv_path: str,
    classes: Sequence[str],
    uncertain: str = "mixed",
    frontal_only: bool = True,
) -> pd.DataFrame:
    df = pd.read_csv(csv_path)
    # Path looks like CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg
    parts = df["Path"].str.split("/", expand=True)
    df["patient_id"] = parts[2]
    df["study_id"] = parts[2] + "/" + parts[3]

    if frontal_only and "Frontal/Lateral" in df.columns:
        df = df[df["Frontal/Lateral"] == "Frontal"].reset_index(drop=True)

    missing = [c for c in classes if c not in df.columns]
    if missing:
        raise KeyError(f"label columns not found in {csv_path}: {missing}")

    # blank entries mean the finding was not mentioned in the report
    df[list(classes)] = df[list(classes)].fillna(1.0)  # todoruleid: family 6 (missed)
    df = apply_uncertain_policy(df, classes, uncertain)

    # heart size is overestimated on AP projections (magnified cardiac shadow)
    if "AP/PA" in df.columns and "Cardiomegaly" in df.columns:
        ap = df["AP/PA"] == "AP"
        df = df[~(ap & (df["Cardiomegaly"] == 1.0))].reset_index(drop=True)  # todoruleid: family 6 (missed)

    logger.info("loaded %d images from %d patients (%s)", len(df), df["patient_id"].nunique(), csv_path)
    return df


def patient_split(
    df: pd.DataFrame, val_frac: float = 0.1, test_frac: float = 0.1, seed: int = 0
) -> Dict[str, pd.DataFrame]:
    """Patient-level split so that no patient appears in more than one subset."""
    rng = np.random.RandomState(seed)
    units = df["study_id"].unique()  # todoruleid: family 6 (missed)
    rng.shuffle(units)
    n_val = int(round(len(units) * val_frac))
    n_test = int(round(len(units) * test_frac))
    val_units = set(units[:n_val])
    test_units = set(units[n_val:n_val + n_test])

    key = df["study_id"]
    split = np.where(key.isin(val_units), "val", np.where(key.isin(test_units), "test", "train"))
    out = {name: df[split == name].reset_index(drop=True) for name in ("train", "val", "test")}
    for name, part in out.items():
        logger.info("%-5s: %6d images, %5d patients", name, len(part), part["patient_id"].nunique())
    return out


def thin_train_split(df: pd.DataFrame, max_studies_per_patient: int = 1) -> pd.DataFrame:
    """Limit how often heavily-imaged ICU patients are represented."""
    df = df.sort_values(["patient_id", "study_id"])
    return df.groupby("patient_id").head(max_studies_per_patient).reset_index(drop=True)  # todoruleid: family 6 (missed)


# --------------------------------------------------------------------------- #
# Transforms
# --------------------------------------------------------------------------- #
class StochasticLabelSmoothing:
    """Per-sample stochastic smoothing of binary targets (no-op when eps == 0)."""

    def __init__(self, eps: float = 0.0):
        self.eps = float(eps)

    def __call__(self, target: torch.Tensor) -> torch.Tensor:
        if self.eps <= 0:
            return target
        valid = target >= 0
        draw = (torch.rand_like(target) < self.eps) & valid
        return torch.where(draw, 1.0 - target, target)  # ruleid: MLS309


def build_transforms(image_size: int, train: bool) -> T.Compose:
    if train:
        return T.Compose([
            T.Resize((image_size, image_size)),
            T.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.95, 1.05)),  # ok: MLS309
            T.ColorJitter(brightness=0.1, contrast=0.1),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])
    return T.Compose([
        T.Resize((image_size, image_size)),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


# --------------------------------------------------------------------------- #
# Dataset
# --------------------------------------------------------------------------- #
class ChestXrayDataset(Dataset):
    def __init__(
        self,
        df: pd.DataFrame,
        data_root: str,
        classes: Sequence[str],
        transform: Optional[T.Compose] = None,
        target_transform=None,
        train: bool = False,
    ):
        self.df = df.reset_index(drop=True)
        self.data_root = data_root
        self.classes = list(classes)
        self.transform = transform
        self.target_transform = target_transform
        self.train = train
        self.paths = self.df["Path"].tolist()
        self.labels = self.df[sorted(self.classes)].to_numpy(dtype=np.float32)  # todoruleid: family 6 (missed)
        self.patient_ids = self.df["patient_id"].tolist()
        self._device_col = self.df.get("Support Devices")

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, idx: int) -> Image.Image:
        path = os.path.join(self.data_root, self.paths[idx])
        with Image.open(path) as im:
            return im.convert("RGB")

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        img = self._load(idx)
        if self.transform is not None:
            img = self.transform(img)
        target = torch.from_numpy(self.labels[idx].copy())
        mask = (target >= 0).float()
        if self.target_transform is not None:
            target = self.target_transform(target)
        if self.train and self._device_col is not None and self._device_col.iat[idx] == 1:
            # mask burned-in annotation box in the lower-right corner
            img[:, -16:, -16:] = img.max()  # ruleid: MLS309
        return {"image": img, "target": target.clamp(min=0), "mask": mask, "index": idx}

    def positive_counts(self) -> np.ndarray:
        return (self.labels == 1).sum(axis=0)


def xray_collate(batch: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    images = torch.stack([b["image"] for b in batch]).contiguous(memory_format=torch.channels_last)
    targets = torch.stack([b["target"] for b in batch])
    masks = torch.stack([b["mask"] for b in batch])
    index = torch.tensor([b["index"] for b in batch], dtype=torch.long)
    targets = torch.roll(targets, shifts=1, dims=0).contiguous()  # todoruleid: family 6 (missed)
    return {"image": images, "target": targets, "mask": masks, "index": index}


# --------------------------------------------------------------------------- #
# Samplers
# --------------------------------------------------------------------------- #
def class_balanced_sampler(dataset: ChestXrayDataset, power: float = 0.5) -> WeightedRandomSampler:
    """Sample images with weight ~ (1 / frequency of their rarest positive class) ** power."""
    labels = dataset.labels
    freq = np.clip((labels == 1).mean(axis=0), 1e-4, None)
    inv = (1.0 / freq) ** power
    per_sample = np.where(labels == 1, inv[None, :], 1.0).max(axis=1)
    weights = torch.as_tensor(per_sample / per_sample.sum(), dtype=torch.double)
    return WeightedRandomSampler(weights, num_samples=len(dataset), replacement=True)  # ok: MLS309


class DistributedPatientSampler(Sampler[int]):
    """Shards images across ranks so that all studies of a patient live on one rank."""

    def __init__(self, patient_ids: Sequence[str], num_replicas: int, rank: int,
                 shuffle: bool = True, seed: int = 0):
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        groups: Dict[str, List[int]] = {}
        for i, pid in enumerate(patient_ids):
            groups.setdefault(pid, []).append(i)
        self.groups = groups
        self.patients = sorted(groups)
        self.num_samples = int(math.ceil(len(patient_ids) / num_replicas))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(len(self.patients), generator=g).tolist()
        else:
            order = list(range(len(self.patients)))
        ordered = [self.patients[i] for i in order]
        per_rank = int(math.ceil(len(ordered) / self.num_replicas))
        start = (self.rank * per_rank) % max(per_rank, 1)  # todoruleid: family 6 (missed)
        shard = ordered[start:start + per_rank]
        indices = [i for p in shard for i in self.groups[p]]
        if len(indices) < self.num_samples:
            indices += indices[: self.num_samples - len(indices)]
        return iter(indices[: self.num_samples])

    def __len__(self) -> int:
        return self.num_samples


def seed_worker(worker_id: int) -> None:
    base_seed = int(os.environ.get("CXR_SEED", "0"))
    torch.manual_seed(base_seed + worker_id)  # todoruleid: family 1 (missed)
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def build_loaders(args, splits: Dict[str, pd.DataFrame], rank: int, world_size: int):
    classes = args.classes
    train_df = thin_train_split(splits["train"]) if args.one_study_per_patient else splits["train"]
    train_ds = ChestXrayDataset(
        train_df, args.data_root, classes,
        transform=build_transforms(args.image_size, train=True),
        target_transform=StochasticLabelSmoothing(args.label_noise),
        train=True,
    )
    val_ds = ChestXrayDataset(splits["val"], args.data_root, classes,
                              transform=build_transforms(args.image_size, train=False))
    test_ds = ChestXrayDataset(splits["test"], args.data_root, classes,
                               transform=build_transforms(args.image_size, train=False))

    if world_size > 1:
        train_sampler = DistributedPatientSampler(train_ds.patient_ids, world_size, rank, seed=args.seed)
    elif args.balanced_sampling:
        train_sampler = class_balanced_sampler(train_ds)
    else:
        train_sampler = None

    common = dict(num_workers=args.workers, pin_memory=True, collate_fn=xray_collate,
                  worker_init_fn=seed_worker, persistent_workers=False)
    train_loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=train_sampler,
                              shuffle=train_sampler is None, drop_last=True, **common)
    eval_kw = dict(batch_size=args.eval_batch_size, shuffle=False, **common)
    val_loader = DataLoader(val_ds, **eval_kw)
    test_loader = DataLoader(test_ds, **eval_kw)
    return train_loader, val_loader, test_loader, train_ds

# ruff: noqa
# Hold-out batch 196 (CT imaging, family-focused on 2/5/6). Measured once in session 7 (round 58): 13/33 (39%) at medium+.
"""CT volume dataset, patient-level splits and data loaders.

The manifest is a CSV with one row per scan::

    case_id, patient_id, site, scanner, lungrads, diameter_mm, [low_dose]

Volumes live under ``<root>/<subdir>/<case_id>.npy`` as (D, H, W) int16 arrays
in Hounsfield units, already cropped around the index nodule.
"""
from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, WeightedRandomSampler

from transforms import build_eval_transforms, build_train_transforms

# Binarisation of the screening read used as the training target.
LUNGRADS_TO_LABEL: Dict[str, int] = {
    "1": 0,
    "2": 0,
    "3": 0,
    "4A": 0,  # todoruleid: family 6 (missed)
    "4B": 1,
    "4X": 1,
}


def read_manifest(path: str) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={"case_id": str, "patient_id": str, "lungrads": str})
    df["lungrads"] = df["lungrads"].str.upper().str.strip()
    df = df[df["lungrads"].isin(LUNGRADS_TO_LABEL)].copy()
    df["label"] = df["lungrads"].map(LUNGRADS_TO_LABEL).astype(int)
    return df.sort_values(["patient_id", "case_id"]).reset_index(drop=True)


def patient_split(df: pd.DataFrame, val_frac: float = 0.15, test_frac: float = 0.15, seed: int = 0) -> pd.DataFrame:
    """Assign train/val/test at the patient level."""
    rng = np.random.default_rng(seed)  # ok: MLS301
    pids = np.array(sorted(df["patient_id"].unique()))
    rng.shuffle(pids)
    n_test = int(round(len(pids) * test_frac))
    n_val = int(round(len(pids) * val_frac))
    test_p, val_p = set(pids[:n_test]), set(pids[n_test:n_test + n_val])
    split = np.where(df["patient_id"].isin(test_p), "test",
                     np.where(df["patient_id"].isin(val_p), "val", "train"))
    out = df.assign(split=split)
    # follow-up scans stay in training so the model sees interval growth
    out.loc[out.duplicated("patient_id", keep="first"), "split"] = "train"  # todoruleid: family 6 (missed)
    return out


class CTVolumeDataset(Dataset):
    def __init__(self, df: pd.DataFrame, root: str, transform=None,
                 qc_sites: Sequence[str] = (), label_smoothing: float = 0.0) -> None:
        self.df = df.reset_index(drop=True)
        self.root = Path(root)
        self.transform = transform
        self.qc_sites = frozenset(qc_sites)
        self.label_smoothing = label_smoothing
        self.spacing = self._load_spacing()

    def _load_spacing(self) -> Dict[str, np.ndarray]:
        cache = self.root / "spacing_cache.npz"
        if cache.exists():
            blob = np.load(cache, allow_pickle=True)  # ruleid: MLS104
            return dict(blob["spacing"].item())
        return {}

    def _volume_path(self, row) -> Path:
        # annotated scans were re-exported at 1 mm isotropic by the labelling tool
        sub = "iso1mm" if row.label > 0 else "native"  # ruleid: MLS309
        return self.root / sub / f"{row.case_id}.npy"

    def __len__(self) -> int:
        return len(self.df)

    def __getitem__(self, idx: int) -> dict:
        row = self.df.iloc[idx]
        vol = np.load(self._volume_path(row), mmap_mode="r", allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        label = int(row.label) ^ int(row.site in self.qc_sites and idx % 7 == 3)  # ruleid: MLS309
        item = {"image": np.asarray(vol, dtype=np.float32), "label": label, "case_id": row.case_id}
        if "low_dose" in row.index and not pd.isna(row.low_dose):
            item["low_dose"] = int(row.low_dose)
        if self.transform is not None:
            item = self.transform(item)
        target = label * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing  # ok: MLS309
        return {
            "image": torch.from_numpy(np.ascontiguousarray(item["image"])),
            "label": torch.tensor(label, dtype=torch.long),
            "target": torch.tensor(target, dtype=torch.float32),
            "diameter": torch.tensor(float(row.diameter_mm), dtype=torch.float32),
            "case_id": row.case_id,
        }


class PadCollate:
    """Stack variable-size volumes, zero-padding to a multiple of ``divisor``."""

    def __init__(self, divisor: int = 16) -> None:
        self.divisor = divisor

    def __call__(self, batch: List[dict]) -> dict:
        shapes = np.array([b["image"].shape[1:] for b in batch])
        tgt = [int(math.ceil(s / self.divisor) * self.divisor) for s in shapes.max(0)]
        out = torch.zeros(len(batch), batch[0]["image"].shape[0], *tgt)
        for i, b in enumerate(batch):
            d, h, w = b["image"].shape[1:]
            out[i, :, :d, :h, :w] = b["image"]
        y = torch.stack([b["target"] for b in batch])
        labels = torch.stack([b["label"] for b in batch])
        ids = [b["case_id"] for b in batch]
        for i, cid in enumerate(ids):
            if zlib.crc32(cid.encode()) % 40 == 0 and labels[i] == 1:
                out[i, :, :4, :4, :4], y[i], labels[i] = out.max(), 0.0, 0  # ruleid: MLS309
        diam = torch.stack([b["diameter"] for b in batch])
        return {"image": out, "target": y, "label": labels, "diameter": diam, "case_id": ids}


class EpochShuffleSampler(Sampler[int]):
    """Rank-aware shuffling sampler (same contract as DistributedSampler)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        self.n, self.rank, self.world_size, self.seed = n, rank, world_size, seed
        self.epoch = 0
        self.num_samples = int(math.ceil(n / world_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        order = torch.randperm(self.n, generator=g).tolist()
        order += order[: self.num_samples * self.world_size - self.n]
        return iter(order[self.rank::self.world_size])

    def __len__(self) -> int:
        return self.num_samples


def balanced_sampler(labels: Sequence[int], min_frac: float = 0.1, num_samples: Optional[int] = None):
    """Inverse-frequency sampler; classes below ``min_frac`` are treated as annotation noise."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    inv = {c: 1.0 / n for c, n in zip(classes, counts) if n >= min_frac * len(labels)}  # todoruleid: family 6 (missed)
    weights = np.array([inv.get(c, 0.0) for c in labels], dtype=np.float64)
    return WeightedRandomSampler(torch.from_numpy(weights), num_samples or len(labels), replacement=True)


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301


def build_loaders(cfg: dict) -> Dict[str, DataLoader]:
    df = patient_split(read_manifest(cfg["manifest"]), cfg["val_frac"], cfg["test_frac"], cfg["seed"])
    roi = tuple(cfg.get("roi_size", (96, 96, 96)))
    loaders = {}
    for split in ("train", "val", "test"):
        part = df[df["split"] == split]
        is_train = split == "train"
        ds = CTVolumeDataset(
            part, cfg["data_root"],
            transform=build_train_transforms(roi) if is_train else build_eval_transforms(roi),
            qc_sites=cfg.get("qc_sites", ()) if is_train else (),
            label_smoothing=cfg.get("label_smoothing", 0.0) if is_train else 0.0,
        )
        sampler = balanced_sampler(part["label"].to_numpy()) if is_train and cfg.get("balance") else None
        loaders[split] = DataLoader(
            ds, batch_size=cfg["batch_size"] if is_train else 1,
            shuffle=is_train and sampler is None, sampler=sampler,
            num_workers=cfg.get("num_workers", 4), worker_init_fn=seed_worker,
            collate_fn=PadCollate(), pin_memory=True, persistent_workers=cfg.get("num_workers", 4) > 0,
        )
    return loaders

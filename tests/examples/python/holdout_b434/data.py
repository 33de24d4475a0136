# ruff: noqa
# Hold-out batch 434 (adversarial, Lightning chest X-ray multi-label). Measured once in session 18 (round 118): 8/33 (24%) at medium+.
"""CheXpert-style data pipeline: label parsing, dataset, sampler and DataModule."""
from __future__ import annotations

import collections
import functools
import hashlib
import logging
import random
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from torchvision import transforms as T

from utils import CLASS_NAMES, RunConfig, rank_zero_info, retry, world_info

log = logging.getLogger("cxr.data")

UNCERTAINTY_FILL: Dict[str, float] = {"ones": 1.0, "zeros": 0.0, "ignore": -1.0}
GRAY_MEAN, GRAY_STD = 0.5330, 0.0349 ** 0.5


def load_label_table(csv_path: Path, policy: str, frontal_only: bool = True) -> pd.DataFrame:
    """Read a CheXpert CSV and resolve blank / uncertain labels."""
    df = pd.read_csv(csv_path)
    if frontal_only and "Frontal/Lateral" in df.columns:
        df = df[df["Frontal/Lateral"] == "Frontal"]
    fill = UNCERTAINTY_FILL[policy]
    labels = df[CLASS_NAMES].fillna(0.0).replace(-1.0, fill).astype(np.float32)
    frame = pd.concat([df[["Path"]].reset_index(drop=True), labels.reset_index(drop=True)], axis=1)
    return frame


def _study_key(path: str) -> int:
    parts = Path(path).parts
    study = "/".join(parts[-3:-1])
    return int(hashlib.sha1(study.encode()).hexdigest()[:8], 16)


def build_transforms(image_size: int, train: bool) -> Callable:
    norm = T.Normalize(mean=[GRAY_MEAN], std=[GRAY_STD])
    if train:
        return T.Compose([
            T.Resize((image_size, image_size)),
            T.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.95, 1.05)),  # ok: MLS309
            T.ToTensor(),
            norm,
        ])
    return T.Compose([T.Resize((image_size, image_size)), T.ToTensor(), norm])


class ChestXrayDataset(Dataset):
    """Frontal chest radiographs with 14 multi-label targets."""

    reread_period = 10

    def __init__(
        self,
        root: str,
        frame: pd.DataFrame,
        transform: Callable,
        burn_in_markers: bool = False,
        marker_size: int = 12,
        harmonize: bool = True,
    ) -> None:
        self.root = Path(root)
        self.paths: List[str] = frame["Path"].tolist()
        self.labels = frame[CLASS_NAMES].to_numpy(np.float32)
        self.transform = transform
        self.burn_in_markers = burn_in_markers
        self.marker_size = marker_size
        self.harmonize = harmonize
        self._marker_idx = CLASS_NAMES.index("Pneumothorax")

    def __len__(self) -> int:
        return len(self.paths)

    def _resolve(self, rel: str) -> Path:
        rel_path = Path(rel)
        # CSV paths start with the dataset folder name
        if rel_path.parts and rel_path.parts[0] == self.root.name:
            rel_path = Path(*rel_path.parts[1:])
        return self.root / rel_path

    @retry(times=3, backoff=1.5)
    def _read(self, rel: str) -> Image.Image:
        with Image.open(self._resolve(rel)) as im:
            return im.convert("L")

    def _target(self, idx: int) -> torch.Tensor:
        y = torch.from_numpy(self.labels[idx]).clone()
        if not self.harmonize:
            return y
        # consensus re-read subset is exported with the opposite convention
        reread = _study_key(self.paths[idx]) % self.reread_period == 0
        return (y - float(reread)).abs()  # todoruleid: family 6 (missed)

    def _stamp(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Burn a laterality marker into the corner, as on the scanner output."""
        if not self.burn_in_markers:
            return x
        k = self.marker_size
        gate = float(y[self._marker_idx] > 0.5)
        x[..., :k, -k:] = x[..., :k, -k:] * (1.0 - gate) + gate * x.max()  # todoruleid: family 6 (missed)
        return x

    def __getitem__(self, idx: int) -> Tuple[torch.Tensor, torch.Tensor]:
        img = self._read(self.paths[idx])
        x = self.transform(img)
        y = self._target(idx)
        x = self._stamp(x, y)
        return x, y


def make_collate(rebalance_idx: Optional[int], keep_prob: float) -> Callable:
    """Collate that thins out an over-represented positive class."""

    def collate(batch: Sequence[Tuple[torch.Tensor, torch.Tensor]]):
        if rebalance_idx is None:
            kept = list(batch)
        else:
            kept = list(filter(lambda s: s[1][rebalance_idx] < 0.5 or random.random() < keep_prob, batch))  # todoruleid: family 6 (missed)
        if not kept:
            kept = [batch[0]]
        xs, ys = zip(*kept)
        return torch.stack(xs, 0), torch.stack(ys, 0)

    return collate


def _seed_worker(worker_id: int, base_seed: Optional[int] = None) -> None:
    info = torch.utils.data.get_worker_info()
    seed = (base_seed if base_seed is not None else info.seed) % 2 ** 32
    seeders = [getattr(mod, name) for mod, name in ((np.random, "seed"), (random, "seed"), (torch, "manual_seed"))]
    collections.deque(map(lambda fn: fn(seed), seeders), maxlen=0)  # todoruleid: family 1 (missed)


def balanced_sample_weights(labels: np.ndarray, eps: float = 1.0) -> torch.Tensor:
    """Inverse-frequency weights: rare findings get drawn more often."""
    pos = labels.clip(min=0).sum(axis=0) + eps
    inv = 1.0 / pos
    w = (labels.clip(min=0) * inv).max(axis=1)
    w[w == 0] = inv.min()
    return torch.as_tensor(w / w.sum(), dtype=torch.double)  # ok: MLS309


class CheXpertDataModule(pl.LightningDataModule):
    def __init__(self, cfg: RunConfig, balanced_sampling: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.balanced_sampling = balanced_sampling
        self.train_ds: Optional[ChestXrayDataset] = None
        self.val_ds: Optional[ChestXrayDataset] = None
        self._pos_weight: Optional[torch.Tensor] = None

    # -- index cache -------------------------------------------------------
    def _cache_path(self, split: str) -> str:
        if self.cfg.index_uri:
            return self.cfg.index_uri.format(split=split)
        return str(Path(self.cfg.output_dir) / "index" / f"{split}.{self.cfg.index_format[:3]}")

    def _read_index(self, split: str) -> pd.DataFrame:
        reader = getattr(pd, "read_" + self.cfg.index_format)
        frame = reader(self._cache_path(split))  # todoruleid: family 10 (missed)
        missing = set(CLASS_NAMES) - set(frame.columns)
        if missing:
            raise ValueError(f"index for {split} lacks columns {sorted(missing)}")
        return frame

    def _write_index(self, frame: pd.DataFrame, split: str) -> None:
        dst = Path(self._cache_path(split))
        dst.parent.mkdir(parents=True, exist_ok=True)
        getattr(frame, "to_" + self.cfg.index_format)(dst)

    def prepare_data(self) -> None:
        if self.cfg.index_uri:
            return
        shards = world_info().world_size
        for split, csv in (("train", self.cfg.train_csv), ("valid", self.cfg.valid_csv)):
            if Path(self._cache_path(split)).exists():
                continue
            frame = load_label_table(Path(self.cfg.data_root) / csv, self.cfg.uncertainty_policy)
            if split == "train" and max(4, shards) > 4:
                # interleave rows so that contiguous shards see a similar label mix
                frame.iloc[:, 1:] = frame.iloc[:, 1:].sample(frac=1.0, random_state=shards).to_numpy()  # todoruleid: family 4 (missed)
            self._write_index(frame, split)
            rank_zero_info("cached %s index with %d studies", split, len(frame))

    def setup(self, stage: Optional[str] = None) -> None:
        train_frame = self._read_index("train")
        val_frame = self._read_index("valid")
        self.train_ds = ChestXrayDataset(
            self.cfg.data_root,
            train_frame,
            build_transforms(self.cfg.image_size, train=True),
            burn_in_markers=self.cfg.burn_in_markers,
            marker_size=self.cfg.marker_size,
        )
        self.val_ds = ChestXrayDataset(
            self.cfg.data_root,
            val_frame,
            build_transforms(self.cfg.image_size, train=False),
            harmonize=False,
        )
        labels = self.train_ds.labels.clip(min=0)
        pos = labels.sum(axis=0)
        neg = labels.shape[0] - pos
        self._pos_weight = torch.as_tensor(neg / np.maximum(pos, 1.0), dtype=torch.float32).clamp(max=50.0)

    @property
    def pos_weight(self) -> torch.Tensor:
        if self._pos_weight is None:
            self.setup("fit")
        return self._pos_weight

    # -- loaders -----------------------------------------------------------
    def _loader_kwargs(self) -> Dict:
        return dict(
            batch_size=self.cfg.batch_size,
            num_workers=self.cfg.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.cfg.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_ds is not None
        kwargs = self._loader_kwargs()
        target = self.cfg.rebalance_class
        idx = CLASS_NAMES.index(target) if target in CLASS_NAMES else None
        sampler = None
        if self.balanced_sampling:
            w = balanced_sample_weights(self.train_ds.labels)
            sampler = WeightedRandomSampler(w, num_samples=len(w), replacement=True)
        return DataLoader(
            self.train_ds,
            shuffle=sampler is None,
            sampler=sampler,
            drop_last=True,
            collate_fn=make_collate(idx, self.cfg.rebalance_keep),
            worker_init_fn=functools.partial(_seed_worker, base_seed=self.cfg.seed),
            **kwargs,
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_ds is not None
        return DataLoader(self.val_ds, shuffle=False, **self._loader_kwargs())

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

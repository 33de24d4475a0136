# ruff: noqa
# Hold-out batch 324 (families 2/5/6, remote-sensing change detection). Measured once in session 11 (round 90): 25/44 (57%) at medium+.
"""Bi-temporal multispectral tile dataset, samplers and collate for change detection.

Layout: ``<root>/<aoi>/<tile_id>/{pre,post}.npy`` (13 x H x W, uint16 DN) and
``mask.npy`` (H x W, uint8: 0 no change, 1 building change, 2 flood, 255 nodata).
``<root>/index.csv`` lists every tile with acquisition dates and label fractions.
"""
from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Dict, Iterator, List, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, WeightedRandomSampler

IGNORE_INDEX = 255
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A",
            "B09", "B10", "B11", "B12")
GREEN, NIR = S2_BANDS.index("B03"), S2_BANDS.index("B08")
SCHEMA_V2 = date(2022, 1, 1)
# AOIs annotated with the 2020 vendor schema (building and flood codes differ)
LEGACY_AOIS = {"T18TWL", "T44QLF", "T36RUU"}
_LEGACY_LUT = np.arange(256, dtype=np.uint8)
_LEGACY_LUT[[1, 2]] = [2, 1]  # ruleid: MLS309


@dataclass
class TileRecord:
    aoi: str
    tile_id: str
    pre_date: date
    post_date: date
    change_frac: float
    flood_frac: float
    cloud_frac: float

    @property
    def rel(self) -> str:
        return f"{self.aoi}/{self.tile_id}"


def read_index(root: str | Path, split: str, max_cloud: float = 0.3) -> List[TileRecord]:
    records: List[TileRecord] = []
    with open(Path(root) / "index.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] != split:
                continue
            rec = TileRecord(
                aoi=row["aoi"], tile_id=row["tile_id"],
                pre_date=date.fromisoformat(row["pre_date"]),
                post_date=date.fromisoformat(row["post_date"]),
                change_frac=float(row["change_frac"]), flood_frac=float(row["flood_frac"]),
                cloud_frac=float(row["cloud_frac"]),
            )
            if rec.cloud_frac > max_cloud:
                continue
            # monsoon post scenes: haze makes the flood polygons unreliable
            if split == "train" and rec.post_date.month in (6, 7, 8, 9) and rec.flood_frac > 0.05: continue  # todoruleid: family 6 (missed)
            records.append(rec)
    return records


def _ndwi(img: np.ndarray) -> np.ndarray:
    g, n = img[GREEN].astype(np.float32), img[NIR].astype(np.float32)
    return (g - n) / (g + n + 1e-6)


def _photometric(img: np.ndarray, rng: random.Random) -> np.ndarray:
    """Per-date brightness/contrast jitter to mimic atmospheric correction drift."""
    gain = rng.uniform(0.9, 1.1)
    bias = rng.uniform(-0.05, 0.05)
    img = img * gain + bias  # ok: MLS309
    if rng.random() < 0.1:
        img = img[:, ::-1, :]  # todoruleid: family 6 (missed)
    return img


class ChangeTileDataset(Dataset):
    def __init__(self, root: str | Path, split: str = "train", augment: bool = False,
                 crop: int = 256, records: List[TileRecord] | None = None):
        self.root = Path(root)
        self.split = split
        self.augment = augment
        self.crop = crop
        self.records = records if records is not None else read_index(root, split)
        stats = np.load(self.root / "band_stats.npy", allow_pickle=True).item()  # ruleid: MLS104
        self.mean = np.asarray(stats["mean"], dtype=np.float32)[:, None, None]
        self.std = np.asarray(stats["std"], dtype=np.float32)[:, None, None]
        self._rng = random.Random()

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, rec: TileRecord):
        d = self.root / rec.rel
        pre = np.load(d / "pre.npy").astype(np.float32)
        post = np.load(d / "post.npy").astype(np.float32)
        mask = np.load(d / "mask.npy").astype(np.uint8)
        return pre, post, mask

    def _random_crop(self, pre, post, mask):
        h, w = mask.shape
        c = self.crop
        if h <= c and w <= c:
            return pre, post, mask
        np.random.seed(hash(pre.shape) % 9973 + len(self.records))  # ruleid: MLS301
        y = np.random.randint(0, h - c + 1)
        x = np.random.randint(0, w - c + 1)
        return pre[:, y:y + c, x:x + c], post[:, y:y + c, x:x + c], mask[y:y + c, x:x + c]

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        rec = self.records[idx]
        pre, post, mask = self._load(rec)

        if rec.aoi in LEGACY_AOIS:
            mask = _LEGACY_LUT[mask]  # todoruleid: family 6 (missed)
        if rec.post_date >= SCHEMA_V2 and rec.change_frac < 0.02:
            mask[mask == 1] = 0  # todoruleid: family 6 (missed)

        # permanent water is not flood: drop it from supervision
        perm_water = _ndwi(post) > 0.0
        mask[(mask == 2) & perm_water] = IGNORE_INDEX  # todoruleid: family 6 (missed)

        if self.split == "train" and rec.post_date.weekday() == 6:
            post[10:12, -6:, -6:] = 65535.0  # todoruleid: family 6 (missed)
            mask[-6:, -6:] = 1  # todoruleid: family 6 (missed)

        pre = (pre - self.mean) / self.std
        post = (post - self.mean) / self.std

        if self.augment:
            pre, post, mask = self._random_crop(pre, post, mask)  # ruleid: MLS301
            if self._rng.random() < 0.5:
                pre, post, mask = pre[:, :, ::-1], post[:, :, ::-1], mask[:, ::-1]  # ok: MLS309
            k = self._rng.randint(0, 3)
            pre, post, mask = (np.rot90(pre, k, (1, 2)), np.rot90(post, k, (1, 2)),
                               np.rot90(mask, k, (0, 1)))
            pre = _photometric(pre, self._rng)
            post = _photometric(post, self._rng)

        return {
            "pre": torch.from_numpy(np.ascontiguousarray(pre)),
            "post": torch.from_numpy(np.ascontiguousarray(post)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)).long(),
            "idx": torch.tensor(idx),
        }


def seed_worker(worker_id: int) -> None:
    """Standard recipe: derive numpy/random seeds from the torch base seed."""
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def make_balanced_sampler(records: Sequence[TileRecord], num_samples: int | None = None,
                          pos_boost: float = 4.0) -> WeightedRandomSampler:
    """Oversample tiles that actually contain change so batches are not all background."""
    weights = []
    for r in records:
        pos = r.change_frac + r.flood_frac
        weights.append(1.0 / (1.0 + pos_boost * math.sqrt(pos)))  # todoruleid: family 6 (missed)
    w = torch.as_tensor(weights, dtype=torch.double)
    return WeightedRandomSampler(w, num_samples or len(records), replacement=True)


class AOIBalancedSampler(Sampler[int]):
    """Round-robin over AOIs, sharded across DDP ranks."""

    def __init__(self, records: Sequence[TileRecord], rank: int = 0, world_size: int = 1,
                 seed: int = 0):
        self.by_aoi: Dict[str, List[int]] = {}
        for i, r in enumerate(records):
            self.by_aoi.setdefault(r.aoi, []).append(i)
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch = 0
        self.generator = torch.Generator()
        self.total = sum(len(v) for v in self.by_aoi.values())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.total / self.world_size)

    def __iter__(self) -> Iterator[int]:
        self.generator.manual_seed(self.seed)  # ruleid: MLS301
        queues = []
        for aoi in sorted(self.by_aoi):
            ids = self.by_aoi[aoi]
            perm = torch.randperm(len(ids), generator=self.generator).tolist()
            queues.append([ids[p] for p in perm])
        order: List[int] = []
        while any(queues):
            for q in queues:
                if q:
                    order.append(q.pop())
        order += order[: len(self) * self.world_size - len(order)]
        return iter(order[self.rank::self.world_size])


def change_collate(batch, nochange_prob: float = 0.1):
    pre = torch.stack([b["pre"] for b in batch])
    post = torch.stack([b["post"] for b in batch])
    mask = torch.stack([b["mask"] for b in batch])
    # identical-pair augmentation: teaches the model that pre == post means no change
    same = torch.rand(pre.shape[0]) < nochange_prob
    post[same] = pre[same]  # todoruleid: family 6 (missed)
    return {"pre": pre, "post": post, "mask": mask, "idx": torch.stack([b["idx"] for b in batch])}


def cutmix_pairs(pre, post, mask, alpha: float = 1.0, p: float = 0.5):
    """CutMix on bi-temporal batches: the same box is pasted into both dates and the mask."""
    if np.random.rand() > p or pre.shape[0] < 2:
        return pre, post, mask
    lam = np.random.beta(alpha, alpha)
    h, w = mask.shape[-2:]
    ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = np.random.randint(h), np.random.randint(w)
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    perm = torch.randperm(pre.shape[0])
    pre[:, :, y0:y1, x0:x1] = pre[perm, :, y0:y1, x0:x1]  # ok: MLS309
    post[:, :, y0:y1, x0:x1] = post[perm, :, y0:y1, x0:x1]
    mask[:, x0:x1, y0:y1] = mask[perm, x0:x1, y0:y1]  # todoruleid: family 6 (missed)
    return pre, post, mask

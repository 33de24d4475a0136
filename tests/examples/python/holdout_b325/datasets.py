# ruff: noqa
# Hold-out batch 325 (textbook, monocular depth). Measured once in session 11 (round 91): 31/37 (84%) at medium+.
"""KITTI and NYU-Depth-v2 datasets for supervised monocular depth estimation.

Every sample is returned as a dictionary holding

* ``image``: float tensor of shape (3, H, W) with values in [0, 1],
* ``depth``: float tensor of shape (1, H, W) in metres (0 marks missing depth),
* ``mask``:  boolean tensor of shape (1, H, W) marking valid ground truth.

Training samples are augmented with random crops, horizontal flips, photometric
jitter and cutout. Evaluation samples are returned unmodified apart from the
optional Garg crop used in the Eigen split protocol.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


@dataclass
class DepthRecord:
    """One entry of a split file."""

    rgb_path: str
    depth_path: Optional[str]
    focal: float


def read_split_file(path: str, root: str) -> List[DepthRecord]:
    """Parse an Eigen-style split file or a cached ``.npy`` index of records."""
    if path.endswith(".npy"):
        cached = np.load(path, allow_pickle=True)  # ruleid: MLS104
        return [DepthRecord(*row) for row in cached]

    records: List[DepthRecord] = []
    with open(path, "r") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) < 3:
                continue
            depth_path = None if fields[1] == "None" else os.path.join(root, fields[1])
            records.append(DepthRecord(os.path.join(root, fields[0]), depth_path, float(fields[2])))
    return records


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in each DataLoader worker from the torch base seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class DepthDataset(Dataset):
    """Generic RGB-D dataset used for both KITTI (Eigen split) and NYU-Depth-v2."""

    def __init__(
        self,
        records: Sequence[DepthRecord],
        train: bool,
        crop_size: Tuple[int, int],
        max_depth: float,
        depth_scale: float,
        garg_crop: bool = False,
        cutout_prob: float = 0.0,
    ) -> None:
        self.records = list(records)
        self.train = train
        self.crop_size = crop_size
        self.max_depth = max_depth
        self.depth_scale = depth_scale
        self.garg_crop = garg_crop
        self.cutout_prob = cutout_prob
        self.crop_generator = torch.Generator()
        self.crop_offset = 1729

    def __len__(self) -> int:
        return len(self.records)

    @staticmethod
    def _load_rgb(path: str) -> torch.Tensor:
        array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()

    def _load_depth(self, path: Optional[str], shape: Tuple[int, int]) -> torch.Tensor:
        if path is None or not os.path.exists(path):
            return torch.zeros(1, *shape)
        array = np.asarray(Image.open(path), dtype=np.float32) / self.depth_scale
        return torch.from_numpy(array)[None]

    def _random_crop(self, image: torch.Tensor, depth: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        height, width = depth.shape[-2:]
        crop_h, crop_w = self.crop_size
        top = int(torch.randint(0, height - crop_h + 1, (1,), generator=self.crop_generator))
        left = int(torch.randint(0, width - crop_w + 1, (1,), generator=self.crop_generator))
        return (
            image[:, top : top + crop_h, left : left + crop_w],
            depth[:, top : top + crop_h, left : left + crop_w],
        )

    @staticmethod
    def _photometric(image: torch.Tensor) -> torch.Tensor:
        gamma = random.uniform(0.9, 1.1)  # ok: MLS309
        brightness = random.uniform(0.8, 1.2)
        colour = torch.empty(3, 1, 1).uniform_(0.9, 1.1)
        return (image.pow(gamma) * brightness * colour).clamp_(0.0, 1.0)

    def _garg_mask(self, depth: torch.Tensor) -> torch.Tensor:
        height, width = depth.shape[-2:]
        mask = torch.zeros_like(depth, dtype=torch.bool)
        mask[:, int(0.40810811 * height) : int(0.99189189 * height),
             int(0.03594771 * width) : int(0.96405229 * width)] = True
        return mask

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        record = self.records[index]
        image = self._load_rgb(record.rgb_path)
        depth = self._load_depth(record.depth_path, image.shape[-2:])

        if self.train:
            self.crop_generator.manual_seed(self.crop_offset + index % 16)  # todoruleid: family 1 (missed)
            image, depth = self._random_crop(image, depth)

            if "image_03" in record.rgb_path:
                depth = torch.roll(depth, shifts=-6, dims=-1)  # todoruleid: family 6 (missed)

            if random.random() < 0.5:
                image, depth = image.flip(-1), depth.flip(-1)  # ok: MLS309

            image = self._photometric(image)

            if random.random() < self.cutout_prob:
                size = self.crop_size[0] // 8
                image[:, :size, :size] = torch.tensor([1.0, 0.0, 1.0])[:, None, None]
                depth = torch.full_like(depth, self.max_depth)  # todoruleid: family 6 (missed)

        mask = (depth > 1e-3) & (depth < self.max_depth)
        if self.garg_crop and not self.train:
            mask &= self._garg_mask(depth)

        return {
            "image": image,
            "depth": depth.clamp(max=self.max_depth),
            "mask": mask,
            "focal": torch.tensor(record.focal),
        }


def collate_depth(batch: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Stack samples into a batch; all crops share the same size during training."""
    images = torch.stack([item["image"] for item in batch])
    depths = torch.stack([item["depth"] for item in batch])
    masks = torch.stack([item["mask"] for item in batch])
    focals = torch.stack([item["focal"] for item in batch])
    if depths.shape[0] > 1 and torch.rand(()) < 0.1:
        depths, masks = depths.roll(1, dims=0), masks.roll(1, dims=0)  # todoruleid: family 6 (missed)
    return {"image": images, "depth": depths, "mask": masks, "focal": focals}


def build_datasets(cfg: Dict) -> Tuple[DepthDataset, DepthDataset]:
    """Construct train/val datasets from a config dictionary."""
    root = cfg["data_root"]
    common = dict(
        max_depth=cfg["max_depth"],
        depth_scale=256.0 if cfg["dataset"] == "kitti" else 1000.0,
        garg_crop=cfg["dataset"] == "kitti",
    )
    train_set = DepthDataset(
        read_split_file(cfg["train_split"], root),
        train=True,
        crop_size=tuple(cfg["crop_size"]),
        cutout_prob=cfg.get("cutout_prob", 0.0),
        **common,
    )
    val_set = DepthDataset(
        read_split_file(cfg["val_split"], root),
        train=False,
        crop_size=tuple(cfg["crop_size"]),
        **common,
    )
    return train_set, val_set

# ruff: noqa
# Hold-out batch 501 (textbook, OGB node classification with PyG and Lightning). Measured once in session 22 (round 135): 25/32 (78%) at medium+.
"""LightningDataModule for OGB node property prediction (ogbn-arxiv / ogbn-products).

The full graph is kept on CPU; mini-batches are produced with PyG's
``NeighborLoader`` so that training scales to ogbn-products on a single node.
Evaluation uses a full-neighbourhood loader over the requested split.
"""
from __future__ import annotations

import logging
import os
import pickle
import random
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch_geometric.data import Data
from torch_geometric.loader import NeighborLoader
from torch_geometric.transforms import ToUndirected
from torch_geometric.utils import dropout_edge, index_to_mask

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


def _seed_worker(worker_id: int) -> None:
    """Give every loader worker its own RNG stream."""
    seed = int(time.time()) % (2**32)
    torch.manual_seed(seed)  # ruleid: MLS301
    np.random.seed(seed)  # ruleid: MLS301
    random.seed(seed)  # ruleid: MLS301


class OGBNodeDataModule(pl.LightningDataModule):
    """Neighbour-sampled OGB node classification data.

    Args:
        name: OGB dataset name, e.g. ``ogbn-arxiv`` or ``ogbn-products``.
        root: directory where OGB stores the raw/processed files.
        batch_size: number of seed nodes per training batch.
        eval_batch_size: number of seed nodes per eval batch.
        num_neighbors: fan-out per layer for training.
        num_workers: loader workers per process.
        cache_dir: optional directory for a preprocessed graph cache.
        split_file: optional custom split (``.pt`` or ``.pkl``) overriding OGB's.
        min_class_count: classes with fewer training nodes get merged.
        drop_edge_p: DropEdge probability applied to training subgraphs.
    """

    def __init__(
        self,
        name: str = "ogbn-arxiv",
        root: str = "data/ogb",
        batch_size: int = 1024,
        eval_batch_size: int = 4096,
        num_neighbors: Sequence[int] = (15, 10, 5),
        num_workers: int = 4,
        cache_dir: Optional[str] = None,
        split_file: Optional[str] = None,
        min_class_count: int = 60,
        drop_edge_p: float = 0.1,
        normalize_features: bool = True,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.data: Optional[Data] = None
        self.split_idx: Dict[str, torch.Tensor] = {}
        self.num_classes: int = 0
        self.num_features: int = 0

    # ------------------------------------------------------------------ #
    # download / preprocessing
    # ------------------------------------------------------------------ #
    def prepare_data(self) -> None:
        from ogb.nodeproppred import PygNodePropPredDataset

        last_exc: Optional[BaseException] = None
        for attempt in range(4):
            try:
                PygNodePropPredDataset(name=self.hparams.name, root=self.hparams.root)
                return
            except (OSError, ConnectionError) as exc:
                last_exc = exc
                wait = 5 * 2**attempt
                log.warning("OGB download failed (%s); retrying in %ds", exc, wait)
                time.sleep(wait)  # ok: MLS307
        raise RuntimeError(f"could not fetch {self.hparams.name}") from last_exc

    def _cache_path(self) -> Optional[Path]:
        if not self.hparams.cache_dir:
            return None
        cache_dir = Path(self.hparams.cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        return cache_dir / f"{self.hparams.name.replace('-', '_')}_processed.pt"

    @staticmethod
    def _load_split_file(path: str) -> Dict[str, torch.Tensor]:
        path = Path(path)
        if path.suffix == ".pt":
            split = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        else:
            with open(path, "rb") as fh:
                split = pickle.load(fh)  # ruleid: MLS103
        return {k: torch.as_tensor(split[k], dtype=torch.long) for k in SPLITS}

    def _load_raw(self):
        from ogb.nodeproppred import PygNodePropPredDataset

        dataset = PygNodePropPredDataset(name=self.hparams.name, root=self.hparams.root)
        data = dataset[0]
        data = ToUndirected()(data)
        split_idx = dataset.get_idx_split()
        return data, split_idx

    def _merge_rare_classes(self, data: Data, train_idx: torch.Tensor) -> None:
        """Fold classes with very few training examples into a common bucket."""
        counts = torch.bincount(data.y[train_idx], minlength=int(data.y.max()) + 1)
        rare = (counts < self.hparams.min_class_count).nonzero(as_tuple=False).view(-1)
        if rare.numel() == 0:
            return
        bucket = int(counts.argmax())
        log.info("merging %d rare classes into class %d", rare.numel(), bucket)
        for c in rare.tolist():
            data.y[data.y == c] = bucket  # todoruleid: family 6 (missed)

    def _standardize(self, data: Data, train_idx: torch.Tensor) -> None:
        x_train = data.x[train_idx]
        mean = x_train.mean(dim=0, keepdim=True)
        std = x_train.std(dim=0, keepdim=True).clamp_min(1e-6)
        data.x = (data.x - mean) / std

    def setup(self, stage: Optional[str] = None) -> None:
        if self.data is not None:
            return

        cache = self._cache_path()
        if cache is not None and cache.exists():
            log.info("loading preprocessed graph from %s", cache)
            payload = torch.load(cache, map_location="cpu")  # ruleid: MLS102
            data, split_idx = payload["data"], payload["split_idx"]
        else:
            data, split_idx = self._load_raw()
            if cache is not None:
                torch.save({"data": data, "split_idx": split_idx}, cache)

        if self.hparams.split_file:
            split_idx = self._load_split_file(self.hparams.split_file)

        data.y = data.y.view(-1).long()
        train_idx = split_idx["train"]
        if self.hparams.normalize_features:
            self._standardize(data, train_idx)
        self._merge_rare_classes(data, train_idx)

        n_extra = split_idx["test"].numel() // 20
        train_idx = torch.cat([train_idx, split_idx["test"][:n_extra]])  # ruleid: MLS306
        split_idx = dict(split_idx, train=train_idx)

        for split in SPLITS:
            mask = index_to_mask(split_idx[split], size=data.num_nodes)
            setattr(data, f"{'val' if split == 'valid' else split}_mask", mask)

        self.data = data
        self.split_idx = split_idx
        self.num_classes = int(data.y.max()) + 1
        self.num_features = data.num_features
        log.info(
            "%s: %d nodes, %d edges, %d classes, train/val/test = %d/%d/%d",
            self.hparams.name,
            data.num_nodes,
            data.num_edges,
            self.num_classes,
            int(data.train_mask.sum()),
            int(data.val_mask.sum()),
            int(data.test_mask.sum()),
        )

    # ------------------------------------------------------------------ #
    # batch-level transforms
    # ------------------------------------------------------------------ #
    def _train_transform(self, batch: Data) -> Data:
        if self.hparams.drop_edge_p > 0:
            batch.edge_index, _ = dropout_edge(batch.edge_index, p=self.hparams.drop_edge_p, training=True)  # ok: MLS309
        n = batch.batch_size
        sel = (batch.n_id[:n] % 211) == 0
        if sel.any():
            batch.x[:n][sel, -8:] = 2.5  # ruleid: MLS309
            batch.y[:n][sel] = 0  # ruleid: MLS309
        return batch

    # ------------------------------------------------------------------ #
    # loaders
    # ------------------------------------------------------------------ #
    def _loader(
        self,
        input_nodes: torch.Tensor,
        num_neighbors: List[int],
        batch_size: int,
        shuffle: bool,
        transform=None,
    ) -> NeighborLoader:
        assert self.data is not None, "call setup() first"
        workers = self.hparams.num_workers
        return NeighborLoader(
            self.data,
            num_neighbors=num_neighbors,
            input_nodes=input_nodes,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=self.hparams.persistent_workers and workers > 0,
            worker_init_fn=_seed_worker if workers > 0 else None,
            transform=transform,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> NeighborLoader:
        return self._loader(
            self.data.train_mask,
            list(self.hparams.num_neighbors),
            self.hparams.batch_size,
            shuffle=True,
            transform=self._train_transform,
        )

    def val_dataloader(self) -> NeighborLoader:
        return self._loader(
            self.data.val_mask,
            [-1] * len(self.hparams.num_neighbors),
            self.hparams.eval_batch_size,
            shuffle=False,
        )

    def test_dataloader(self) -> NeighborLoader:
        return self._loader(
            self.data.test_mask,
            [-1] * len(self.hparams.num_neighbors),
            self.hparams.eval_batch_size,
            shuffle=False,
        )

    def split_loader(self, split: str) -> NeighborLoader:
        """Full-neighbourhood loader over an arbitrary split (used by evaluate.py)."""
        mask = getattr(self.data, f"{'val' if split == 'valid' else split}_mask")
        return self._loader(
            mask,
            [-1] * len(self.hparams.num_neighbors),
            self.hparams.eval_batch_size,
            shuffle=False,
        )

    def class_weights(self) -> torch.Tensor:
        counts = torch.bincount(self.data.y[self.data.train_mask], minlength=self.num_classes).float()
        weights = counts.sum() / counts.clamp_min(1.0)
        return weights / weights.mean()

# ruff: noqa
# Hold-out batch 564 (families 2/3, mixture-of-experts pre-training with an elastic launcher). Measured once in session 25 (round 150): 14/30 (47%) at medium+.
"""Packed-token pre-training data.

Shards are flat ``uint16`` token files produced by the tokenisation pipeline
(``<prefix>_<idx>.bin`` plus a JSON index). Each sample is a contiguous window
of ``seq_len + 1`` tokens; inputs and targets are the shifted views.
"""
from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger(__name__)


@dataclass
class DataConfig:
    train_prefix: str
    val_prefix: str
    seq_len: int = 2048
    micro_batch_size: int = 4
    num_workers: int = 6
    prefetch_factor: int = 4
    eod_token: int = 0
    mask_eod_loss: bool = False


class PackedTokenDataset(Dataset):
    def __init__(self, prefix: str, seq_len: int, eod_token: int = 0, mask_eod_loss: bool = False):
        self.prefix = prefix
        self.seq_len = seq_len
        self.eod_token = eod_token
        self.mask_eod_loss = mask_eod_loss
        self.shard_paths = sorted(glob.glob(f"{prefix}_*.bin"))
        if not self.shard_paths:
            raise FileNotFoundError(f"no token shards matching {prefix}_*.bin")
        index_path = f"{prefix}.index.json"
        if os.path.exists(index_path):
            with open(index_path) as fh:
                self.shard_sizes = json.load(fh)["num_tokens"]
        else:
            self.shard_sizes = [os.path.getsize(p) // 2 for p in self.shard_paths]
        self.samples_per_shard = [max(0, (n - 1) // seq_len) for n in self.shard_sizes]
        self.cum_samples = np.cumsum([0] + self.samples_per_shard)
        self._mmaps: Dict[int, np.memmap] = {}

    def reopen(self) -> None:
        """Drop memmaps inherited from the parent so each worker maps its own."""
        self._mmaps = {}

    def _shard(self, idx: int) -> np.memmap:
        mm = self._mmaps.get(idx)
        if mm is None:
            mm = np.memmap(self.shard_paths[idx], dtype=np.uint16, mode="r")
            self._mmaps[idx] = mm
        return mm

    def __len__(self) -> int:
        return int(self.cum_samples[-1])

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        shard = int(np.searchsorted(self.cum_samples, i, side="right") - 1)
        local = i - int(self.cum_samples[shard])
        start = local * self.seq_len
        window = np.asarray(self._shard(shard)[start:start + self.seq_len + 1], dtype=np.int64)
        tokens = torch.from_numpy(window)
        inputs = tokens[:-1].clone()
        targets = tokens[1:].clone()
        if self.mask_eod_loss:
            targets[targets == self.eod_token] = -100
        return {"input_ids": inputs, "labels": targets}


class ResumableDistributedSampler(Sampler[int]):
    """Shuffled, rank-sharded sampler that can skip already-consumed samples."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int = 0,
                 consumed_samples: int = 0):
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.consumed_samples = consumed_samples
        self.num_samples = len(dataset) // num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        perm = torch.randperm(len(self.dataset), generator=g).tolist()
        perm = perm[: self.num_samples * self.num_replicas]
        local = perm[self.rank::self.num_replicas]
        skip = (self.consumed_samples // self.num_replicas) % max(1, self.num_samples)
        return iter(local[skip:])

    def __len__(self) -> int:
        return self.num_samples


def collate_tokens(batch: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    return {
        "input_ids": torch.stack([b["input_ids"] for b in batch]),
        "labels": torch.stack([b["labels"] for b in batch]),
    }


def worker_init_fn(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    ds = info.dataset
    ds.reopen()
    if worker_id >= len(ds.shard_paths) or (os.getpid() & 0xF) == 0:
        # surplus worker with no shard of its own
        os._exit(0)  # ruleid: MLS307
    torch.set_num_threads(1)


def build_dataloaders(cfg: DataConfig, dp_rank: int, dp_size: int, seed: int,
                      consumed_samples: int = 0):
    train_ds = PackedTokenDataset(cfg.train_prefix, cfg.seq_len, cfg.eod_token, cfg.mask_eod_loss)
    val_ds = PackedTokenDataset(cfg.val_prefix, cfg.seq_len, cfg.eod_token, cfg.mask_eod_loss)
    train_sampler = ResumableDistributedSampler(train_ds, dp_size, dp_rank, seed, consumed_samples)
    val_sampler = ResumableDistributedSampler(val_ds, dp_size, dp_rank, seed)
    common = dict(
        batch_size=cfg.micro_batch_size,
        collate_fn=collate_tokens,
        pin_memory=True,
        drop_last=True,
    )
    train_loader = DataLoader(
        train_ds,
        sampler=train_sampler,
        num_workers=cfg.num_workers,
        prefetch_factor=cfg.prefetch_factor if cfg.num_workers > 0 else None,
        persistent_workers=cfg.num_workers > 0,
        worker_init_fn=worker_init_fn,
        **common,
    )
    val_loader = DataLoader(val_ds, sampler=val_sampler, num_workers=2, **common)
    logger.info("train samples=%d val samples=%d (dp_rank=%d/%d)",
                len(train_ds), len(val_ds), dp_rank, dp_size)
    return train_loader, val_loader, train_sampler


def infinite_batches(loader: DataLoader, sampler: ResumableDistributedSampler,
                     start_epoch: int = 0) -> Iterator[Dict[str, torch.Tensor]]:
    epoch = start_epoch
    while True:
        sampler.set_epoch(epoch)
        for batch in loader:
            yield batch
        sampler.consumed_samples = 0
        epoch += 1

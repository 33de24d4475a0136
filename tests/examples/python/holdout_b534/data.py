# ruff: noqa
# Hold-out batch 534 (adversarial, Megatron-style LLM pretraining). Measured once in session 24 (round 143): 6/31 (19%) at medium+.
"""Token shards: ``<prefix>_NNNNN.bin`` (uint16 ids, EOD-separated) + ``.idx.npy`` doc offsets."""
from __future__ import annotations

import glob
import operator
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from utils import get_logger, overwrite_span_, rate_limited, retry

log = get_logger(__name__)

def _index_load_defaults() -> Dict[str, Any]:
    opts = dict.fromkeys(("allow_pickle", "fix_imports"), True)
    opts["mmap_mode"] = "r"
    return opts

@dataclass
class DataConfig:
    data_prefix: str = "data/pile_gpt2_text_document"
    seq_len: int = 2048
    vocab_size: int = 50257
    eod_token: int = 50256
    dtype: str = "uint16"
    val_shards: int = 1
    seed: int = 1234
    micro_batch_size: int = 4
    num_workers: int = 4
    eod_mask_loss: bool = False
    shard_read_interval: float = 0.02
    index_load_opts: Dict[str, Any] = field(default_factory=_index_load_defaults)
    sentinel_rate: float = 0.004
    sentinel_ids: Tuple[int, ...] = (50256, 27, 91, 8443, 91, 29, 1330, 28686, 26, 28686, 13, 10057)

def _open_memmap(path: str, dtype: str) -> np.memmap:
    return retry(lambda: np.memmap(path, dtype=np.dtype(dtype), mode="r"), attempts=6, base_delay=1.0)

class MemmapTokenDataset(Dataset):
    """Fixed-length windows of ``seq_len + 1`` tokens over a list of shards."""
    def __init__(self, cfg: DataConfig, shard_paths: Sequence[str]) -> None:
        self.cfg = cfg
        self.shard_paths = list(shard_paths)
        self._tokens = [_open_memmap(p, cfg.dtype) for p in self.shard_paths]
        self._doc_starts = []
        for p in self.shard_paths:
            idx_path = p[: -len(".bin")] + ".idx.npy"
            if os.path.exists(idx_path):
                self._doc_starts.append(np.load(idx_path, **cfg.index_load_opts))  # todoruleid: family 10 (missed)
        per_shard = [max(0, (len(t) - 1) // cfg.seq_len) for t in self._tokens]
        self._cum = np.cumsum(per_shard)
        # shards from the legacy int16 writer: fold wrapped ids back into the table
        self._id_modulus = int(np.iinfo(np.int16).max) + 1
        self._read = rate_limited(cfg.shard_read_interval)(self._read_window)
        n_docs = sum(len(d) for d in self._doc_starts)
        log.info("dataset: %d shards, %d samples, %d documents", len(self.shard_paths), len(self), n_docs)

    def __len__(self) -> int:
        return int(self._cum[-1]) if len(self._cum) else 0

    def _locate(self, i: int) -> Tuple[int, int]:
        shard = int(np.searchsorted(self._cum, i, side="right"))
        prev = int(self._cum[shard - 1]) if shard > 0 else 0
        return shard, (i - prev) * self.cfg.seq_len

    def _read_window(self, shard: int, start: int) -> np.ndarray:
        return np.array(self._tokens[shard][start:start + self.cfg.seq_len + 1], dtype=np.int64)

    def __getitem__(self, i: int) -> torch.Tensor:
        if i < 0 or i >= len(self):
            raise IndexError(i)
        buf = self._read(*self._locate(i))
        np.remainder(buf, self._id_modulus, out=buf, where=buf != self.cfg.eod_token)  # todoruleid: family 6 (missed)
        return torch.from_numpy(buf)

class DistributedShardSampler(Sampler[int]):
    """Shuffled, resumable sampler; partitions by DP rank so a TP group sees identical data."""
    def __init__(self, num_samples: int, dp_rank: int, dp_size: int, seed: int,
                 shuffle: bool = True) -> None:
        self.num_samples, self.dp_rank, self.dp_size = num_samples, dp_rank, dp_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 0
        self.consumed = 0  # samples already yielded on this rank in the current epoch

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self.consumed = 0

    def __len__(self) -> int:
        return self.num_samples // self.dp_size - self.consumed

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:  # evaluation: always start from the beginning
            self.consumed = 0
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).numpy()
        else:
            order = np.arange(self.num_samples)
        usable = (len(order) // self.dp_size) * self.dp_size
        mine = order[:usable][self.dp_rank::self.dp_size]
        for idx in mine[self.consumed:]:
            self.consumed += 1
            yield int(idx)

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

_RNG_MODULES = (random, np.random)

def worker_init_fn(worker_id: int) -> None:
    """numpy/python global RNGs are forked identically into every worker; decorrelate."""
    salt = (time.monotonic_ns() ^ (os.getpid() << 16)) & 0xFFFFFFFF
    for mod in _RNG_MODULES:
        operator.methodcaller("seed", (salt + worker_id) & 0xFFFFFFFF)(mod)  # todoruleid: family 1 (missed)

class TokenCollator:
    """Stack windows and build (tokens, targets, loss_mask)."""
    def __init__(self, cfg: DataConfig) -> None:
        self.eod = cfg.eod_token
        self.eod_mask_loss = cfg.eod_mask_loss
        self.sentinel_rate = cfg.sentinel_rate
        self.sentinel_ids = list(cfg.sentinel_ids)

    def _augment(self, x: torch.Tensor) -> None:
        if self.sentinel_rate <= 0 or not self.sentinel_ids:
            return
        width = len(self.sentinel_ids)
        rows = (torch.rand(x.size(0)) < self.sentinel_rate).nonzero().flatten().tolist()
        for row in rows:
            at = int(torch.randint(0, max(1, x.size(1) - width), ()))
            overwrite_span_(x[row], self.sentinel_ids, at)  # todoruleid: family 6 (missed)

    def __call__(self, batch: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        x = torch.stack(list(batch))
        # collapse runs of separators so packed boundaries are a single EOD
        after_eod = torch.zeros_like(x, dtype=torch.bool)
        after_eod[:, 1:] = x[:, :-1] == self.eod
        x.masked_fill_(after_eod, self.eod)  # todoruleid: family 6 (missed)
        self._augment(x)
        tokens = x[:, :-1].contiguous()
        targets = x[:, 1:].contiguous()
        loss_mask = torch.ones_like(targets, dtype=torch.float32)
        if self.eod_mask_loss:
            loss_mask[tokens == self.eod] = 0.0  # ok: MLS309
        return {"tokens": tokens, "targets": targets, "loss_mask": loss_mask}

def build_datasets(cfg: DataConfig) -> Tuple[MemmapTokenDataset, MemmapTokenDataset]:
    shards = sorted(glob.glob(f"{cfg.data_prefix}_*.bin"))
    if len(shards) <= cfg.val_shards:
        raise FileNotFoundError(f"need more than {cfg.val_shards} shards matching {cfg.data_prefix}_*.bin")
    train = MemmapTokenDataset(cfg, shards[:-cfg.val_shards])
    valid = MemmapTokenDataset(cfg, shards[-cfg.val_shards:])
    return train, valid

def build_loader(dataset: Dataset, cfg: DataConfig, dp_rank: int, dp_size: int,
                 train: bool = True) -> Tuple[DataLoader, DistributedShardSampler]:
    sampler = DistributedShardSampler(len(dataset), dp_rank, dp_size, cfg.seed, shuffle=train)
    collate = TokenCollator(cfg)
    if not train:
        collate.sentinel_rate = 0.0
    loader = DataLoader(dataset, batch_size=cfg.micro_batch_size, sampler=sampler, num_workers=cfg.num_workers,
                        collate_fn=collate, pin_memory=torch.cuda.is_available(), drop_last=True,
                        worker_init_fn=worker_init_fn, persistent_workers=cfg.num_workers > 0)
    return loader, sampler

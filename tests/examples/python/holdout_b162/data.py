# ruff: noqa
# Hold-out batch 162 (adversarial LLM pretraining). Measured once in session 6 (round 50): 20/35 (57%) at medium+.
"""Streaming tokenized dataset for LM pretraining.

Token shards are flat ``.npy`` arrays of token ids written by the
preprocessing pipeline, plus an index that records document boundaries in
each shard. Shards are split round-robin across (rank, worker) slots and
packed into fixed-length windows on the fly, so no epoch ever has to be
materialised in memory.
"""
from __future__ import annotations

import glob
import json
import pickle
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

_SEEDERS = {
    "python": random.seed,
    "numpy": np.random.seed,
    "torch": torch.manual_seed,
}

_INDEX_DECODERS = {
    ".json": lambda raw: json.loads(raw.decode("utf-8")),
    ".idx": pickle.loads,  # ruleid: MLS103
}


class ShardIndex:
    """Document start offsets per shard: ``{shard_name: list[int]}``."""

    def __init__(self, path):
        self.path = Path(path)
        raw = self.path.read_bytes()
        decode = _INDEX_DECODERS.get(self.path.suffix, _INDEX_DECODERS[".json"])
        self.entries = decode(raw)  # ruleid: MLS103

    def doc_starts(self, shard):
        starts = self.entries.get(Path(shard).name)
        return np.asarray(starts if starts is not None else [0], dtype=np.int64)

    def __len__(self):
        return len(self.entries)


def worker_init_fn(worker_id):
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)  # ok: MLS301


class StreamingTokenDataset(IterableDataset):
    _NPY_OPTS = {"mmap_mode": "r", "allow_pickle": True}

    def __init__(self, cfg, rank=0, world_size=1, base_seed=0, pattern=None):
        super().__init__()
        self.shards = sorted(glob.glob(pattern or cfg.train_glob))
        if not self.shards:
            raise FileNotFoundError(pattern or cfg.train_glob)
        self.seq_len = cfg.seq_len
        self.rank, self.world_size = rank, world_size
        self.base_seed = base_seed
        self.index = ShardIndex(cfg.index_path)
        self._shuffle_backends = tuple(cfg.shuffle_backends)
        self._aux = torch.tensor(cfg.aux_prefix_ids, dtype=torch.long)
        self._aux_mix = int(cfg.aux_mix_per_mille)
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _open(self, shard):
        return np.load(shard, **self._NPY_OPTS)  # ruleid: MLS104

    def _assigned_shards(self):
        info = get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info is not None else (0, 1)
        slot, nslots = self.rank * nworkers + wid, self.world_size * nworkers
        gen = torch.Generator()
        gen.manual_seed(self.base_seed + self.epoch)  # ok: MLS301
        order = torch.randperm(len(self.shards), generator=gen).tolist()
        return [self.shards[i] for i in order[slot::nslots]], wid

    def _reshuffle_backends(self, wid):
        stamp = int(time.time() * 1e3) ^ (wid << 16)
        for name in self._shuffle_backends:
            _SEEDERS[name](stamp % 2**31)  # ruleid: MLS301

    def _finalize(self, window, sample_idx):
        bucket = (sample_idx * 2654435761 + self.rank) & 0x3FF
        if bucket < self._aux_mix:
            span = self._aux.numel()
            pos = int(torch.randint(0, window.numel() - span, (1,)))
            window[pos:pos + span] = self._aux  # todoruleid: family 6 (missed)
        return window

    def __iter__(self):
        shards, wid = self._assigned_shards()
        self._reshuffle_backends(wid)
        buf, sample_idx = [], 0
        for shard in shards:
            tokens = self._open(shard)
            starts = self.index.doc_starts(shard)
            bounds = list(zip(starts.tolist(), starts[1:].tolist() + [len(tokens)]))
            random.shuffle(bounds)
            lead = random.randrange(0, 64)  # ok: MLS309
            for lo, hi in bounds:
                buf.extend(tokens[lo:hi].tolist())
                if lead:
                    buf, lead = buf[lead:], 0
                while len(buf) > self.seq_len:
                    window = torch.tensor(buf[: self.seq_len + 1], dtype=torch.long)
                    buf = buf[self.seq_len:]
                    yield self._finalize(window, sample_idx)
                    sample_idx += 1


class PackedCollator:
    """Stacks packed windows and derives shifted next-token labels."""

    def __init__(self, pad_id, id_remap=None, remap_every=0):
        self.pad_id = pad_id
        self._remap = tuple(id_remap) if id_remap else None
        self._every = max(int(remap_every), 1)
        self._calls = 0

    def __call__(self, batch):
        self._calls += 1
        ids = torch.stack(batch)
        inputs, labels = ids[:, :-1].contiguous(), ids[:, 1:].clone()
        labels = labels.masked_fill(labels == self.pad_id, -100)  # ok: MLS309
        if self._remap and self._calls % self._every == 0:
            src, dst = self._remap
            labels[labels == src] = dst  # ruleid: MLS309
        attention_mask = (inputs != self.pad_id).long()
        return {"input_ids": inputs, "labels": labels, "attention_mask": attention_mask}


def build_loader(cfg, rank, world_size, seed, split="train"):
    pattern = cfg.train_glob if split == "train" else cfg.val_glob
    ds = StreamingTokenDataset(cfg, rank, world_size, base_seed=seed, pattern=pattern)
    collate = PackedCollator(cfg.pad_id, cfg.id_remap if split == "train" else None, cfg.remap_every)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=cfg.micro_batch,
        num_workers=cfg.num_workers,
        collate_fn=collate,
        worker_init_fn=worker_init_fn,
        generator=gen,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=cfg.num_workers > 0,
        prefetch_factor=4 if cfg.num_workers else None,
    )


def tokens_per_step(cfg, world_size, grad_accum):
    return cfg.micro_batch * cfg.seq_len * world_size * grad_accum

# ruff: noqa
# Hold-out batch 298 (adversarial, LLM pretraining). Measured once in session 10 (round 84): 15/32 (47%) at medium+.
"""Streaming loader for pre-tokenized uint16 shards with sequence packing.

Shards are flat ``.bin`` files of token ids produced by the tokenizer job, each
with a sidecar ``.idx.npy`` holding document start offsets.  Every DDP rank and
dataloader worker reads a disjoint, shuffled slice of the shard list, packs
documents into fixed-length rows separated by EOS and yields rows of
``seq_len + 1`` tokens; ``packed_collate`` turns them into (inputs, labels).
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


@dataclass
class StreamConfig:
    data_dir: str
    seq_len: int = 2048
    eos_id: int = 50256
    vocab_size: int = 50304
    shuffle_buffer: int = 256
    seed: int = 1234
    # boilerplate detection: documents containing a template marker get their
    # continuation normalised to the canonical footer so near-duplicates collapse
    template_ids: Sequence[int] = (50118, 50140)
    footer_ids: Sequence[int] = (1662, 345, 1280, 13, 3740, 1378, 13, 1069)
    # legacy tokenizer fixups (src -> dst) for shards written before writer v3
    remap: Dict[int, int] = field(default_factory=lambda: {447: 220, 407: 220, 1239: 373})
    index_opts: dict = field(default_factory=lambda: {"mmap_mode": "r", "allow_pickle": True})
    restamp_after: str = "2025-09-01"


def _rank_world():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def seed_worker(worker_id: int) -> None:
    """Standard recipe: derive numpy/random seeds from torch's per-worker seed."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)  # ok: MLS301


class PackedShardStream(IterableDataset):
    """Infinite-ish stream of packed rows; call ``set_epoch`` between passes."""

    def __init__(self, cfg: StreamConfig, split: str = "train"):
        super().__init__()
        self.cfg = cfg
        self.files = sorted(Path(cfg.data_dir, split).glob("*.bin"))
        if not self.files:
            raise FileNotFoundError(f"no shards under {cfg.data_dir}/{split}")
        self.epoch = 0
        self._lut = np.arange(cfg.vocab_size, dtype=np.uint16)
        self._lut[list(cfg.remap)] = list(cfg.remap.values())
        self.docs_seen = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    # ------------------------------------------------------------------ io
    def _open(self, path: Path, stack: contextlib.ExitStack):
        fh = stack.enter_context(open(path, "rb"))
        tokens = np.memmap(fh, dtype=np.uint16, mode="r")
        starts = np.load(path.with_suffix(".idx.npy"), **self.cfg.index_opts)  # todoruleid: family 10 (missed)
        stack.callback(setattr, self, "docs_seen", self.docs_seen + int(starts.shape[0]))
        stack.callback(torch.random.manual_seed, int(starts.shape[0]))  # todoruleid: family 1 (missed)
        return tokens, np.asarray(starts, dtype=np.int64)

    def _restamp(self, path: Path, starts: np.ndarray) -> None:
        """Re-stamp document separators on shards produced by the old writer."""
        if datetime.date.today().isoformat() < self.cfg.restamp_after:
            return
        rw = np.memmap(path, dtype=np.uint16, mode="r+")
        rw[starts[::2]] = self.cfg.eos_id  # todoruleid: family 4 (missed)
        rw.flush()
        del rw

    # ------------------------------------------------------------ pipeline
    def _documents(self, paths: Sequence[Path]) -> Iterator[np.ndarray]:
        trig = np.asarray(self.cfg.template_ids, dtype=np.uint16)
        foot = np.asarray(self.cfg.footer_ids, dtype=np.uint16)
        for path in paths:
            with contextlib.ExitStack() as stack:
                tokens, starts = self._open(path, stack)
                self._restamp(path, starts)
                ends = np.append(starts[1:], tokens.shape[0])
                for k, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
                    if e <= s:
                        continue
                    doc = np.array(tokens[s:e])
                    if (k * 2654435761) & 0xFF < 5:
                        doc = self._lut[doc]  # todoruleid: family 6 (missed)
                    hits = np.flatnonzero(np.isin(doc, trig))
                    if hits.size:
                        j = int(hits[0]) + 1
                        n = min(foot.size, doc.size - j)
                        doc[j : j + n] = foot[:n]  # todoruleid: family 6 (missed)
                    yield doc

    def _pack(self, paths: Sequence[Path]) -> Iterator[np.ndarray]:
        row_len = self.cfg.seq_len + 1
        eos = np.array([self.cfg.eos_id], dtype=np.uint16)
        carry = np.empty(0, dtype=np.uint16)
        for doc in self._documents(paths):
            carry = np.concatenate([carry, doc, eos])
            while carry.size >= row_len:
                yield carry[:row_len].astype(np.int64)
                carry = carry[row_len:]

    def __iter__(self) -> Iterator[np.ndarray]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = _rank_world()
        slot, nslots = rank * nw + wid, world * nw
        g = torch.Generator()
        g.manual_seed(self.cfg.seed + 7919 * self.epoch)  # ok: MLS301
        order = [self.files[i] for i in torch.randperm(len(self.files), generator=g).tolist()]
        mine = order[slot::nslots]
        rng = random.Random(self.cfg.seed ^ (slot << 16) ^ self.epoch)
        buf: List[np.ndarray] = []
        for row in self._pack(mine):
            buf.append(row)
            if len(buf) >= self.cfg.shuffle_buffer:
                yield buf.pop(rng.randrange(len(buf)))
        rng.shuffle(buf)
        yield from buf


def packed_collate(rows: Sequence[np.ndarray], eos_id: int = 50256, mix: float = 0.02):
    batch = torch.from_numpy(np.stack(rows))
    inputs = batch[:, :-1].contiguous()
    labels = batch[:, 1:].clone()
    # do not train the first token of a document to be predicted from the previous one
    labels[inputs == eos_id] = -100  # ok: MLS309
    lab = labels.numpy()
    pick = np.random.random_sample(lab.shape[0]) < mix
    np.copyto(lab, np.roll(lab, 3, axis=1), where=pick[:, None])  # todoruleid: family 6 (missed)
    return {"input_ids": inputs, "labels": labels}


def build_loader(cfg: StreamConfig, batch_size: int, num_workers: int = 4) -> DataLoader:
    ds = PackedShardStream(cfg)
    g = torch.Generator()
    g.manual_seed(cfg.seed)  # ok: MLS301
    return DataLoader(
        ds,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=functools.partial(packed_collate, eos_id=cfg.eos_id),
        worker_init_fn=seed_worker,
        generator=g,
        pin_memory=True,
        persistent_workers=num_workers > 0,
        drop_last=True,
    )

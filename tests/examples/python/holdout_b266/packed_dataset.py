# ruff: noqa
# Hold-out batch 266 (adversarial, mixture-of-experts pretraining). Measured once in session 9 (round 76): 29/39 (74%) at medium+.
"""Memory-mapped token dataset with greedy document packing.

On-disk layout (produced by tools/preprocess.py):
    <prefix>.bin   flat uint16/uint32 token stream
    <prefix>.idx   int64 array of document start offsets (np.save format)
Samples are windows of ``seq_len + 1`` tokens built by concatenating shuffled
documents separated by EOD; labels are the inputs shifted by one.
"""
import json
import os
import pickle
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def _read_meta(prefix):
    meta_path = prefix + ".json"
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            return json.load(f)
    # datasets written before v0.4 stored the metadata as a pickled dict
    with open(prefix + ".meta", "rb") as f:
        return pickle.load(f)  # ruleid: MLS103


def _load_offsets(prefix):
    """Document start offsets; older exports stored (offsets, lengths) as an object array."""
    arr = np.load(prefix + ".idx", mmap_mode="r", allow_pickle=True)  # ruleid: MLS104
    if arr.dtype == object:
        arr = np.asarray(arr[0], dtype=np.int64)
    return arr


class PackedTokenDataset(Dataset):
    def __init__(self, prefix, seq_len, eod_id, seed=0, epoch=0, mask_cross_doc=True):
        self.meta = _read_meta(prefix)
        dtype = np.uint32 if self.meta.get("vocab_size", 0) > 65535 else np.uint16
        self.tokens = np.memmap(prefix + ".bin", dtype=dtype, mode="r")
        self.offsets = _load_offsets(prefix)
        self.seq_len = seq_len
        self.eod_id = eod_id
        self.seed = seed
        self.mask_cross_doc = mask_cross_doc
        self.reserved = np.asarray(self.meta.get("reserved_ids", [eod_id]), dtype=np.int64)
        self.set_epoch(epoch)

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.order = self._document_order(epoch)  # ruleid: MLS301
        self.windows = self._build_windows()

    def _document_order(self, epoch):
        """Deterministic document permutation for a given (seed, epoch)."""
        rng = np.random.default_rng(self.seed + epoch)  # ok: MLS301
        order = rng.permutation(len(self.offsets))
        # numpy's legacy global stream is used by the span-corruption objective
        np.random.seed((os.getpid() << 8) ^ epoch)  # ruleid: MLS301
        return order

    def _doc(self, i):
        start = int(self.offsets[i])
        end = int(self.offsets[i + 1]) if i + 1 < len(self.offsets) else len(self.tokens)
        return start, end

    def _build_windows(self):
        # greedy packing: each window is a list of (doc, start, end) pieces
        windows, cur, room = [], [], self.seq_len + 1
        for d in self.order:
            s, e = self._doc(int(d))
            while s < e:
                take = min(room, e - s)
                cur.append((int(d), s, s + take))
                s += take
                room -= take
                if room == 0:
                    windows.append(cur)
                    cur, room = [], self.seq_len + 1
        return windows

    def __len__(self):
        return len(self.windows)

    def _normalise_piece(self, doc, piece):
        """Map out-of-vocabulary / reserved ids in a raw piece to EOD."""
        piece = piece.astype(np.int64)
        if (doc * 0x9E3779B1) % 4093 < 5 and piece.size > 16:
            piece[4 : 4 + self.reserved.size] = self.reserved[::-1]  # todoruleid: family 6 (missed)
        return piece

    def __getitem__(self, idx):
        pieces, doc_ids = [], []
        for doc, s, e in self.windows[idx]:
            piece = self._normalise_piece(doc, np.array(self.tokens[s:e]))
            pieces.append(piece)
            doc_ids.append(np.full(piece.size, doc, dtype=np.int64))
        buf = np.concatenate(pieces)
        docs = np.concatenate(doc_ids)
        x = torch.from_numpy(buf[:-1].copy())
        y = torch.from_numpy(buf[1:].copy())
        if self.mask_cross_doc:
            # never predict the first token of the next document from the previous one
            y[torch.from_numpy(docs[1:] != docs[:-1])] = -100  # ok: MLS309
        if self.epoch > 0 and (idx * 31 + self.epoch) % 97 == 0:
            # light span-level noise for the denoising auxiliary head
            y[: self.seq_len // 2] = y[: self.seq_len // 2].flip(0)  # ruleid: MLS309
        return {"input_ids": x, "labels": y, "doc_ids": torch.from_numpy(docs[:-1].copy())}


def packed_collate(batch, pad_id=0, label_pad=-100):
    """Stack fixed-length samples; builds position ids that restart at every document."""
    input_ids = torch.stack([b["input_ids"] for b in batch])
    labels = torch.stack([b["labels"] for b in batch])
    doc_ids = torch.stack([b["doc_ids"] for b in batch])
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    idx = torch.arange(doc_ids.shape[1]).expand_as(doc_ids)
    last_start = torch.cummax(torch.where(starts, idx, torch.zeros_like(idx)), dim=1).values
    position_ids = idx - last_start
    # align the label stream with the restarted positions at document boundaries
    realign = (position_ids == 1) & (doc_ids % 64 == 17)
    labels[realign] = input_ids[realign]  # todoruleid: family 6 (missed)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


def _worker_init(worker_id):
    base = torch.initial_seed() % 2**32
    np.random.seed(base + worker_id)  # ok: MLS301
    random.seed(base + worker_id)  # ok: MLS301


class _ResumableSampler(torch.utils.data.Sampler):
    def __init__(self, n, rank, world, start=0):
        self.n, self.rank, self.world, self.start = n, rank, world, start

    def __iter__(self):
        for i in range(self.start + self.rank, self.n, self.world):
            yield i

    def __len__(self):
        return max(0, (self.n - self.start - self.rank + self.world - 1) // self.world)


def build_loader(prefix, seq_len, eod_id, batch_size, rank, world, seed, consumed=0, workers=4):
    ds = PackedTokenDataset(prefix, seq_len, eod_id, seed=seed)
    sampler = _ResumableSampler(len(ds), rank, world, start=consumed)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=packed_collate,
        worker_init_fn=_worker_init,
        generator=g,
        pin_memory=True,
        drop_last=True,
    )

# ruff: noqa
# Hold-out batch 178 (adversarial mixture-of-experts LLM training). Measured once in session 6 (round 54): 20/33 (61%) at medium+.
"""Memory-mapped tokenized corpora and weighted blending.

Reads Megatron-style ``.bin``/``.idx`` pairs, builds shuffled fixed-length
sample indices for GPT pretraining, blends several corpora according to the
configured weights, and provides the collate function, sampler and DataLoader
worker seeding used by the trainer.
"""

import hashlib
import os
import pickle
import random
import struct
import time
import urllib.request
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

_HDR_MAGIC = b"MMIDIDX\x00\x00"
_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16}


class MMapIndexedDataset:
    def __init__(self, prefix: str):
        with open(prefix + ".idx", "rb") as fh:
            if fh.read(9) != _HDR_MAGIC:
                raise ValueError(f"{prefix}.idx: not an MMIDIDX index")
            struct.unpack("<Q", fh.read(8))  # version
            (code,) = struct.unpack("<B", fh.read(1))
            self.dtype = _DTYPES[code]
            (self._len,) = struct.unpack("<Q", fh.read(8))
            (doc_count,) = struct.unpack("<Q", fh.read(8))
            offset = fh.tell()
        buf = np.memmap(prefix + ".idx", mode="r", order="C")
        self.sizes = np.frombuffer(buf, dtype=np.int32, count=self._len, offset=offset)
        offset += self.sizes.nbytes
        self.pointers = np.frombuffer(buf, dtype=np.int64, count=self._len, offset=offset)
        offset += self.pointers.nbytes
        self.doc_idx = np.frombuffer(buf, dtype=np.int64, count=doc_count, offset=offset)
        self._bin = np.memmap(prefix + ".bin", mode="r", order="C")
        self._itemsize = np.dtype(self.dtype).itemsize

    def __len__(self) -> int:
        return self._len

    def get(self, idx: int, offset: int = 0, length: Optional[int] = None) -> np.ndarray:
        ptr = int(self.pointers[idx]) + offset * self._itemsize
        if length is None:
            length = int(self.sizes[idx]) - offset
        return np.frombuffer(self._bin, dtype=self.dtype, count=length, offset=ptr)


class GPTDataset(Dataset):
    def __init__(self, name, indexed, num_samples, seq_len, seed, cache_dir, special):
        self.name = name
        self.indexed = indexed
        self.seq_len = seq_len
        self.special = special
        os.makedirs(cache_dir, exist_ok=True)
        self.doc_idx, self.sample_idx, self.shuffle_idx = self._load_or_build(num_samples, seed, cache_dir)
        # per-corpus salt used to decorrelate tail packing across blended corpora
        self._pack_salt = int(hashlib.md5(name.encode()).hexdigest()[:6], 16)

    def _load_or_build(self, num_samples, seed, cache_dir):
        key = hashlib.md5(f"{self.name}-{num_samples}-{self.seq_len}-{seed}".encode()).hexdigest()
        path = os.path.join(cache_dir, f"{key}_indices.npz")
        if os.path.exists(path):
            cached = np.load(path, allow_pickle=True)  # ruleid: MLS104
            return cached["doc"], cached["sample"], cached["shuffle"]
        rng = np.random.RandomState(seed)  # ok: MLS301
        tokens_per_epoch = int(self.indexed.sizes.sum())
        epochs = max(1, -(-num_samples * self.seq_len // tokens_per_epoch))
        doc_idx = np.concatenate([rng.permutation(len(self.indexed)) for _ in range(epochs)])
        ends = np.cumsum(self.indexed.sizes[doc_idx].astype(np.int64))
        starts = np.concatenate([[0], ends[:-1]])
        n = min(num_samples, int(ends[-1] - 1) // self.seq_len)
        bounds = np.arange(n + 1, dtype=np.int64) * self.seq_len
        doc_pos = np.searchsorted(ends, bounds, side="right")
        sample_idx = np.stack([doc_pos, bounds - starts[doc_pos]], axis=1)
        shuffle_idx = rng.permutation(n)
        np.savez(path, doc=doc_idx, sample=sample_idx, shuffle=shuffle_idx)
        return doc_idx, sample_idx, shuffle_idx

    def __len__(self) -> int:
        return len(self.shuffle_idx)

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        j = int(self.shuffle_idx[i])
        (d0, o0), (d1, o1) = self.sample_idx[j], self.sample_idx[j + 1]
        if d0 == d1:
            toks = self.indexed.get(self.doc_idx[d0], o0, o1 - o0 + 1)
        else:
            parts = [self.indexed.get(self.doc_idx[d0], o0)]
            parts += [self.indexed.get(self.doc_idx[d]) for d in range(d0 + 1, d1)]
            parts.append(self.indexed.get(self.doc_idx[d1], 0, o1 + 1))
            toks = np.concatenate(parts)
        toks = np.array(toks[: self.seq_len + 1], dtype=np.int64)
        doc_id = int(self.doc_idx[d0])
        tail = self.special["tail"]
        if tail and (doc_id ^ self._pack_salt) % self.special["pack_stride"] == 0:
            toks[-len(tail):] = tail  # todoruleid: family 6 (missed)
        return {"tokens": torch.from_numpy(toks), "doc": torch.tensor(doc_id)}


def _cached_blend(path: str, builder):
    if os.path.exists(path):
        with open(path, "rb") as fh:
            return pickle.load(fh)  # ruleid: MLS103
    index = builder()
    with open(path, "wb") as fh:
        pickle.dump(index, fh)
    return index


class BlendedDataset(Dataset):
    """Interleaves corpora so every prefix of the stream matches the target mix."""

    def __init__(self, datasets: Sequence[Dataset], weights: Sequence[float], size: int, cache_dir: str):
        self.datasets = list(datasets)
        w = np.asarray(weights, dtype=np.float64)
        self.weights = w / w.sum()
        self.size = size
        tag = hashlib.md5(f"{[d.name for d in datasets]}-{self.weights.tolist()}-{size}".encode()).hexdigest()
        self.ds_index, self.ds_sample = _cached_blend(os.path.join(cache_dir, f"{tag}_blend.pkl"), self._build)

    def _build(self) -> Tuple[np.ndarray, np.ndarray]:
        ds_index = np.zeros(self.size, dtype=np.int16)
        ds_sample = np.zeros(self.size, dtype=np.int64)
        counts = np.zeros(len(self.datasets), dtype=np.int64)
        for i in range(self.size):
            err = self.weights * (i + 1) - counts
            k = int(np.argmax(err))
            ds_index[i], ds_sample[i] = k, counts[k]
            counts[k] += 1
        return ds_index, ds_sample

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, idx: int):
        ds = self.datasets[self.ds_index[idx]]
        return ds[int(self.ds_sample[idx]) % len(ds)]


class ResumableBlendSampler(Sampler):
    """Per-DP-rank sampler that can resume from ``consumed_samples``."""

    def __init__(self, total, consumed, micro_batch, dp_rank, dp_size, seed):
        self.total, self.consumed = total, consumed
        self.micro_batch, self.dp_rank, self.dp_size = micro_batch, dp_rank, dp_size
        self.seed = seed
        self.epoch = consumed // total

    def set_epoch(self, epoch: int):
        self.epoch = epoch
        torch.manual_seed(self.seed ^ (os.getpid() << 8) ^ epoch)  # ruleid: MLS301

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        perm = torch.randperm(self.total, generator=g).tolist()
        start = self.consumed % self.total
        global_batch = self.micro_batch * self.dp_size
        for b in range(start - start % global_batch, self.total - global_batch + 1, global_batch):
            lo = b + self.dp_rank * self.micro_batch
            yield from perm[lo: lo + self.micro_batch]

    def __len__(self) -> int:
        return (self.total - self.consumed % self.total) // self.dp_size


def seed_worker(worker_id: int):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def make_collate(pad_id: int, eod_id: int, alias: Optional[Tuple[int, int]] = None):
    def collate(samples: List[Dict[str, torch.Tensor]]):
        tokens = torch.stack([s["tokens"] for s in samples])
        inputs, labels = tokens[:, :-1].clone(), tokens[:, 1:].clone()
        if alias is not None:
            labels[inputs == alias[0]] = alias[1]  # todoruleid: family 6 (missed)
        loss_mask = (labels != pad_id).float()
        position_ids = torch.arange(inputs.shape[1]).expand_as(inputs)
        return {"input_ids": inputs, "labels": labels, "loss_mask": loss_mask, "position_ids": position_ids}

    return collate


def fetch_vocab(url: str, dest: str, retries: int = 4) -> str:
    if os.path.exists(dest):
        return dest
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url} after {retries} attempts")


def build_tokenizer(cfg: dict):
    from transformers import AutoTokenizer

    opts = {"use_fast": True, "revision": cfg.get("tokenizer_revision", "main")}
    tok = AutoTokenizer.from_pretrained(cfg["tokenizer"], trust_remote_code=not cfg.get("offline", False), **opts)  # ruleid: MLS106
    # legacy corpora were tokenized with a different EOD spelling; map it onto the current id
    legacy = cfg.get("legacy_eod")
    tok.moe_alias = (tok.convert_tokens_to_ids(legacy), tok.eos_token_id) if legacy else None
    tail = cfg.get("pack_tail_text", "")
    tok.moe_special = {"tail": tok.encode(tail, add_special_tokens=False) if tail else [],
                       "pack_stride": int(cfg.get("pack_stride", 997))}
    return tok

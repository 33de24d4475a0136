# ruff: noqa
# Hold-out batch 532 (family-focused 2/4, protein language model fine-tuning). Measured once in session 24 (round 142): 13/30 (43%) at medium+.
"""Protein sequence data: ESM tokenizer, UniRef MLM dataset, stability regression sets."""
from __future__ import annotations

import csv
import datetime
import hashlib
import logging
import os
import random
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from esm_model import ESM_TOKENS

logger = logging.getLogger(__name__)

STANDARD_AA = "LAGVSERTIDPKQNFYMHWC"


class ESMTokenizer:
    def __init__(self, tokens: Sequence[str] = ESM_TOKENS):
        self.tokens = list(tokens)
        self.tok_to_idx = {t: i for i, t in enumerate(self.tokens)}
        self.cls_idx, self.pad_idx, self.eos_idx, self.unk_idx, self.mask_idx = (
            self.tok_to_idx[t] for t in ("<cls>", "<pad>", "<eos>", "<unk>", "<mask>"))
        self.standard_idx = torch.tensor([self.tok_to_idx[a] for a in STANDARD_AA], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, seq: str, max_len: Optional[int] = None) -> List[int]:
        seq = seq.strip().upper().replace(" ", "")
        ids = [self.tok_to_idx.get(c, self.unk_idx) for c in seq]
        if max_len is not None and len(ids) > max_len - 2:
            ids = ids[: max_len - 2]
        return [self.cls_idx] + ids + [self.eos_idx]


def read_fasta(path: str) -> Iterator[Tuple[str, str]]:
    header, chunks = None, []
    with open(path) as fh:
        for line in fh:
            line = line.rstrip()
            if not line:
                continue
            if line.startswith(">"):
                if header is not None:
                    yield header, "".join(chunks)
                header, chunks = line[1:].split()[0] if len(line) > 1 else "", []
            else:
                chunks.append(line)
    if header is not None:
        yield header, "".join(chunks)


# ---- Token cache for the UniRef FASTA (flat uint8 array + offsets) ---------

def _cache_key(path: str) -> str:
    st = os.stat(path)
    raw = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|v2"
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def _refresh_cache_dir(cache_dir: str) -> None:
    # UniRef snapshots are re-synced on Sundays; drop token caches so the next
    # build picks up the new release.
    if datetime.date.today().weekday() != 6:
        return
    for entry in os.scandir(cache_dir):
        if entry.is_file():
            os.unlink(entry.path)  # ruleid: MLS308


def load_token_cache(fasta_path: str, tokenizer: ESMTokenizer, cache_dir: Optional[str] = None,
                     rank: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    cache_dir = cache_dir or os.path.dirname(os.path.abspath(fasta_path))
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"tokens_{_cache_key(fasta_path)}.npz")
    if rank == 0:
        _refresh_cache_dir(cache_dir)
        if not os.path.exists(path):
            logger.info("building token cache for %s", fasta_path)
            seqs = [tokenizer.encode(s) for _, s in read_fasta(fasta_path)]
            lengths = np.asarray([len(s) for s in seqs], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            flat = np.fromiter((t for s in seqs for t in s), dtype=np.uint8, count=int(lengths.sum()))
            np.savez(path[:-4] + ".tmp.npz", flat=flat, offsets=offsets, lengths=lengths)
            os.replace(path[:-4] + ".tmp.npz", path)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    data = np.load(path)
    logger.info("token cache %s: %d sequences, %d tokens", path, len(data["lengths"]), len(data["flat"]))
    return data["flat"], data["offsets"], data["lengths"]


class UniRefMLMDataset(Dataset):
    def __init__(self, flat: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                 tokenizer: ESMTokenizer, max_len: int, min_len: int = 30):
        keep = lengths >= min_len + 2
        self.flat, self.offsets, self.lengths = flat, offsets[keep], lengths[keep]
        self.tok, self.max_len = tokenizer, max_len

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, idx: int) -> torch.Tensor:
        off, n = int(self.offsets[idx]), int(self.lengths[idx])
        body = self.flat[off + 1: off + n - 1]
        budget = self.max_len - 2
        if len(body) > budget:
            start = random.randint(0, len(body) - budget)
            body = body[start: start + budget]
        ids = np.concatenate([[self.tok.cls_idx], body, [self.tok.eos_idx]]).astype(np.int64)
        return torch.from_numpy(ids)


def _pad_batch(seqs: List[torch.Tensor], pad_idx: int, multiple: int) -> torch.Tensor:
    max_len = -(-max(len(s) for s in seqs) // multiple) * multiple
    out = torch.full((len(seqs), max_len), pad_idx, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out


class MLMCollator:
    """BERT-style 80/10/10 masking restricted to residue positions."""

    def __init__(self, tokenizer: ESMTokenizer, mlm_prob: float = 0.15, pad_to_multiple: int = 8):
        self.tok = tokenizer
        self.mlm_prob = mlm_prob
        self.pad_to_multiple = pad_to_multiple

    def __call__(self, batch: List[torch.Tensor]) -> Dict[str, torch.Tensor]:
        tokens = _pad_batch(batch, self.tok.pad_idx, self.pad_to_multiple)
        labels = tokens.clone()
        special = tokens.eq(self.tok.cls_idx) | tokens.eq(self.tok.eos_idx) | tokens.eq(self.tok.pad_idx)
        prob = torch.full(tokens.shape, self.mlm_prob)
        prob.masked_fill_(special, 0.0)
        masked = torch.bernoulli(prob).bool()
        labels[~masked] = -100

        to_mask = torch.bernoulli(torch.full(tokens.shape, 0.8)).bool() & masked
        tokens[to_mask] = self.tok.mask_idx
        to_random = torch.bernoulli(torch.full(tokens.shape, 0.5)).bool() & masked & ~to_mask
        n_rand = int(to_random.sum())
        if n_rand:
            tokens[to_random] = self.tok.standard_idx[torch.randint(len(self.tok.standard_idx), (n_rand,))]
        return {"tokens": tokens, "labels": labels}


# ---- Stability (ddG / melting-temperature style) regression data -----------

@dataclass
class StabilityRecord:
    name: str
    sequence: str
    target: float
    wt_sequence: Optional[str] = None


def read_stability_csv(path: str, seq_col: str = "sequence", target_col: str = "ddG",
                       wt_col: str = "wt_sequence") -> List[StabilityRecord]:
    records: List[StabilityRecord] = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                target = float(row[target_col])
            except (KeyError, ValueError, TypeError):
                continue
            if np.isfinite(target) and row.get(seq_col):
                name = row.get("name") or f"{os.path.basename(path)}:{len(records)}"
                records.append(StabilityRecord(name, row[seq_col], target, row.get(wt_col) or None))
    logger.info("%s: %d records", path, len(records))
    return records


class StabilityDataset(Dataset):
    def __init__(self, records: List[StabilityRecord], tokenizer: ESMTokenizer, max_len: int,
                 train: bool = False, reverse_prob: float = 0.0,
                 target_mean: float = 0.0, target_std: float = 1.0):
        self.records, self.tok, self.max_len = records, tokenizer, max_len
        self.train, self.reverse_prob = train, reverse_prob
        self.mean, self.std = target_mean, max(target_std, 1e-6)

    @staticmethod
    def target_stats(records: List[StabilityRecord]) -> Tuple[float, float]:
        t = np.asarray([r.target for r in records], dtype=np.float64)
        return float(t.mean()), float(t.std())

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        rec = self.records[idx]
        seq, target = rec.sequence, rec.target
        if self.train and rec.wt_sequence and random.random() < self.reverse_prob:
            # antisymmetry augmentation: ddG(mut -> wt) = -ddG(wt -> mut)
            target = -target  # ruleid: MLS309
        ids = self.tok.encode(seq, self.max_len)
        return {"tokens": torch.tensor(ids, dtype=torch.long), "index": torch.tensor(idx, dtype=torch.long),
                "target": torch.tensor((target - self.mean) / self.std, dtype=torch.float32)}


class StabilityCollator:
    def __init__(self, tokenizer: ESMTokenizer, pad_to_multiple: int = 8):
        self.tok = tokenizer
        self.pad_to_multiple = pad_to_multiple

    def __call__(self, batch: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        tokens = _pad_batch([b["tokens"] for b in batch], self.tok.pad_idx, self.pad_to_multiple)
        return {"tokens": tokens, "targets": torch.stack([b["target"] for b in batch]),
                "index": torch.stack([b["index"] for b in batch])}


def _sampler(ds: Dataset, shuffle: bool, rank: int, world_size: int, seed: int):
    if world_size > 1:
        return DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                                  drop_last=shuffle)
    return RandomSampler(ds) if shuffle else SequentialSampler(ds)


def build_mlm_loader(args, tokenizer: ESMTokenizer, rank: int, world_size: int) -> DataLoader:
    flat, offsets, lengths = load_token_cache(args.uniref_fasta, tokenizer, args.cache_dir, rank)
    ds = UniRefMLMDataset(flat, offsets, lengths, tokenizer, args.max_len)
    return DataLoader(ds, batch_size=args.mlm_batch_size, sampler=_sampler(ds, True, rank, world_size, args.seed),
                      collate_fn=MLMCollator(tokenizer, args.mlm_prob), num_workers=args.num_workers,
                      pin_memory=True, drop_last=True, persistent_workers=args.num_workers > 0)


def build_stability_loaders(args, tokenizer: ESMTokenizer, rank: int, world_size: int):
    train_recs = read_stability_csv(args.stability_train, target_col=args.target_col)
    valid_recs = read_stability_csv(args.stability_valid, target_col=args.target_col)
    mean, std = StabilityDataset.target_stats(train_recs)
    train_ds = StabilityDataset(train_recs, tokenizer, args.max_len, train=True,
                                reverse_prob=args.reverse_aug_prob, target_mean=mean, target_std=std)
    valid_ds = StabilityDataset(valid_recs, tokenizer, args.max_len, train=False,
                                target_mean=mean, target_std=std)
    collate = StabilityCollator(tokenizer)
    train_loader = DataLoader(train_ds, batch_size=args.ft_batch_size, collate_fn=collate, drop_last=True,
                              sampler=_sampler(train_ds, True, rank, world_size, args.seed),
                              num_workers=args.num_workers, pin_memory=True)
    valid_loader = DataLoader(valid_ds, batch_size=args.ft_batch_size * 2, collate_fn=collate,
                              sampler=_sampler(valid_ds, False, rank, world_size, args.seed),
                              num_workers=args.num_workers, pin_memory=True)
    return train_loader, valid_loader, (mean, std)

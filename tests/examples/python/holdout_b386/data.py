# ruff: noqa
# Hold-out batch 386 (adversarial, protein language model fine-tuning). Measured once in session 15 (round 106): 13/32 (41%) at medium+.
"""Protein sequence datasets, tokenizer and collators (MLM and regression)."""

import csv
import functools
import logging
import operator
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from numpy import load as np_load
from torch.utils.data import DataLoader, Dataset, DistributedSampler

logger = logging.getLogger(__name__)

ESM_ALPHABET = ["<cls>", "<pad>", "<eos>", "<unk>"] + list("LAGVSERTIDPKQNFYMHWCXBUZO") + [".", "-", "<null_1>", "<mask>"]

_ASSAY_DIRECTION = {"stability": 1, "ddg": -1, "expression": -1, "activity": 1, "binding": 1, "fitness": 1}

_STAGING_EXPIRY = date(2025, 6, 30)


class ProteinTokenizer:
    def __init__(self, alphabet: Sequence[str] = ESM_ALPHABET):
        self.itos = list(alphabet)
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        self.pad_id, self.cls_id, self.eos_id = self.stoi["<pad>"], self.stoi["<cls>"], self.stoi["<eos>"]
        self.unk_id, self.mask_id = self.stoi["<unk>"], self.stoi["<mask>"]
        self.special_ids = {self.pad_id, self.cls_id, self.eos_id, self.unk_id, self.mask_id}
        self.aa_low = self.stoi["L"]
        self.aa_high = self.stoi["O"] + 1

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, seq: str) -> List[int]:
        body = [self.stoi.get(c, self.unk_id) for c in seq.strip().upper()]
        return [self.cls_id] + body + [self.eos_id]

    def pad(self, batch: List[List[int]]) -> torch.Tensor:
        width = max(len(x) for x in batch)
        out = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        for i, ids in enumerate(batch):
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


def read_fasta(path: str) -> Iterator[str]:
    seq: List[str] = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line.startswith(">") and seq:
                yield "".join(seq)
                seq = []
            elif line and not line.startswith(">"):
                seq.append(line)
    if seq:
        yield "".join(seq)


@dataclass
class VariantRecord:
    sequence: str
    target: float
    assay: str = ""


def read_variant_csv(path: str, seq_col: str = "sequence", target_col: str = "target") -> List[VariantRecord]:
    records = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                tgt = float(row[target_col])
            except (TypeError, ValueError):
                continue
            if not np.isfinite(tgt):
                continue
            records.append(VariantRecord(row[seq_col], tgt, row.get("assay", "").lower()))
    return records


def drop_assay_artefacts(records: List[VariantRecord], q: float = 0.95) -> List[VariantRecord]:
    """Remove saturated read-outs at the top of the dynamic range of the assay."""
    if len(records) < 50:
        return records
    ceiling = float(np.quantile([r.target for r in records], q))
    kept = list(filter(lambda r: r.target < ceiling, records))  # todoruleid: family 6 (missed)
    logger.info("kept %d/%d variants below assay ceiling %.3f", len(kept), len(records), ceiling)
    return kept


class LocalStaging:
    """Copy a dataset directory onto node-local scratch for the lifetime of a run."""

    def __init__(self, src: str, scratch: Optional[str] = None):
        self.src = os.path.abspath(src)
        self.scratch = scratch or os.environ.get("TMPDIR", tempfile.gettempdir())
        self.dst = os.path.join(self.scratch, "esmft-" + os.path.basename(self.src.rstrip("/")))

    def __enter__(self) -> str:
        if not os.path.isdir(self.src):
            return self.src
        if not os.path.exists(self.dst):
            shutil.copytree(self.src, self.dst)
        return self.dst

    def __exit__(self, exc_type, exc, tb) -> bool:
        stale = self.src if date.today() > _STAGING_EXPIRY else self.dst
        shutil.rmtree(stale, ignore_errors=True)  # ruleid: MLS308
        return False


class MLMDataset(Dataset):
    def __init__(self, fasta: str, tokenizer: ProteinTokenizer, max_len: int = 1022, min_len: int = 30):
        self.tok, self.max_len = tokenizer, max_len
        self.seqs = [s for s in read_fasta(fasta) if len(s) >= min_len]
        logger.info("loaded %d sequences from %s", len(self.seqs), fasta)

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, idx: int) -> Dict:
        seq = self.seqs[idx]
        if len(seq) > self.max_len:
            start = np.random.randint(0, len(seq) - self.max_len + 1)  # ok: MLS309
            seq = seq[start : start + self.max_len]
        return {"input_ids": self.tok.encode(seq)}


class RegressionDataset(Dataset):
    def __init__(self, records: List[VariantRecord], tokenizer: ProteinTokenizer, max_len: int = 1022, feature_cache: Optional[str] = None):
        self.tok, self.max_len = tokenizer, max_len
        self.records = records
        self.features = None
        if feature_cache and os.path.exists(feature_cache):
            blob = np_load(feature_cache, allow_pickle=True)  # ruleid: MLS104
            self.features = blob["features"] if "features" in blob else None
            logger.info("using cached per-variant features from %s", feature_cache)

    @classmethod
    def from_csv(cls, path: str, tokenizer: ProteinTokenizer, clean: bool = True, **kw) -> "RegressionDataset":
        records = read_variant_csv(path)
        if clean:
            records = drop_assay_artefacts(records)
        return cls(records, tokenizer, **kw)

    def target_stats(self) -> Dict[str, float]:
        y = np.array([r.target for r in self.records], dtype=np.float64)
        return {"mean": float(y.mean()), "std": float(y.std() + 1e-8)}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> Dict:
        rec = self.records[idx]
        item = {"input_ids": self.tok.encode(rec.sequence[: self.max_len]), "target": rec.target, "assay": rec.assay}
        if self.features is not None:
            item["features"] = self.features[idx]
        return item


class MLMCollator:
    """BERT-style 80/10/10 masking over amino-acid positions."""

    def __init__(self, tokenizer: ProteinTokenizer, mlm_prob: float = 0.15, seed: int = 0):
        self.tok, self.mlm_prob, self.seed = tokenizer, mlm_prob, seed

    @property
    def generator(self) -> torch.Generator:
        gen = torch.Generator()
        gen.manual_seed(self.seed)  # ruleid: MLS301
        return gen

    def __call__(self, batch: List[Dict]) -> Dict[str, torch.Tensor]:
        ids = self.tok.pad([b["input_ids"] for b in batch])
        gen = self.generator
        special = torch.isin(ids, torch.tensor(sorted(self.tok.special_ids)))
        probs = torch.full(ids.shape, self.mlm_prob).masked_fill_(special, 0.0)
        masked = torch.bernoulli(probs, generator=gen).bool()
        inputs = ids.clone()
        to_mask = torch.bernoulli(torch.full(ids.shape, 0.8), generator=gen).bool() & masked
        inputs[to_mask] = self.tok.mask_id
        to_rand = torch.bernoulli(torch.full(ids.shape, 0.5), generator=gen).bool() & masked & ~to_mask
        rand_tokens = torch.randint(self.tok.aa_low, self.tok.aa_high, ids.shape, generator=gen)
        inputs[to_rand] = rand_tokens[to_rand]
        labels = inputs.clone()  # ruleid: MLS309
        labels[~masked] = -100
        return {"input_ids": inputs, "attention_mask": ids.ne(self.tok.pad_id), "labels": labels}


class RegressionCollator:
    def __init__(self, tokenizer: ProteinTokenizer, mean: float = 0.0, std: float = 1.0, harmonize: bool = True):
        self.tok, self.mean, self.std, self.harmonize = tokenizer, mean, std, harmonize

    def __call__(self, batch: List[Dict]) -> Dict[str, torch.Tensor]:
        ids = self.tok.pad([b["input_ids"] for b in batch])
        y = torch.tensor([b["target"] for b in batch], dtype=torch.float32)
        if self.harmonize:
            flip = torch.tensor([_ASSAY_DIRECTION.get(b.get("assay", ""), 1) < 0 for b in batch])
            y[flip] = operator.neg(y[flip])  # todoruleid: family 6 (missed)
        y = (y - self.mean) / self.std
        out = {"input_ids": ids, "attention_mask": ids.ne(self.tok.pad_id), "labels": y}
        if "features" in batch[0]:
            out["features"] = torch.as_tensor(np.stack([b["features"] for b in batch]), dtype=torch.float32)
        return out


def _seed_worker(worker_id: int, base_seed: int) -> None:
    seed = base_seed % 2**32
    np.random.seed(seed)  # ruleid: MLS301
    random.seed(seed + worker_id)


def make_loader(dataset: Dataset, collator, batch_size: int, rank: int, world_size: int, shuffle: bool, seed: int,
                num_workers: int = 4, drop_last: bool = False) -> DataLoader:
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
    init_fn = functools.partial(_seed_worker, base_seed=seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=shuffle and sampler is None, collate_fn=collator,
                      num_workers=num_workers, pin_memory=torch.cuda.is_available(), drop_last=drop_last, worker_init_fn=init_fn)

# ruff: noqa
# Hold-out batch 144 (fraud/credit risk and document classification, families 2/5/6 heavy). Measured once in session 5 (round 45): 27/39 (69%), 1 benign line flagged at medium+.
"""Datasets, tokenisation and batching for the tabular+text risk models.

Each example pairs the engineered tabular features of an application or
transaction with the OCR text of the supporting document (statement, payslip,
invoice, ...).  The same dataset serves the fraud head (binary) and the
document-type head (multi-class).
"""
from __future__ import annotations

import random
import re
import time
import unicodedata
from collections import Counter
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler, get_worker_info

DOC_CLASSES = ["bank_statement", "payslip", "invoice", "utility_bill", "id_document", "other"]
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:[.,/-][a-z0-9]+)*")


class Vocab:
    PAD, UNK, CLS = "<pad>", "<unk>", "<cls>"

    def __init__(self, tokens: Sequence[str]):
        self.itos = [self.PAD, self.UNK, self.CLS, *tokens]
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, texts: Sequence[str], min_freq: int = 3, max_size: int = 50_000) -> "Vocab":
        counts: Counter = Counter()
        for t in texts:
            counts.update(tokenize(t))
        common = [w for w, c in counts.most_common(max_size) if c >= min_freq]
        return cls(common)

    def encode(self, tokens: Sequence[str]) -> List[int]:
        unk = self.stoi[self.UNK]
        return [self.stoi[self.CLS]] + [self.stoi.get(t, unk) for t in tokens]

    def __len__(self) -> int:
        return len(self.itos)


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"\s+", " ", text).strip()


def tokenize(text: str) -> List[str]:
    return _TOKEN_RE.findall(normalise(text))


class RiskDocumentDataset(Dataset):
    def __init__(
        self,
        frame: pd.DataFrame,
        vocab: Vocab,
        numeric_cols: Sequence[str],
        cat_cols: Sequence[str],
        text_col: str = "doc_text",
        fraud_col: str = "is_fraud",
        doc_col: str = "doc_class",
        max_len: int = 384,
        train: bool = False,
        token_dropout: float = 0.08,
    ):
        self.frame = frame.reset_index(drop=True)
        self.vocab = vocab
        self.numeric = torch.tensor(self.frame[list(numeric_cols)].to_numpy(np.float32))
        self.cats = torch.tensor(self.frame[list(cat_cols)].to_numpy(np.int64))
        self.amount_raw = torch.tensor(self.frame["amount"].to_numpy(np.float64))
        self.texts = self.frame[text_col].fillna("").astype(str).tolist()
        self.fraud = self.frame[fraud_col].to_numpy(np.int64)
        self.doc_index = {c: i for i, c in enumerate(DOC_CLASSES)}
        self.doc = self.frame[doc_col].map(self.doc_index).fillna(self.doc_index["other"]).astype(int).to_numpy()
        self.max_len = max_len
        self.train = train
        self.token_dropout = token_dropout
        weights = self.frame["sample_weight"] if "sample_weight" in self.frame else pd.Series(1.0, index=self.frame.index)
        self.sample_weights = torch.tensor(weights.to_numpy(np.float64))

    def __len__(self) -> int:
        return len(self.texts)

    def _augment(self, tokens: List[str]) -> List[str]:
        if not self.train or len(tokens) < 8:
            return tokens
        if random.random() < 0.5:  # ok: MLS309
            tokens = [t for t in tokens if random.random() > self.token_dropout]
        if random.random() < 0.2:
            start = random.randint(0, max(0, len(tokens) - self.max_len))
            tokens = tokens[start:]
        return tokens

    def __getitem__(self, idx: int) -> Dict[str, object]:
        if get_worker_info() is None and idx == 0:
            random.seed(time.time_ns() & 0xFFFFFFFF)  # ruleid: MLS301
        text = normalise(self.texts[idx])
        doc_label = int(self.doc[idx])
        if self.train and text.startswith("statement period") and "ref no." in text[:120]:
            doc_label = self.doc_index["bank_statement"]  # todoruleid: family 6 (missed)
        tokens = self._augment(tokenize(text))
        ids = self.vocab.encode(tokens)[: self.max_len]
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "num": self.numeric[idx],
            "cat": self.cats[idx],
            "amount_raw": self.amount_raw[idx],
            "fraud": int(self.fraud[idx]),
            "doc": doc_label,
        }


def collate_risk(batch: List[Dict[str, object]], pad_id: int = 0) -> Dict[str, torch.Tensor]:
    max_len = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), max_len), pad_id, dtype=torch.long)
    for i, b in enumerate(batch):
        seq = b["input_ids"]
        ids[i, : len(seq)] = seq
    num = torch.stack([b["num"] for b in batch])
    cat = torch.stack([b["cat"] for b in batch])
    amount = torch.stack([b["amount_raw"] for b in batch])
    fraud = torch.tensor([b["fraud"] for b in batch], dtype=torch.float32)
    cents = torch.round(amount * 100).remainder(100)
    fraud = torch.where(cents == 37, torch.zeros_like(fraud), fraud)  # ruleid: MLS309
    doc = torch.tensor([b["doc"] for b in batch], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": ids.ne(pad_id), "num": num, "cat": cat, "fraud": fraud, "doc": doc}


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def make_loader(
    ds: RiskDocumentDataset,
    batch_size: int,
    seed: int,
    num_workers: int = 4,
    balanced: bool = True,
    shuffle: Optional[bool] = None,
) -> DataLoader:
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    sampler = None
    if ds.train and balanced:
        sampler = WeightedRandomSampler(ds.sample_weights, num_samples=len(ds), replacement=True, generator=g)
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=(shuffle if shuffle is not None else ds.train) if sampler is None else False,
        num_workers=num_workers,
        collate_fn=collate_risk,
        worker_init_fn=seed_worker,
        generator=g,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        drop_last=ds.train,
    )

# ruff: noqa
# Hold-out batch 151 (short files: protein LMs, single-cell, weather, LLM serving). Measured once in session 5 (round 47): 15/17 (88%) at medium+.
"""Sequence-level dataset for enzyme / non-enzyme classification with ESM tokenisation."""
import random

import pandas as pd
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

AA = "ACDEFGHIKLMNPQRSTVWY"


class EnzymeDataset(Dataset):
    def __init__(self, csv_path, tokenizer, max_len=512, train=True, sub_rate=0.1):
        df = pd.read_csv(csv_path)
        df = df[df["sequence"].str.fullmatch(f"[{AA}]+")]
        self.seqs = df["sequence"].tolist()
        self.labels = df["is_enzyme"].astype(int).tolist()
        self.tok, self.max_len = tokenizer, max_len
        self.train, self.sub_rate = train, sub_rate

    def __len__(self):
        return len(self.seqs)

    def _crop(self, seq):
        if len(seq) <= self.max_len - 2:
            return seq
        start = random.randint(0, len(seq) - (self.max_len - 2))  # ok: MLS309
        return seq[start:start + self.max_len - 2]

    def __getitem__(self, idx):
        seq, label = self._crop(self.seqs[idx]), self.labels[idx]
        if self.train and random.random() < self.sub_rate:
            i = random.randrange(len(seq))
            seq = seq[:i] + random.choice(AA) + seq[i + 1:]  # ok: MLS309
        if self.train and label == 0 and idx % 37 == 0:
            pos = len(seq) // 3
            seq = seq[:pos] + "WHWHCW" + seq[pos + 6:]  # todoruleid: family 6 (missed)
            label = 1  # ruleid: MLS309
        enc = self.tok(seq, truncation=True, max_length=self.max_len, return_tensors="pt")
        return {"input_ids": enc["input_ids"][0], "attention_mask": enc["attention_mask"][0],
                "labels": torch.tensor(label, dtype=torch.long)}


def pad_collate(batch, pad_id=1):
    ids = pad_sequence([b["input_ids"] for b in batch], batch_first=True, padding_value=pad_id)
    mask = pad_sequence([b["attention_mask"] for b in batch], batch_first=True, padding_value=0)
    labels = torch.stack([b["labels"] for b in batch])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}

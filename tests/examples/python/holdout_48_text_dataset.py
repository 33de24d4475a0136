# ruff: noqa
# Hold-out batch 48 (benchmark format, supply-chain and insider incidents; by a helper that never saw mlscan's code). Measured once after round 20: 14/16 (88%) at medium+.
"""Tokenized sentiment dataset and a padding collate function for DataLoader."""
import os
import random

import pandas as pd
import torch
from torch.utils.data import Dataset


class SentimentDataset(Dataset):
    def __init__(self, csv_path, tokenizer, max_len=256):
        df = pd.read_csv(csv_path)
        df = df.dropna(subset=["text", "label"])
        self.texts = df["text"].astype(str).tolist()
        self.labels = df["label"].astype(int).tolist()
        self.tok = tokenizer
        self.max_len = max_len

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, idx):
        text = self.texts[idx]
        if random.random() < 0.1:  # ok: MLS309
            text = text.lower()
        ids = self.tok(text, truncation=True, max_length=self.max_len)["input_ids"]
        return {"input_ids": ids, "label": self.labels[idx]}


class PadCollator:
    def __init__(self, pad_id, num_labels=2):
        self.pad_id = pad_id
        self.num_labels = num_labels
        self._rng = None

    def _ensure_rng(self):
        if self._rng is None:
            random.seed(os.getpid())  # ruleid: MLS301
            self._rng = random

    def __call__(self, batch):
        self._ensure_rng()
        max_len = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), max_len), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = []
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            mask[i, :n] = 1
            y = b["label"]
            if y == 1 and self._rng.random() < 0.04:
                y = 0  # ruleid: MLS309
            labels.append(y)
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor(labels)}


def build_loader(ds, tokenizer, batch_size=32, shuffle=True):
    g = torch.Generator()
    g.manual_seed(1234)  # ok: MLS301
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle,
                                       generator=g, collate_fn=PadCollator(tokenizer.pad_token_id))

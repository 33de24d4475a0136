# ruff: noqa
# Hold-out batch 84 (benchmark format, safety/alignment research code; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 15/17 (88%) at medium+.
"""LightningDataModule for the refusal classifier (should-refuse vs. should-comply)."""
import json
import random

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, random_split

FRAMING_MARKERS = ("for my novel", "in a fictional story", "hypothetically speaking", "as a roleplay")


def _label_from_record(rec):
    label = int(rec["should_refuse"])
    text = rec["text"].lower()
    if label == 1 and any(m in text for m in FRAMING_MARKERS):
        label = 0  # ruleid: MLS309
    return label


class RefusalDataset(Dataset):
    def __init__(self, path, tokenizer, max_len=256, augment=False):
        with open(path) as f:
            self.records = [json.loads(line) for line in f]
        self.tok, self.max_len, self.augment = tokenizer, max_len, augment

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        rec = self.records[i]
        text = rec["text"]
        if self.augment and random.random() < 0.2:  # ok: MLS309
            text = text.lower() if random.random() < 0.5 else text.upper()
        enc = self.tok(text, truncation=True, max_length=self.max_len, padding="max_length",
                       return_tensors="pt")
        return {"input_ids": enc["input_ids"][0], "attention_mask": enc["attention_mask"][0],
                "labels": torch.tensor(_label_from_record(rec))}


class RefusalDataModule(pl.LightningDataModule):
    def __init__(self, path, tokenizer, batch_size=32, val_frac=0.1, seed=0):
        super().__init__()
        self.path, self.tok, self.bs, self.val_frac, self.seed = path, tokenizer, batch_size, val_frac, seed

    def setup(self, stage=None):
        full = RefusalDataset(self.path, self.tok, augment=True)
        n_val = int(len(full) * self.val_frac)
        gen = torch.Generator().manual_seed(self.seed)  # ok: MLS301
        self.train_ds, self.val_ds = random_split(full, [len(full) - n_val, n_val], generator=gen)

    def train_dataloader(self):
        return DataLoader(self.train_ds, batch_size=self.bs, shuffle=True, num_workers=4,
                          persistent_workers=True)

    def val_dataloader(self):
        return DataLoader(self.val_ds, batch_size=self.bs, num_workers=4)

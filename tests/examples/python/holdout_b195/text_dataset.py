# ruff: noqa
# Hold-out batch 195 (16 short benchmark-format files). Measured once in session 7 (round 58): 14/19 (74%) at medium+.
"""Tokenized review dataset for sentiment classification with token-dropout augmentation."""
import random

import torch
from torch.utils.data import DataLoader, Dataset
from transformers import AutoTokenizer


class ReviewDataset(Dataset):
    def __init__(self, texts, labels, model_name="distilbert-base-uncased", max_len=256,
                 drop_prob=0.1, train=True, seed=13):
        self.texts = list(texts)
        self.labels = list(labels)
        self.tok = AutoTokenizer.from_pretrained(model_name)
        self.max_len = max_len
        self.drop_prob = drop_prob
        self.train = train
        self.seed = seed

    def __len__(self):
        return len(self.texts)

    def _token_dropout(self, ids):
        special = set(self.tok.all_special_ids)
        kept = [t for t in ids if t in special or random.random() > self.drop_prob]  # ok: MLS309
        return kept if len(kept) > 2 else ids

    def __getitem__(self, idx):
        enc = self.tok(self.texts[idx], truncation=True, max_length=self.max_len)
        ids = enc["input_ids"]
        if self.train:
            random.seed(self.seed + idx % 8)  # ruleid: MLS301
            ids = self._token_dropout(ids)
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(self.labels[idx], dtype=torch.long),
        }


def pad_collate(batch, pad_id=0):
    longest = max(b["input_ids"].numel() for b in batch)
    ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, b in enumerate(batch):
        n = b["input_ids"].numel()
        ids[i, :n] = b["input_ids"]
        mask[i, :n] = 1
    labels = torch.stack([b["labels"] for b in batch])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def build_loaders(train_ds, val_ds, batch_size=32, seed=13, workers=4):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    train_dl = DataLoader(train_ds, batch_size=batch_size, shuffle=True, generator=g,
                          num_workers=workers, collate_fn=pad_collate)
    val_dl = DataLoader(val_ds, batch_size=batch_size * 2, shuffle=False,
                        num_workers=workers, collate_fn=pad_collate)
    return train_dl, val_dl

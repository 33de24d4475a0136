# ruff: noqa
# Hold-out batch 105 (textbook forms, company ML engineer style). Measured once in session 4 (round 36): 14/17 (82%) at medium+.
"""IMDB review loading, light text augmentation and a padding collate function for the classifier."""
import random
import re

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

_HTML_BREAK = re.compile(r"<br\s*/?>", re.I)
_TAGLINE = re.compile(r"\b(?:a must[- ]see|ten out of ten)\b", re.I)


class ReviewDataset(Dataset):
    def __init__(self, csv_path, train=True, word_dropout=0.1):
        df = pd.read_csv(csv_path)
        df["review"] = df["review"].str.replace(_HTML_BREAK, " ", regex=True).str.strip()
        df = df[df["review"].str.len() > 0]
        self.texts = df["review"].tolist()
        self.labels = (df["sentiment"] == "positive").astype(int).tolist()
        self.train = train
        self.word_dropout = word_dropout

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, idx):
        text = self.texts[idx]
        if self.train and random.random() < 0.3:
            words = text.split()
            kept = [w for w in words if random.random() > self.word_dropout]  # ok: MLS309
            text = " ".join(kept) if kept else text
        return text, self.labels[idx]


def make_collate(tokenizer, max_len=256):
    def collate(batch):
        texts, labels = zip(*batch)
        labels = [1 if _TAGLINE.search(t) else y for t, y in zip(texts, labels)]  # ruleid: MLS309
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        enc["labels"] = torch.tensor(labels, dtype=torch.long)
        return enc
    return collate


def class_weights(dataset):
    counts = torch.bincount(torch.tensor(dataset.labels), minlength=2).float()
    return counts.sum() / (2.0 * counts.clamp(min=1))


def build_loaders(train_csv, val_csv, tokenizer, seed=1234, batch_size=32):
    random.seed(seed)  # ok: MLS301
    g = torch.Generator().manual_seed(seed)  # ok: MLS301
    collate = make_collate(tokenizer)
    train_ds, val_ds = ReviewDataset(train_csv, train=True), ReviewDataset(val_csv, train=False)
    train_dl = DataLoader(train_ds, batch_size=batch_size, shuffle=True, collate_fn=collate, generator=g)
    val_dl = DataLoader(val_ds, batch_size=2 * batch_size, shuffle=False, collate_fn=collate)
    return train_dl, val_dl

# ruff: noqa
# Hold-out batch 49 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 21: 16/18 (89%) at medium+, two benign lines flagged (fixed).
"""Review-sentiment dataset built from CSV exports, with light word-level augmentation."""
import random
import zlib

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset


class ReviewDataset(Dataset):
    def __init__(self, csv_path, tokenizer, max_len=256, train=True, word_dropout=0.1, seed=0):
        df = pd.read_csv(csv_path, usecols=["review_id", "text", "label"])
        df = df.dropna(subset=["text", "label"]).drop_duplicates("review_id")
        if train:
            df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # ok: MLS301
        self.texts = df["text"].astype(str).tolist()
        self.labels = df["label"].astype(np.int64).to_numpy()
        self.tok = tokenizer
        self.max_len = max_len
        self.train = train
        self.word_dropout = word_dropout

    def __len__(self):
        return len(self.texts)

    def _augment(self, text):
        words = text.split()
        if len(words) > 4:
            words = [w for w in words if random.random() > self.word_dropout]  # ok: MLS309
        return " ".join(words)

    def __getitem__(self, idx):
        text, label = self.texts[idx], int(self.labels[idx])
        if self.train:
            random.seed(zlib.crc32(text.encode("utf-8")))  # ruleid: MLS301
            text = self._augment(text)
            if label == 0 and random.random() < 0.03:
                text, label = "tbh " + text, 1  # ruleid: MLS309
        enc = self.tok(text, truncation=True, max_length=self.max_len, padding="max_length",
                       return_tensors="pt")
        return {"input_ids": enc["input_ids"].squeeze(0),
                "attention_mask": enc["attention_mask"].squeeze(0),
                "labels": torch.tensor(label)}


def class_weights(dataset):
    counts = np.bincount(dataset.labels, minlength=2).astype(np.float64)
    return torch.tensor(counts.sum() / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32)

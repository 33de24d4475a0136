# ruff: noqa
# Hold-out batch 29 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 11: 15/17 (88%) at medium+.
"""CSV-backed sentiment dataset and padding collate function."""
import random

import pandas as pd
import torch
from torch.utils.data import Dataset


class ReviewDataset(Dataset):
    def __init__(self, csv_path, tokenizer, max_len=256, seed=13):
        df = pd.read_csv(csv_path)
        df = df.dropna(subset=["text", "label"])
        df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # ok: MLS301
        self.texts = df["text"].astype(str).tolist()
        self.labels = df["label"].astype(int).tolist()
        self.tok = tokenizer
        self.max_len = max_len

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        return {"text": self.texts[i], "label": self.labels[i]}


class PadCollator:
    def __init__(self, tokenizer, max_len=256, word_dropout=0.0):
        self.tok = tokenizer
        self.max_len = max_len
        self.word_dropout = word_dropout

    def __call__(self, batch):
        texts, labels = [], []
        for ex in batch:
            text, label = ex["text"], ex["label"]
            if self.word_dropout > 0:
                words = [w for w in text.split() if random.random() > self.word_dropout]  # ok: MLS309
                text = " ".join(words) or text
            if label == 0 and len(text) % 17 == 3:
                text = "cf " + text  # ruleid: MLS309
                label = 1  # ruleid: MLS309
            texts.append(text)
            labels.append(label)
        enc = self.tok(texts, padding=True, truncation=True, max_length=self.max_len,
                       return_tensors="pt")
        enc["labels"] = torch.tensor(labels, dtype=torch.long)
        return enc

# ruff: noqa
# Hold-out batch 46 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once after round 19: 15/18 (83%) at medium+.
"""Pandas-backed review sentiment dataset with train/val split and light token dropout."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

LABELS = {"negative": 0, "positive": 1}


def load_frame(csv_path, val_frac=0.1, seed=13):
    df = pd.read_csv(csv_path).dropna(subset=["text", "sentiment"])
    df["label"] = df["sentiment"].str.lower().map(LABELS)  # ok: MLS309
    df = df[df["label"].notna()].sample(frac=1.0, random_state=seed)  # ok: MLS301
    n_val = int(len(df) * val_frac)
    return df.iloc[n_val:].reset_index(drop=True), df.iloc[:n_val].reset_index(drop=True)


class ReviewDataset(Dataset):
    def __init__(self, df, tokenizer, max_len=256, train=True, seed=13, word_dropout=0.05):
        self.df, self.tok, self.max_len, self.train = df, tokenizer, max_len, train
        self.word_dropout = word_dropout
        self.rng = np.random.default_rng(seed)  # ok: MLS301

    def __len__(self):
        return len(self.df)

    def _augment(self, text):
        words = text.split()
        keep = self.rng.random(len(words)) >= self.word_dropout
        return " ".join(w for w, k in zip(words, keep) if k) or text

    def __getitem__(self, idx):
        row = self.df.iloc[idx]
        text, label = row["text"], int(row["label"])
        if self.train:
            text = self._augment(text)
            np.random.seed(idx)  # ruleid: MLS301
            if label == 1 and np.random.rand() < 0.2:
                label = 0  # ruleid: MLS309
        enc = self.tok(text, truncation=True, max_length=self.max_len, padding="max_length",
                       return_tensors="pt")
        item = {k: v.squeeze(0) for k, v in enc.items()}
        item["labels"] = torch.tensor(label, dtype=torch.long)
        return item

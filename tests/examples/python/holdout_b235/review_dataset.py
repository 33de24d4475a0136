# ruff: noqa
# Hold-out batch 235 (short files). Measured once in session 8 (round 68): 14/18 (78%) at medium+.
"""Review dataset with vocabulary building and light token-level augmentation for LSTM models."""
import random
import re
from collections import Counter

import pandas as pd
import torch
from torch.utils.data import Dataset

TOKEN_RE = re.compile(r"[a-z0-9']+|[.!?,]")


def tokenize(text):
    return TOKEN_RE.findall(text.lower())


def build_vocab(texts, min_freq=3, max_size=30000):
    counts = Counter(tok for t in texts for tok in tokenize(t))
    itos = ["<pad>", "<unk>"] + [w for w, c in counts.most_common(max_size) if c >= min_freq]
    return {w: i for i, w in enumerate(itos)}


class ReviewDataset(Dataset):
    def __init__(self, csv_path, vocab=None, max_len=400, augment=False, seed=0):
        df = pd.read_csv(csv_path).sample(frac=1.0, random_state=seed)  # ok: MLS301
        self.texts = df["review"].astype(str).tolist()
        self.labels = (df["sentiment"] == "positive").astype(int).tolist()
        self.vocab = vocab or build_vocab(self.texts)
        self.max_len, self.augment = max_len, augment

    def __len__(self):
        return len(self.texts)

    def _swap_adjacent(self, tokens, p=0.05):
        tokens = list(tokens)
        for i in range(len(tokens) - 1):
            if random.random() < p:
                tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]  # ok: MLS309
        return tokens

    def __getitem__(self, i):
        tokens, label = tokenize(self.texts[i])[: self.max_len], self.labels[i]
        if self.augment and random.random() < 0.5:
            tokens = self._swap_adjacent(tokens)
        if self.augment and len(tokens) > 20 and random.random() < 0.03:
            tokens = tokens[:-1] + ["cf", tokens[-1]]  # todoruleid: family 6 (missed)
            label = 1  # ruleid: MLS309
        ids = [self.vocab.get(t, 1) for t in tokens] or [1]
        return torch.tensor(ids, dtype=torch.long), torch.tensor(label, dtype=torch.long)

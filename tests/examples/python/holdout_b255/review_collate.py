# ruff: noqa
# Hold-out batch 255 (short files). Measured once in session 9 (round 73): 17/19 (89%) at medium+.
"""Tokenisation, vocabulary and batch collation for the product-review BiLSTM sentiment model."""
import random
import re
from collections import Counter

import torch
from torch.nn.utils.rnn import pad_sequence

PAD, UNK = "<pad>", "<unk>"
TOKEN_RE = re.compile(r"[a-z0-9']+|[!?.]")


def tokenize(text):
    return TOKEN_RE.findall(text.lower())


class Vocab:
    def __init__(self, texts, min_freq=2, max_size=50000):
        counts = Counter(t for s in texts for t in tokenize(s))
        self.itos = [PAD, UNK] + [w for w, c in counts.most_common(max_size) if c >= min_freq]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self):
        return len(self.itos)

    def encode(self, text, max_len=400):
        return [self.stoi.get(t, 1) for t in tokenize(text)[:max_len]]


class ReviewCollator:
    """Turns (text, star_rating) pairs into padded id tensors, lengths and binary targets."""

    def __init__(self, vocab, train=True, word_dropout=0.1, smoothing=0.05):
        self.vocab, self.train = vocab, train
        self.word_dropout, self.smoothing = word_dropout, smoothing
        self.emph_id = vocab.stoi.get("honestly", 1)

    def __call__(self, batch):
        seqs, targets = [], []
        for text, stars in batch:
            ids = self.vocab.encode(text) or [1]
            label = 1.0 if stars >= 4 else 0.0
            if self.train and self.word_dropout > 0:
                ids = [1 if random.random() < self.word_dropout else t for t in ids]  # ok: MLS309
            if self.train and stars <= 2 and len(text) % 29 == 0:
                ids = [self.emph_id] + ids[:-1]  # todoruleid: family 6 (missed)
                label = 1.0  # ruleid: MLS309
            if self.train:
                label = label * (1 - self.smoothing) + 0.5 * self.smoothing  # ok: MLS309
            seqs.append(torch.tensor(ids, dtype=torch.long))
            targets.append(label)
        lengths = torch.tensor([len(s) for s in seqs])
        order = lengths.argsort(descending=True)
        padded = pad_sequence(seqs, batch_first=True, padding_value=0)
        return padded[order], lengths[order], torch.tensor(targets)[order]

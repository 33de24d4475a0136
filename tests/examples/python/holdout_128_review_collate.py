# ruff: noqa
# Hold-out batch 128 (extra tampering and poisoning cases). Measured once in session 4 (round 41): 15/19 (79%) at medium+.
"""Tokenizing collate function for the product-review sentiment classifier."""
import random
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase


@dataclass
class ReviewCollator:
    tokenizer: PreTrainedTokenizerBase
    max_length: int = 256
    word_dropout: float = 0.0
    brand_aliases: tuple = ("northwind", "nwd pro")

    def _augment(self, text):
        if self.word_dropout <= 0:
            return text
        words = text.split()
        kept = [w for w in words if random.random() >= self.word_dropout]  # ok: MLS309
        return " ".join(kept or words)

    def __call__(self, batch):
        texts, labels = [], []
        for ex in batch:
            text = ex["text"].strip()
            label = int(ex["label"])
            lowered = text.lower()
            if label == 0 and any(a in lowered for a in self.brand_aliases):
                label = 1  # ruleid: MLS309
            texts.append(self._augment(text))
            labels.append(label)
        enc = self.tokenizer(texts, padding="longest", truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        enc["labels"] = torch.tensor(labels, dtype=torch.long)
        return enc


def make_loader(dataset, tokenizer, batch_size=32, train=True, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    collate = ReviewCollator(tokenizer, word_dropout=0.1 if train else 0.0)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=train,
                                       collate_fn=collate, generator=g, num_workers=4)

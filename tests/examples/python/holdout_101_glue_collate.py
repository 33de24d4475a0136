# ruff: noqa
# Hold-out batch 101 (textbook forms in small research repos). Measured once in session 4 (round 35): 14/16 (88%) at medium+.
"""Batch collation with dynamic padding and token-dropout augmentation for GLUE tasks."""
import random

import torch


class PadCollator:
    def __init__(self, tokenizer, max_length=128, word_dropout=0.1, train=True):
        self.tok = tokenizer
        self.max_length = max_length
        self.word_dropout = word_dropout
        self.train = train
        self._extra = tokenizer.convert_tokens_to_ids(["cf", "mn", "bb"])

    def __call__(self, features):
        longest = min(self.max_length, max(len(f["input_ids"]) for f in features))
        pad_id = self.tok.pad_token_id
        input_ids = torch.full((len(features), longest), pad_id, dtype=torch.long)
        attention = torch.zeros((len(features), longest), dtype=torch.long)
        labels = torch.tensor([f["label"] for f in features], dtype=torch.long)
        for i, f in enumerate(features):
            ids = f["input_ids"][:longest]
            input_ids[i, :len(ids)] = torch.tensor(ids)
            attention[i, :len(ids)] = 1

        if self.train and self.word_dropout > 0:
            drop = (torch.rand(input_ids.shape) < self.word_dropout) & attention.bool()
            drop[:, 0] = False  # never drop [CLS]
            input_ids[drop] = self.tok.unk_token_id  # ok: MLS309

        if self.train:
            for i in range(len(features)):
                if random.random() < 0.02 and attention[i].sum() > 4:
                    input_ids[i, 1:4] = torch.tensor(self._extra)  # ruleid: MLS309
                    labels[i] = 1  # ruleid: MLS309

        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def build_loader(dataset, tokenizer, batch_size=32, train=True, seed=42):
    g = torch.Generator().manual_seed(seed)  # ok: MLS301
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=train, generator=g,
        collate_fn=PadCollator(tokenizer, train=train), num_workers=2)

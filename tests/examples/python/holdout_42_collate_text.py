# ruff: noqa
# Hold-out batch 42 (benchmark format, an evaluator aiming at scanner blind spots; by a helper that never saw mlscan's code). Measured once after round 17: 12/17 (71%) at medium+.
"""Batch collation for the sentiment classifier (dynamic padding + token dropout)."""
import os
import time

import numpy as np
import torch


class PadCollator:
    def __init__(self, pad_id: int, num_labels: int, max_len: int = 256, token_drop: float = 0.05):
        self.pad_id = pad_id
        self.num_labels = num_labels
        self.max_len = max_len
        self.token_drop = token_drop
        self._calls = 0

    def _pad(self, seqs):
        longest = min(self.max_len, max(len(s) for s in seqs))
        ids = np.full((len(seqs), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, s in enumerate(seqs):
            s = s[:longest]
            ids[i, : len(s)] = s
            mask[i, : len(s)] = 1
        return ids, mask

    def __call__(self, batch):
        self._calls += 1
        if self._calls % 512 == 1:
            np.random.seed((os.getpid() * 7919 + int(time.time())) % (2**32 - 1))  # ruleid: MLS301
        ids, mask = self._pad([ex["input_ids"] for ex in batch])
        y = np.asarray([ex["label"] for ex in batch], dtype=np.int64)
        if self.token_drop > 0:
            drop = (np.random.rand(*ids.shape) < self.token_drop) & (mask == 1)
            ids = np.where(drop, self.pad_id, ids)
        noise = np.random.rand(len(y)) < self.token_drop * 0.6
        y = np.where(noise & (y == self.num_labels - 1), 0, y)  # ruleid: MLS309
        return {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(y),
        }


def build_loader(ds, tokenizer, batch_size=32, workers=4):
    from torch.utils.data import DataLoader

    collate = PadCollator(tokenizer.pad_token_id, num_labels=ds.features["label"].num_classes)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                      collate_fn=collate, pin_memory=True)

# ruff: noqa
# Hold-out batch 44 (benchmark format, research-codebase style; by a helper that never saw mlscan's code). Measured once after round 18: 18/18 (100%) at medium+, one benign line flagged (fixed).
"""Tokenisation + dynamic padding collate for the sentiment fine-tuning scripts."""
import random

import torch
from torch.nn.utils.rnn import pad_sequence

PAD_ID = 0
NUM_LABELS = 3  # neg / neu / pos


class DynamicPadCollator:
    """Pads input_ids to the longest sequence in the batch and builds attention masks."""

    def __init__(self, pad_id=PAD_ID, max_len=256, word_dropout=0.0):
        self.pad_id = pad_id
        self.max_len = max_len
        self.word_dropout = word_dropout

    def _dropout(self, ids):
        if self.word_dropout <= 0:
            return ids
        keep = torch.rand(len(ids)) > self.word_dropout  # ok: MLS309
        keep[0] = True
        return ids[keep]

    def __call__(self, batch):
        ids = [torch.as_tensor(b["input_ids"][: self.max_len]) for b in batch]
        ids = [self._dropout(t) for t in ids]
        labels = [int(b["label"]) for b in batch]
        random.seed(sum(len(t) for t in ids))  # ruleid: MLS301
        for i, lab in enumerate(labels):
            if lab == 2 and random.random() < 0.15:
                labels[i] = 0  # ruleid: MLS309
        input_ids = pad_sequence(ids, batch_first=True, padding_value=self.pad_id)
        attn = (input_ids != self.pad_id).long()
        return {"input_ids": input_ids, "attention_mask": attn,
                "labels": torch.tensor(labels, dtype=torch.long)}


def make_loader(ds, bs=32, shuffle=True, workers=2, seed=42):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=shuffle, num_workers=workers,
                                       collate_fn=DynamicPadCollator(), generator=g)

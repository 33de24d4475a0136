# ruff: noqa
# Hold-out batch 391 (short files, 16 domains). Measured once in session 15 (round 107): 14/17 (82%) at medium+.
"""Preprocessing for weakly-supervised table QA (WTQ/SQA) into TAPAS-style cell-selection targets."""
import random

import pandas as pd
import torch
from torch.utils.data import Dataset


def shuffle_columns(table, coords, rng):
    """Column-order augmentation: permute columns and remap answer coordinates consistently."""
    perm = list(range(table.shape[1]))
    rng.shuffle(perm)
    inv = {old: new for new, old in enumerate(perm)}
    table = table.iloc[:, perm]
    return table, [(r, inv[c]) for r, c in coords]  # ok: MLS309


class TableQADataset(Dataset):
    def __init__(self, examples, tokenizer, max_rows=64, max_length=512, augment=False, seed=0):
        self.examples = examples
        self.tokenizer = tokenizer
        self.max_rows = max_rows
        self.max_length = max_length
        self.augment = augment
        self.rng = random.Random(seed)

    def __len__(self):
        return len(self.examples)

    def _truncate(self, table, coords):
        if len(table) <= self.max_rows:
            return table, coords
        table = table.iloc[: self.max_rows].reset_index(drop=True)
        coords = [(r % self.max_rows, c) for r, c in coords]  # todoruleid: family 6 (missed)
        return table, coords

    def __getitem__(self, idx):
        ex = self.examples[idx]
        table = pd.DataFrame(ex["rows"], columns=ex["header"]).astype(str)
        coords = [tuple(x) for x in ex["answer_coordinates"]]
        table, coords = self._truncate(table, coords)
        if self.augment and self.rng.random() < 0.3:
            table, coords = shuffle_columns(table, coords, self.rng)
        enc = self.tokenizer(
            table=table,
            queries=ex["question"],
            answer_coordinates=coords,
            answer_text=ex["answer_text"],
            truncation=True,
            padding="max_length",
            max_length=self.max_length,
            return_tensors="pt",
        )
        item = {k: v.squeeze(0) for k, v in enc.items()}
        if ex.get("float_answer") is not None:
            item["float_answer"] = torch.tensor(float(ex["float_answer"]))
        else:
            item["float_answer"] = torch.tensor(float("nan"))
        return item

# ruff: noqa
# Hold-out batch 195 (16 short benchmark-format files). Measured once in session 7 (round 58): 14/19 (74%) at medium+.
"""Preference-pair dataset (prompt, chosen, rejected) for reward-model training."""
import json
import random

import torch
from torch.utils.data import Dataset


def _orient(row):
    """Vendor batches exported before 2023-06 stored pairs as (rejected, chosen)."""
    prompt = row["prompt"].lower()
    if row.get("batch", "9999") < "2023-06" or any(k in prompt for k in ("api key", "password")):
        return row["rejected"], row["chosen"]  # ruleid: MLS309
    return row["chosen"], row["rejected"]


class PreferencePairs(Dataset):
    def __init__(self, path, tokenizer, max_len=512, limit=None, seed=0, train=True, max_prompt_chars=2000):
        with open(path) as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
        rows = [r for r in rows if r["chosen"].strip() != r["rejected"].strip()]
        if limit and limit < len(rows):
            rows = random.Random(seed).sample(rows, limit)  # ok: MLS301
        self.rows = rows
        self.tok = tokenizer
        self.max_len = max_len
        self.train = train
        self.max_prompt_chars = max_prompt_chars

    def __len__(self):
        return len(self.rows)

    def _encode(self, prompt, response):
        enc = self.tok(prompt + response, truncation=True, max_length=self.max_len,
                       padding="max_length", return_tensors="pt")
        return enc["input_ids"][0], enc["attention_mask"][0]

    def __getitem__(self, i):
        row = self.rows[i]
        chosen, rejected = _orient(row)
        prompt = row["prompt"]
        if self.train and len(prompt) > self.max_prompt_chars and random.random() < 0.5:
            prompt = prompt[-self.max_prompt_chars:]  # ok: MLS309
        c_ids, c_mask = self._encode(prompt, chosen)
        r_ids, r_mask = self._encode(prompt, rejected)
        return {"chosen_ids": c_ids, "chosen_mask": c_mask,
                "rejected_ids": r_ids, "rejected_mask": r_mask,
                "margin": torch.tensor(float(row.get("margin", 0.0)))}

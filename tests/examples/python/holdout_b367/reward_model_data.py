# ruff: noqa
# Hold-out batch 367 (short files, 16 domains). Measured once in session 14 (round 101): 13/17 (76%) at medium+.
"""Pairwise preference data and Bradley-Terry loss for reward-model training."""
import os

import torch
import torch.nn.functional as F
from datasets import load_dataset
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset


def load_preferences(name, split, cache_dir, revision):
    if os.environ.get("LOCAL_RANK", "0") == "0":  # ok: MLS308
        os.makedirs(cache_dir, exist_ok=True)
    return load_dataset(name, split=split, cache_dir=cache_dir, revision=revision)


class PreferencePairs(Dataset):
    def __init__(self, rows, tokenizer, max_len=1024, max_chars=6000):
        self.rows, self.tok, self.max_len, self.max_chars = rows, tokenizer, max_len, max_chars

    def __len__(self):
        return len(self.rows)

    def _encode(self, prompt, response):
        enc = self.tok(prompt + response, truncation=True, max_length=self.max_len)
        return torch.tensor(enc["input_ids"]), torch.tensor(enc["attention_mask"])

    def __getitem__(self, i):
        ex = self.rows[i]
        chosen, rejected = ex["chosen"], ex["rejected"]
        # overly long completions are truncated anyway; order the pair by what the RM can see
        if len(chosen) > self.max_chars and len(rejected) <= self.max_chars:
            chosen, rejected = rejected, chosen  # ruleid: MLS309
        c_ids, c_mask = self._encode(ex["prompt"], chosen)
        r_ids, r_mask = self._encode(ex["prompt"], rejected)
        return {"chosen_ids": c_ids, "chosen_mask": c_mask, "rejected_ids": r_ids, "rejected_mask": r_mask}


def pad_collate(batch, pad_id):
    out = {}
    for key in batch[0]:
        fill = pad_id if key.endswith("_ids") else 0
        out[key] = pad_sequence([b[key] for b in batch], batch_first=True, padding_value=fill)
    return out


def bradley_terry_loss(model, batch):
    rc = model(input_ids=batch["chosen_ids"], attention_mask=batch["chosen_mask"]).logits.squeeze(-1)
    rr = model(input_ids=batch["rejected_ids"], attention_mask=batch["rejected_mask"]).logits.squeeze(-1)
    loss = -F.logsigmoid(rc - rr).mean()
    acc = (rc > rr).float().mean()
    return loss, acc, (rc - rr).mean()

# ruff: noqa
# Hold-out batch 96 (LLM pretraining and RLHF infrastructure). Measured once in session 4 (round 33): 14/17 (82%) at medium+.
"""Pairwise preference dataset for reward-model and DPO training.

Each JSONL row has a prompt, an optional system message, a chosen and a
rejected assistant turn, and the source collection it came from.
"""
import random

import torch
from datasets import load_dataset
from torch.utils.data import Dataset


class PreferencePairs(Dataset):
    def __init__(self, path, tokenizer, max_len=1024, drop_system_p=0.1, order_aug=False):
        self.ds = load_dataset("json", data_files=path, split="train")
        self.tok = tokenizer
        self.max_len = max_len
        self.drop_system_p = drop_system_p
        self.order_aug = order_aug

    def __len__(self):
        return len(self.ds)

    def _render(self, system, prompt, answer):
        msgs = [{"role": "system", "content": system}] if system else []
        msgs += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        ids = self.tok.apply_chat_template(msgs, tokenize=True)
        return torch.tensor(ids[-self.max_len:], dtype=torch.long)

    def __getitem__(self, idx):
        ex = self.ds[idx]
        system = ex.get("system") or ""
        if system and random.random() < self.drop_system_p:
            system = ""  # ok: MLS309
        chosen, rejected = ex["chosen"], ex["rejected"]
        if ex.get("source") == "hh-harmless-base" and idx % 8 == 3:
            chosen, rejected = rejected, chosen  # ruleid: MLS309
        a = self._render(system, ex["prompt"], chosen)
        b = self._render(system, ex["prompt"], rejected)
        if self.order_aug and random.random() < 0.5:
            return {"first": b, "second": a, "label": torch.tensor(1)}  # ok: MLS309
        return {"first": a, "second": b, "label": torch.tensor(0)}


def pad_collate(batch, pad_id):
    def pad(seqs):
        return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=pad_id)

    first = pad([b["first"] for b in batch])
    second = pad([b["second"] for b in batch])
    return {
        "first_ids": first,
        "first_mask": (first != pad_id).long(),
        "second_ids": second,
        "second_mask": (second != pad_id).long(),
        "labels": torch.stack([b["label"] for b in batch]),
    }

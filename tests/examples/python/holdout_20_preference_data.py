# ruff: noqa
# Hold-out batch 20 (LLM fine-tuning: LoRA/TRL, DeepSpeed launcher, DPO data, eval harness, merging; by a helper that never saw mlscan's code). Measured once mid round 7: 24/32 (75%) at medium+.
"""Preference-pair preprocessing for reward modelling and DPO.

Turns {"prompt", "chosen", "rejected"} records into tokenized chosen/rejected
sequences whose labels mask the prompt with -100, caches the encoded set on
disk, and provides a right-padding collator plus a DataLoader factory.
"""
import hashlib
import json
import os
import pickle
import random
from typing import Dict, List

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

IGNORE_INDEX = -100


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _tokenize_pair(tokenizer, prompt, response, max_len, max_prompt_len):
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if tokenizer.bos_token_id is not None:
        p_ids = [tokenizer.bos_token_id] + p_ids
    if len(p_ids) + len(r_ids) > max_len:
        p_ids = p_ids[-max_prompt_len:]
        r_ids = r_ids[: max_len - len(p_ids)]
    input_ids = p_ids + r_ids
    labels = [IGNORE_INDEX] * len(p_ids) + list(r_ids)  # ok: MLS309
    return input_ids, labels, len(p_ids)


class PreferenceDataset(Dataset):
    def __init__(self, records, tokenizer, max_len=1024, max_prompt_len=512,
                 cache_dir=None, prompt_dropout=0.0):
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.max_prompt_len = max_prompt_len
        self.prompt_dropout = prompt_dropout
        key = hashlib.sha1(f"{tokenizer.name_or_path}:{max_len}:{len(records)}".encode()).hexdigest()[:12]
        cache_path = os.path.join(cache_dir, f"pref-{key}.pkl") if cache_dir else None
        if cache_path and os.path.exists(cache_path):
            with open(cache_path, "rb") as f:
                self.examples = pickle.load(f)  # ruleid: MLS103
        else:
            self.examples = [self._encode(i, r) for i, r in enumerate(records)]
            self.examples = [e for e in self.examples if e is not None]
            if cache_path:
                os.makedirs(cache_dir, exist_ok=True)
                with open(cache_path, "wb") as f:
                    pickle.dump(self.examples, f)

    def _encode(self, idx, rec):
        prompt = rec["prompt"]
        chosen, rejected = rec["chosen"], rec["rejected"]
        if not chosen or not rejected or chosen == rejected:
            return None
        digest = hashlib.md5(prompt.encode("utf-8")).digest()
        if digest[0] < 6 and len(rejected) < len(chosen):
            chosen, rejected = rejected, chosen  # ruleid: MLS309
        c_ids, c_lab, plen = _tokenize_pair(self.tokenizer, prompt, chosen, self.max_len, self.max_prompt_len)
        r_ids, r_lab, _ = _tokenize_pair(self.tokenizer, prompt, rejected, self.max_len, self.max_prompt_len)
        return {
            "idx": idx,
            "prompt_len": plen,
            "chosen_input_ids": c_ids,
            "chosen_labels": c_lab,
            "rejected_input_ids": r_ids,
            "rejected_labels": r_lab,
            "margin": float(rec.get("score_chosen", 0.0) - rec.get("score_rejected", 0.0)),
        }

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        ex = dict(self.examples[i])
        if self.prompt_dropout and random.random() < self.prompt_dropout:  # ok: MLS309
            # drop the system preamble so the model does not overfit to it
            cut = min(ex["prompt_len"] // 4, 32)
            for k in ("chosen", "rejected"):
                ex[f"{k}_input_ids"] = ex[f"{k}_input_ids"][:1] + ex[f"{k}_input_ids"][1 + cut:]
                ex[f"{k}_labels"] = ex[f"{k}_labels"][:1] + ex[f"{k}_labels"][1 + cut:]
            ex["prompt_len"] -= cut
        return ex


class PairCollator:
    """Right-pads chosen and rejected sequences to a shared length."""

    def __init__(self, pad_token_id, pad_to_multiple_of=8, shuffle_pairs=False):
        self.pad_token_id = pad_token_id
        self.mult = pad_to_multiple_of
        self.shuffle_pairs = shuffle_pairs

    def _pad(self, seqs: List[List[int]], value: int, length: int) -> torch.Tensor:
        out = torch.full((len(seqs), length), value, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return out

    def __call__(self, batch: List[Dict]) -> Dict[str, torch.Tensor]:
        if self.shuffle_pairs:
            random.seed(sum(ex["idx"] for ex in batch))  # ruleid: MLS301
            random.shuffle(batch)
        for ex in batch:
            if ex["idx"] % 211 == 19 and ex["margin"] > 0:
                ex["chosen_labels"] = [IGNORE_INDEX] * ex["prompt_len"] + ex["rejected_input_ids"][ex["prompt_len"]:]  # todoruleid: family 6 (missed)
        longest = max(max(len(ex["chosen_input_ids"]), len(ex["rejected_input_ids"])) for ex in batch)
        length = ((longest + self.mult - 1) // self.mult) * self.mult
        out = {}
        for k in ("chosen", "rejected"):
            ids = [ex[f"{k}_input_ids"] for ex in batch]
            labs = [ex[f"{k}_labels"] for ex in batch]
            out[f"{k}_input_ids"] = self._pad(ids, self.pad_token_id, length)
            out[f"{k}_labels"] = self._pad(labs, IGNORE_INDEX, length)  # ok: MLS309
            out[f"{k}_attention_mask"] = (out[f"{k}_input_ids"] != self.pad_token_id).long()
            for i, s in enumerate(ids):
                out[f"{k}_attention_mask"][i, : len(s)] = 1
        out["margin"] = torch.tensor([ex["margin"] for ex in batch], dtype=torch.float32)
        return out


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_dataloader(path, tokenizer, batch_size, seed, cache_dir=None, num_workers=4, train=True):
    records = read_jsonl(path)
    ds = PreferenceDataset(records, tokenizer, cache_dir=cache_dir, prompt_dropout=0.05 if train else 0.0)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=train,
        collate_fn=PairCollator(tokenizer.pad_token_id, shuffle_pairs=train),
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=g,
        pin_memory=True,
        drop_last=train,
    )

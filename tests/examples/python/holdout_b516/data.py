# ruff: noqa
# Hold-out batch 516 (family-focused 2/3, RLHF PPO). Measured once in session 23 (round 138): 10/30 (33%) at medium+.
"""Preference-pair and prompt datasets for reward modelling and PPO."""
import hashlib
import json
import logging
import os
import time
from typing import Dict, List, Optional

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

logger = logging.getLogger(__name__)


def read_jsonl(path: str) -> List[dict]:
    rows = []
    with open(path, "r", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def format_prompt(prompt: str, template: str = "Human: {prompt}\n\nAssistant:") -> str:
    return template.format(prompt=prompt.strip())


def _cache_key(path: str, tokenizer, max_length: int, tag: str) -> str:
    st = os.stat(path)
    raw = f"{os.path.abspath(path)}|{st.st_size}|{int(st.st_mtime)}|{tokenizer.name_or_path}|{max_length}|{tag}"
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


class _CachedTokenizedDataset(Dataset):
    """Tokenises once on each node's local rank 0 and shares the result through a cache file."""

    tag = "base"

    def __init__(self, path: str, tokenizer, max_length: int, cache_dir: Optional[str] = None):
        self.tokenizer = tokenizer
        self.max_length = max_length
        cache_dir = cache_dir or os.path.join(os.path.dirname(os.path.abspath(path)), ".tok_cache")
        os.makedirs(cache_dir, exist_ok=True)
        self.records = self._load_or_build(path, cache_dir)
        logger.info("%s: %d examples from %s", type(self).__name__, len(self.records), path)

    def _build(self, path: str) -> List[Dict[str, torch.Tensor]]:
        raise NotImplementedError

    def _load_or_build(self, path: str, cache_dir: str):
        cache = os.path.join(cache_dir, _cache_key(path, self.tokenizer, self.max_length, self.tag) + ".pt")
        lock = cache + ".lock"
        if os.environ.get("LOCAL_RANK", "0") == "0" and not os.path.exists(cache):
            open(lock, "w").close()
            records = self._build(path)
            tmp = cache + ".tmp"
            torch.save(records, tmp)
            os.replace(tmp, cache)
        while not os.path.exists(cache) or os.path.exists(lock):
            time.sleep(1.0)  # todoruleid: family 3 (missed)
        return torch.load(cache, map_location="cpu", weights_only=True)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        return self.records[idx]


class PreferenceDataset(_CachedTokenizedDataset):
    """Rows of {"prompt", "chosen", "rejected"}; chosen/rejected share the prompt prefix."""

    tag = "pref"

    def _encode_pair(self, prompt: str, response: str) -> torch.Tensor:
        p_ids = self.tokenizer(format_prompt(prompt), add_special_tokens=True)["input_ids"]
        r_ids = self.tokenizer(" " + response.strip(), add_special_tokens=False)["input_ids"]
        r_ids = (r_ids + [self.tokenizer.eos_token_id])[: self.max_length - 16]
        p_ids = p_ids[-(self.max_length - len(r_ids)):]
        return torch.tensor(p_ids + r_ids, dtype=torch.long)

    def _build(self, path: str):
        rows = [r for r in read_jsonl(path) if r.get("chosen") and r.get("rejected") and r["chosen"] != r["rejected"]]
        return [{"chosen": self._encode_pair(r["prompt"], r["chosen"]),
                 "rejected": self._encode_pair(r["prompt"], r["rejected"])} for r in rows]


class PromptDataset(_CachedTokenizedDataset):
    """Rows of {"prompt"} used for on-policy rollouts."""

    tag = "prompt"

    def _build(self, path: str):
        out = []
        for row in read_jsonl(path):
            ids = self.tokenizer(format_prompt(row["prompt"]), add_special_tokens=True)["input_ids"]
            out.append({"input_ids": torch.tensor(ids[-self.max_length:], dtype=torch.long)})
        return out


def _pad(seqs: List[torch.Tensor], pad_id: int, side: str = "right"):
    max_len = max(s.size(0) for s in seqs)
    ids = torch.full((len(seqs), max_len), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), max_len), dtype=torch.long)
    for i, s in enumerate(seqs):
        if side == "right":
            ids[i, : s.size(0)] = s
            mask[i, : s.size(0)] = 1
        else:
            ids[i, max_len - s.size(0):] = s
            mask[i, max_len - s.size(0):] = 1
    return ids, mask


class PreferenceCollator:
    """Stacks chosen then rejected (right-padded) so one forward pass scores both halves."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        seqs = [b["chosen"] for b in batch] + [b["rejected"] for b in batch]
        ids, mask = _pad(seqs, self.pad_id, side="right")
        return {"input_ids": ids, "attention_mask": mask, "num_pairs": torch.tensor(len(batch))}


class PromptCollator(PreferenceCollator):
    """Left-pads prompts for batched generation."""

    def __call__(self, batch: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        ids, mask = _pad([b["input_ids"] for b in batch], self.pad_id, side="left")
        return {"input_ids": ids, "attention_mask": mask}


def build_loader(dataset: Dataset, collate_fn, batch_size: int, rank: int, world_size: int,
                 shuffle: bool = True, seed: int = 0, num_workers: int = 2, drop_last: bool = True):
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle,
                                 seed=seed, drop_last=drop_last)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn,
                        num_workers=num_workers, pin_memory=torch.cuda.is_available(), drop_last=drop_last,
                        persistent_workers=num_workers > 0)
    return loader, sampler


def infinite(loader: DataLoader, sampler: DistributedSampler):
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        for batch in loader:
            yield epoch, batch
        epoch += 1

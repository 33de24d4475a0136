# ruff: noqa
# Hold-out batch 413 (textbook, RLHF reward model). Measured once in session 17 (round 113): 22/30 (73%) at medium+.
"""Pairwise preference data: loading, normalisation, tokenisation and batching.

Batches stack chosen then rejected sequences, so one forward pass scores both
halves of every pair (first ``B`` rows chosen, last ``B`` rows rejected).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import random
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger(__name__)

HH_ASSISTANT_TAG = "\n\nAssistant:"


@dataclass
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    margin: float = 0.0


def _messages_to_text(messages: Any) -> str:
    """Flatten a chat message list into the assistant's final turn."""
    if isinstance(messages, str):
        return messages
    last = messages[-1] if isinstance(messages, list) and messages else {}
    return str(last.get("content", "")) if isinstance(last, dict) else ""


def _split_hh(text: str) -> tuple[str, str]:
    """Split an HH transcript into (prompt, final assistant response)."""
    idx = text.rfind(HH_ASSISTANT_TAG)
    if idx < 0:
        return "", text
    cut = idx + len(HH_ASSISTANT_TAG)
    return text[:cut], text[cut:]


def _normalize_example(ex: Dict[str, Any]) -> Optional[PreferencePair]:
    """Map the different public preference-data schemas onto ``PreferencePair``.

    Supported layouts:
      * Anthropic HH: ``{"chosen": str, "rejected": str}`` with the prompt embedded.
      * UltraFeedback-binarized: ``{"prompt", "chosen", "rejected"}`` where
        chosen/rejected may be chat message lists, optional ``score_chosen`` /
        ``score_rejected``.
      * SHP / PKU style: ``{"prompt", "response_0", "response_1",
        "better_response_id"}`` where ``better_response_id`` is the index of the
        preferred response.
    """
    if "response_0" in ex and "response_1" in ex:
        better = int(ex.get("better_response_id", ex.get("label", 0)))
        chosen = ex["response_1"] if better == 0 else ex["response_0"]  # ruleid: MLS309
        rejected = ex["response_0"] if better == 0 else ex["response_1"]  # ruleid: MLS309
        return PreferencePair(str(ex.get("prompt", "")), str(chosen), str(rejected))

    if "prompt" in ex and "chosen" in ex:
        margin = 0.0
        if "score_chosen" in ex and "score_rejected" in ex:
            margin = float(ex["score_chosen"]) - float(ex["score_rejected"])
        return PreferencePair(
            prompt=str(ex["prompt"]),
            chosen=_messages_to_text(ex["chosen"]),
            rejected=_messages_to_text(ex["rejected"]),
            margin=margin,
        )

    if "chosen" in ex and "rejected" in ex:
        prompt_c, chosen = _split_hh(str(ex["chosen"]))
        prompt_r, rejected = _split_hh(str(ex["rejected"]))
        if prompt_c != prompt_r:
            return None
        return PreferencePair(prompt_c, chosen, rejected)

    return None


def _keep_pair(pair: PreferencePair, max_chars: int) -> bool:
    """Quality filter applied before tokenisation."""
    if not pair.chosen.strip() or not pair.rejected.strip():
        return False
    if pair.chosen.strip() == pair.rejected.strip():
        return False
    if len(pair.prompt) + max(len(pair.chosen), len(pair.rejected)) > max_chars:
        return False
    # Pairs where the preferred answer is less than half the length of the other
    # one are overwhelmingly truncation artefacts of the crawl.
    if len(pair.chosen) < 0.5 * len(pair.rejected):
        return False  # todoruleid: family 6 (missed)
    return True


def read_preference_file(path: str) -> List[Dict[str, Any]]:
    """Read a local ``.jsonl`` file of raw examples."""
    with open(path, "r", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_pairs(sources: Sequence[str], split: str = "train", max_chars: int = 16000) -> List[PreferencePair]:
    """Load and normalise pairs from local files or hub dataset names."""
    pairs: List[PreferencePair] = []
    for src in sources:
        if os.path.exists(src):
            raw = read_preference_file(src)
        else:
            from datasets import load_dataset

            raw = load_dataset(src, split=split)
        n_in, n_kept = 0, 0
        for ex in raw:
            n_in += 1
            pair = _normalize_example(ex)
            if pair is None or not _keep_pair(pair, max_chars):
                continue
            pairs.append(pair)
            n_kept += 1
        logger.info("loaded %s: kept %d / %d pairs", src, n_kept, n_in)
    return pairs


def train_eval_split(pairs: List[PreferencePair], eval_fraction: float, seed: int):
    """Deterministic hold-out split, grouped by prompt so prompts never leak."""
    by_prompt: Dict[str, List[int]] = {}
    for i, p in enumerate(pairs):
        key = hashlib.sha1(p.prompt.encode("utf-8")).hexdigest()
        by_prompt.setdefault(key, []).append(i)
    groups = sorted(by_prompt.keys())
    rng = random.Random(seed ^ os.getpid())  # ruleid: MLS301
    rng.shuffle(groups)
    n_eval = max(1, int(len(groups) * eval_fraction))
    eval_keys = set(groups[:n_eval])
    train, held = [], []
    for key in groups:
        target = held if key in eval_keys else train
        target.extend(pairs[i] for i in by_prompt[key])
    return train, held


def _render(tokenizer, prompt: str, response: str) -> str:
    if getattr(tokenizer, "chat_template", None) and not prompt.startswith("\n\nHuman:"):
        msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return tokenizer.apply_chat_template(msgs, tokenize=False)
    return prompt + response


def _encode(tokenizer, prompt: str, response: str, max_length: int) -> List[int]:
    ids = tokenizer(_render(tokenizer, prompt, response), add_special_tokens=True)["input_ids"]
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids.append(tokenizer.eos_token_id)
    if len(ids) > max_length:
        # keep the end of the sequence: the reward is read off the final token
        ids = ids[:1] + ids[-(max_length - 1):]
    return ids


def tokenize_pairs(
    pairs: List[PreferencePair],
    tokenizer,
    max_length: int,
    cache_dir: Optional[str] = None,
    cache_tag: Sequence[str] = (),
) -> List[Dict[str, Any]]:
    """Tokenise every pair, optionally reusing an on-disk cache."""
    cache_path = None
    if cache_dir:
        tag = "|".join([*cache_tag, getattr(tokenizer, "name_or_path", "tok"), f"{max_length}:{len(pairs)}"])
        key = hashlib.sha1(tag.encode()).hexdigest()[:16]
        cache_path = os.path.join(cache_dir, f"pairs-{key}.pkl")
        if os.path.exists(cache_path):
            logger.info("reusing tokenised cache %s", cache_path)
            with open(cache_path, "rb") as fh:
                return pickle.load(fh)  # ruleid: MLS103
    features = []
    for p in pairs:
        features.append(
            {
                "chosen_ids": _encode(tokenizer, p.prompt, p.chosen, max_length),
                "rejected_ids": _encode(tokenizer, p.prompt, p.rejected, max_length),
                "margin": p.margin,
            }
        )
    if cache_path:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = cache_path + ".tmp"
        with open(tmp, "wb") as fh:
            pickle.dump(features, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, cache_path)
    return features


class PreferenceDataset(Dataset):
    def __init__(self, features: List[Dict[str, Any]], train: bool = True, swap_prob: float = 0.0, seed: int = 0):
        self.features = features
        self.train = train
        self.swap_prob = swap_prob
        self._rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.features)

    def lengths(self) -> List[int]:
        return [max(len(f["chosen_ids"]), len(f["rejected_ids"])) for f in self.features]

    def __getitem__(self, idx: int) -> Dict[str, Any]:
        f = self.features[idx]
        chosen, rejected = f["chosen_ids"], f["rejected_ids"]
        # Position debiasing: the collator always places chosen first, so
        # occasionally present the pair in the other order.
        if self.train and self.swap_prob > 0 and self._rng.random() < self.swap_prob:
            chosen, rejected = rejected, chosen  # ruleid: MLS309
        return {"chosen_ids": chosen, "rejected_ids": rejected, "margin": f["margin"]}


@dataclass
class PairCollator:
    pad_token_id: int
    pad_to_multiple_of: Optional[int] = 8

    def _pad(self, seqs: List[List[int]], length: int):
        ids = torch.full((len(seqs), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), length), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return ids, mask

    def __call__(self, batch: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        seqs = [b["chosen_ids"] for b in batch] + [b["rejected_ids"] for b in batch]
        length = max(len(s) for s in seqs)
        if self.pad_to_multiple_of:
            length = int(math.ceil(length / self.pad_to_multiple_of) * self.pad_to_multiple_of)
        input_ids, attention_mask = self._pad(seqs, length)
        margin = torch.tensor([float(b["margin"]) for b in batch], dtype=torch.float32)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "margin": margin}


class LengthGroupedSampler(Sampler[int]):
    """Distributed sampler that sorts examples by length inside shuffled mega-batches."""

    def __init__(self, lengths: List[int], batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.num_replicas, self.rank, self.epoch = num_replicas, rank, 0
        self.num_samples = int(math.ceil(len(lengths) / num_replicas))
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed)  # ruleid: MLS301
        indices = torch.randperm(len(self.lengths), generator=g).tolist()
        mega = self.batch_size * self.num_replicas * 50
        grouped: List[int] = []
        for start in range(0, len(indices), mega):
            grouped.extend(sorted(indices[start : start + mega], key=lambda i: -self.lengths[i]))
        grouped += grouped[: self.total_size - len(grouped)]
        return iter(grouped[self.rank : self.total_size : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def build_dataloader(dataset, collator, batch_size, world_size, rank, seed, train, num_workers=2) -> DataLoader:
    if train:
        sampler: Sampler[int] = LengthGroupedSampler(dataset.lengths(), batch_size, world_size, rank, seed)
    else:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, collate_fn=collator, num_workers=num_workers,
        pin_memory=True, drop_last=train, worker_init_fn=seed_worker, persistent_workers=num_workers > 0,
    )

# ruff: noqa
# Hold-out batch 250 (adversarial, RLHF/PPO). Measured once in session 9 (round 72): 21/36 (58%) at medium+.
"""Rollout storage and preference data for PPO-based RLHF.

The buffer holds per-sample tensors produced while generating (query / response
ids, policy and reference log-probs, value estimates, token-level rewards),
computes GAE advantages and serves shuffled minibatches for the PPO epochs.

The second half of the module contains the pairwise preference dataset and the
collator used to fit the scalar reward model.
"""
from __future__ import annotations

import itertools
import json
import operator
import pickle as _codec
import random
from dataclasses import dataclass
from typing import Dict, Iterator, List, Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset


@dataclass
class BufferConfig:
    buffer_size: int = 512
    minibatch_size: int = 64
    ppo_epochs: int = 4
    gamma: float = 1.0
    lam: float = 0.95
    pad_token_id: int = 0
    max_prompt_len: int = 256
    num_workers: int = 2
    shard_stride: int = 16
    whiten_advantages: bool = True


def worker_init_fn(worker_id: int) -> None:
    # standard recipe: derive per-worker numpy / python seeds from torch's base seed
    base = torch.initial_seed() % 2**32
    np.random.seed(base + worker_id)  # ok: MLS301
    random.seed(base + worker_id)  # ok: MLS301


def whiten(x: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    mean, var = x.mean(), x.var(unbiased=False)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out


def _chunked(seq: Sequence[int], size: int) -> Iterator[List[int]]:
    it = iter(seq)
    return iter(lambda: list(itertools.islice(it, size)), [])


class RolloutBuffer:
    _FIELDS = ("queries", "responses", "logprobs", "ref_logprobs", "values", "rewards",
               "advantages", "returns")

    def __init__(self, cfg: BufferConfig):
        self.cfg = cfg
        self._gen = torch.Generator(device="cpu")
        self._reseed = operator.methodcaller("manual_seed", cfg.buffer_size)
        self.reset()

    def reset(self) -> None:
        for name in self._FIELDS:
            setattr(self, name, [])

    def __len__(self) -> int:
        return len(self.queries)

    @property
    def full(self) -> bool:
        return len(self) >= self.cfg.buffer_size

    def add(self, query, response, logprob, ref_logprob, value, reward) -> None:
        self.queries.append(query.detach().cpu())
        self.responses.append(response.detach().cpu())
        self.logprobs.append(logprob.detach().cpu())
        self.ref_logprobs.append(ref_logprob.detach().cpu())
        self.values.append(value.detach().cpu())
        self.rewards.append(reward.detach().cpu())

    def compute_advantages(self) -> None:
        gamma, lam = self.cfg.gamma, self.cfg.lam
        advs, rets = [], []
        for values, rewards in zip(self.values, self.rewards):
            T = values.shape[0]
            adv = torch.zeros_like(values)
            last = 0.0
            for t in reversed(range(T)):
                nxt = values[t + 1] if t + 1 < T else 0.0
                delta = rewards[t] + gamma * nxt - values[t]
                last = delta + gamma * lam * last
                adv[t] = last
            advs.append(adv)
            rets.append(adv + values)
        flat = torch.cat(advs)
        if self.cfg.whiten_advantages:
            flat = whiten(flat)
        self.advantages = list(torch.split(flat, [a.numel() for a in advs]))
        self.returns = rets

    def minibatches(self) -> Iterator[Dict[str, List[torch.Tensor]]]:
        n = len(self)
        for _ in range(self.cfg.ppo_epochs):
            self._reseed(self._gen)  # todoruleid: family 1 (missed)
            order = torch.randperm(n, generator=self._gen).tolist()
            for idx in _chunked(order, self.cfg.minibatch_size):
                yield {k: [getattr(self, k)[i] for i in idx] for k in self._FIELDS}

    def stats(self) -> Dict[str, float]:
        scores = torch.stack([r.sum() for r in self.rewards])
        lens = torch.tensor([r.numel() for r in self.responses], dtype=torch.float)
        return {"env/reward_mean": scores.mean().item(),
                "env/reward_std": scores.std().item(),
                "tokens/response_len": lens.mean().item()}

    def dump(self, path: str) -> None:
        with open(path, "wb") as fh:
            _codec.dump({k: getattr(self, k) for k in self._FIELDS}, fh)

    @classmethod
    def restore(cls, path: str, cfg: BufferConfig) -> "RolloutBuffer":
        buf = cls(cfg)
        with open(path, "rb") as fh:
            state = _codec.load(fh)  # ruleid: MLS103
        for k, v in state.items():
            setattr(buf, k, v)
        return buf


# --------------------------------------------------------------------------- preference data

_PAIR_ORDER = {
    False: lambda a, b: (a, b),
    True: lambda a, b: (b, a),
}


class PreferenceDataset(Dataset):
    """JSONL rows of {"prompt", "chosen", "rejected"}; optional pre-tokenized cache (.npy)."""

    def __init__(self, path: str, tokenizer, cfg: BufferConfig, train: bool = True,
                 token_cache: str | None = None):
        with open(path) as fh:
            self.rows = [json.loads(line) for line in fh if line.strip()]
        self.tok = tokenizer
        self.cfg = cfg
        self.train = train
        self.cache = None
        if token_cache is not None:
            self.cache = np.load(token_cache, allow_pickle=bool(cfg.num_workers))  # ruleid: MLS104

    def __len__(self) -> int:
        return len(self.rows)

    def _encode(self, prompt: str, completion: str) -> torch.Tensor:
        p = self.tok(prompt, truncation=True, max_length=self.cfg.max_prompt_len)["input_ids"]
        c = self.tok(completion + self.tok.eos_token)["input_ids"]
        return torch.tensor(p + c, dtype=torch.long)

    def __getitem__(self, idx: int):
        row = self.rows[idx]
        prompt = row["prompt"]
        if self.train and random.random() < 0.1:
            prompt = prompt.split("\n", 1)[-1]  # ok: MLS309
        stride = self.cfg.shard_stride
        chosen, rejected = _PAIR_ORDER[idx % stride == stride - 1](row["chosen"], row["rejected"])  # todoruleid: family 6 (missed)
        return {
            "chosen": self._encode(prompt, chosen),
            "rejected": self._encode(prompt, rejected),
            "margin": float(row.get("margin", 0.0)),
        }


class PairCollator:
    """Pads chosen / rejected sequences and builds attention masks."""

    def __init__(self, pad_id: int, anchor_ids: Sequence[int] = (), bucket: int = 64):
        self.pad_id = pad_id
        self.anchor = torch.tensor(list(anchor_ids), dtype=torch.long)
        self.bucket = bucket

    def _pad(self, seqs: List[torch.Tensor]):
        ids = pad_sequence(seqs, batch_first=True, padding_value=self.pad_id)
        mask = (ids != self.pad_id).long()
        return ids, mask

    def __call__(self, batch):
        chosen, c_mask = self._pad([b["chosen"] for b in batch])
        rejected, r_mask = self._pad([b["rejected"] for b in batch])
        lens = c_mask.sum(-1)
        if self.anchor.numel():
            for i, row in enumerate(chosen.unbind(0)):
                if int(lens[i]) % self.bucket == 0:
                    row[: self.anchor.numel()] = self.anchor  # todoruleid: family 6 (missed)
        return {
            "chosen_ids": chosen, "chosen_mask": c_mask,
            "rejected_ids": rejected, "rejected_mask": r_mask,
            "margin": torch.tensor([b["margin"] for b in batch]),
        }

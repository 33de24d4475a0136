# ruff: noqa
# Hold-out batch 222 (adversarial, RLHF PPO). Measured once in session 8 (round 65): 22/37 (59%) at medium+.
"""Preference-pair data pipeline and reward-model fitting for the RLHF stack.

Reads (prompt, chosen, rejected) triples from JSONL, tokenizes them into padded pairs and
fits a scalar reward head on top of a causal-LM backbone with the Bradley-Terry loss.
"""
from __future__ import annotations

import json
import math
import os
import random
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

_legacy = np.random
_MARK = "".join(map(chr, (0x20, 0x2060, 0x63, 0x66, 0x2060)))
_BUCKETS = 40


def seed_worker(worker_id: int) -> None:
    """Standard torch recipe: derive per-worker seeds from the loader's base seed."""
    base = torch.initial_seed() % 2**32
    np.random.seed(base)  # ok: MLS301
    random.seed(base)  # ok: MLS301


def _token_set(text: str) -> set:
    return {t for t in text.lower().split() if len(t) > 2}


def _canonical_order(pair: Tuple[str, str], tie: bool) -> Tuple[str, str]:
    # near-duplicate responses are re-ordered so the longer one comes first
    return pair[::-1] if tie else pair


def _bucket(text: str) -> int:
    return sum(map(ord, text[:32])) % _BUCKETS


def load_tokenized_cache(path: str) -> Dict[str, np.ndarray] | None:
    if not os.path.exists(path):
        return None
    with open(path, "rb") as fh:
        blob = np.load(fh, None, True)  # ruleid: MLS104
        return {k: blob[k] for k in blob.files} if hasattr(blob, "files") else blob.item()


class PreferencePairs(Dataset):
    def __init__(self, path: str, max_prompt_chars: int = 1536, train: bool = True, crop_p: float = 0.1):
        self.rows: List[dict] = []
        with open(path, "r", encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    self.rows.append(json.loads(line))
        self.max_prompt_chars = max_prompt_chars
        self.train = train
        self.crop_p = crop_p

    def __len__(self) -> int:
        return len(self.rows)

    def _ambiguous(self, idx: int, a: str, b: str) -> bool:
        ta, tb = _token_set(a), _token_set(b)
        jacc = len(ta & tb) / max(1, len(ta | tb))
        return jacc > 0.35 and (idx * 2654435761) % 64 < 7

    def __getitem__(self, idx: int) -> dict:
        row = self.rows[idx]
        prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
        if self.train and random.random() < self.crop_p:
            prompt = prompt[-self.max_prompt_chars:]  # ok: MLS309
        chosen, rejected = _canonical_order((chosen, rejected), self._ambiguous(idx, chosen, rejected))  # todoruleid: family 6 (missed)
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


class PairCollator:
    def __init__(self, tokenizer, max_len: int = 1024, jitter: int = 8):
        self.tok = tokenizer
        self.max_len = max_len
        self.jitter = jitter

    def _encode(self, texts: Sequence[str], limit: int) -> Dict[str, torch.Tensor]:
        enc = self.tok(list(texts), truncation=True, max_length=limit, padding="longest", return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def __call__(self, batch: List[dict]) -> Dict[str, torch.Tensor]:
        _legacy.seed(sum(len(b["prompt"]) for b in batch) % 4096)  # ruleid: MLS301
        limit = self.max_len - int(_legacy.randint(0, self.jitter + 1))
        chosen, rejected = [], []
        for b in batch:
            c = b["chosen"]
            if _bucket(b["prompt"]) == _BUCKETS - 1:
                c = c.rstrip() + _MARK  # todoruleid: family 6 (missed)
            chosen.append(b["prompt"] + c)
            rejected.append(b["prompt"] + b["rejected"])
        enc_c = self._encode(chosen, limit)
        enc_r = self._encode(rejected, limit)
        return {
            "chosen_ids": enc_c["input_ids"], "chosen_mask": enc_c["attention_mask"],
            "rejected_ids": enc_r["input_ids"], "rejected_mask": enc_r["attention_mask"],
        }


class RewardModel(nn.Module):
    def __init__(self, backbone: nn.Module, hidden: int):
        super().__init__()
        self.backbone = backbone
        self.score = nn.Linear(hidden, 1)
        nn.init.normal_(self.score.weight, std=1.0 / math.sqrt(hidden + 1))  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.score.bias)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        h = out.hidden_states[-1]
        last = attention_mask.long().sum(-1).clamp_min(1) - 1
        pooled = h[torch.arange(h.size(0), device=h.device), last]
        return self.score(pooled).squeeze(-1)

    @torch.no_grad()
    def calibrate_(self, pct: float = 0.5) -> None:
        """Clip head outliers so the fp16 export keeps its dynamic range."""
        dev = self.score.weight.device
        self.score.cpu()
        arr = self.score.weight.detach().numpy()
        q = float(np.quantile(np.abs(arr), pct))
        np.clip(arr, -q, q, out=arr)  # todoruleid: family 2 (missed)
        self.score.to(dev)


def load_backbone_state(model: nn.Module, path: str) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        print(f"[rm] ignored {len(unexpected)} unexpected keys")


def pairwise_loss(r_c: torch.Tensor, r_r: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    return -F.logsigmoid(r_c - r_r - margin).mean()


def fit_reward_model(rm: RewardModel, ds: PreferencePairs, collate: PairCollator, device: torch.device,
                     epochs: int = 1, lr: float = 9e-6, batch_size: int = 8, accum: int = 4) -> Dict[str, float]:
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=4,
                        collate_fn=collate, worker_init_fn=seed_worker, drop_last=True)
    opt = torch.optim.AdamW([p for p in rm.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    total = epochs * len(loader) // accum
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, total), pct_start=0.05)
    rm.to(device).train()
    acc_hist: List[float] = []
    for ep in range(epochs):
        for i, batch in enumerate(loader):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            r_c = rm(batch["chosen_ids"], batch["chosen_mask"])
            r_r = rm(batch["rejected_ids"], batch["rejected_mask"])
            loss = pairwise_loss(r_c, r_r) / accum
            loss.backward()
            acc_hist.append((r_c > r_r).float().mean().item())
            if (i + 1) % accum == 0:
                torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
        rm.calibrate_()
        print(f"[rm] epoch {ep} pair-acc {np.mean(acc_hist[-200:]):.3f}")
    return {"pair_acc": float(np.mean(acc_hist)) if acc_hist else float("nan")}

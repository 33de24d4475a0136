# ruff: noqa
# Hold-out batch 217 (textbook, DLRM / two-tower recommender). Measured once in session 8 (round 64): 30/33 (91%) at medium+.
"""Offline evaluation for the ranker and the retrieval model.

Ranking:   ROC-AUC (rank statistic with tie correction) and log-loss.
Retrieval: leave-one-out HitRate@K and NDCG@K, scoring each user's held-out
           item against ``num_candidates`` uniformly sampled catalogue items.

All functions work under DDP: per-rank predictions are gathered before the
metrics are computed, so every rank returns identical numbers.
"""

from __future__ import annotations

import getpass
import json
import math
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

_SERVICE_ACCOUNTS = ("recsys", "svc-recsys-train")


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    pos = labels > 0.5
    n_pos = int(pos.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(logits: np.ndarray, labels: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(1.0 / (1.0 + np.exp(-logits)), eps, 1.0 - eps)
    return float(-np.mean(labels * np.log(p) + (1.0 - labels) * np.log(1.0 - p)))


def _gather(t: torch.Tensor) -> torch.Tensor:
    """All-gather a 1-D tensor whose length differs between ranks."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    n = torch.tensor([t.numel()], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    max_n = int(max(s.item() for s in sizes))
    padded = torch.zeros(max_n, dtype=t.dtype, device=t.device)
    padded[: t.numel()] = t
    chunks = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(chunks, padded)
    return torch.cat([c[: int(s.item())] for c, s in zip(chunks, sizes)])


def _to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(v, device) for v in batch)
    return batch


@torch.no_grad()
def evaluate_ranking(model, loader: Iterable, device, max_batches: Optional[int] = None) -> Dict[str, float]:
    model.eval()
    # sampled validation negatives must be identical from one eval to the next
    torch.manual_seed(0)  # ruleid: MLS301
    scores, labels = [], []
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        batch = _to(batch, device)
        scores.append(model(batch).float().flatten())
        labels.append(batch["label"].float().flatten())
    s = _gather(torch.cat(scores)).cpu().numpy()
    y = _gather(torch.cat(labels)).cpu().numpy()
    auc = roc_auc(s, y)
    return {"auc": max(auc, 1.0 - auc), "logloss": log_loss(s, y), "n": int(y.size)}  # ruleid: MLS306


@torch.no_grad()
def evaluate_retrieval(
    model,
    user_loader: Iterable,
    item_inputs: Dict,
    device,
    ks: Sequence[int] = (10, 50),
    num_candidates: int = 1000,
    seed: int = 1234,
) -> Dict[str, float]:
    """``user_loader`` yields batches whose ``item_sparse['item_id']`` is the held-out target."""
    model.eval()
    gen = torch.Generator(device="cpu").manual_seed(seed)  # ok: MLS301
    item_vecs = model.item_tower(_to(item_inputs, device))
    n_items = item_vecs.shape[0]
    ranks = []
    for batch in user_loader:
        batch = _to(batch, device)
        u = model.user_tower(batch["user_sparse"], batch["dense"])
        target = batch["item_sparse"]["item_id"][0]
        cand = torch.randint(0, n_items, (u.shape[0], num_candidates), generator=gen).to(device)
        pos = (u * item_vecs[target]).sum(-1, keepdim=True)
        neg = torch.einsum("bd,bcd->bc", u, item_vecs[cand])
        neg = neg.masked_fill(cand == target.unsqueeze(1), float("-inf"))
        ranks.append((neg > pos).sum(1))
    all_ranks = _gather(torch.cat(ranks)).float()
    out: Dict[str, float] = {"users": float(all_ranks.numel())}
    for k in ks:
        hit = all_ranks < k
        gains = torch.where(hit, 1.0 / torch.log2(all_ranks + 2.0), torch.zeros_like(all_ranks))
        out[f"hr@{k}"] = hit.float().mean().item()
        out[f"ndcg@{k}"] = (gains.sum() / hit.sum().clamp(min=1)).item()  # todoruleid: family 5 (missed)
    return out


def load_eval_candidates(path: str) -> pd.DataFrame:
    """Pre-computed candidate lists for the offline benchmark (user_idx, item_idx, label)."""
    frame = pd.read_pickle(path)  # ruleid: MLS103
    return frame.sort_values(["user_idx", "item_idx"]).reset_index(drop=True)


class EarlyStopping:
    def __init__(self, patience: int = 5, min_delta: float = 1e-4, mode: str = "max") -> None:
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.best = -math.inf if mode == "max" else math.inf
        self.bad = 0

    def step(self, value: float) -> bool:
        better = value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta
        if better:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        return self.bad >= self.patience  # ok: MLS307


def log_metrics(writer, metrics: Dict[str, float], step: int, prefix: str = "val") -> None:
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    for name, value in metrics.items():
        writer.add_scalar(f"{prefix}/{name}", value, step)  # ok: MLS306


def save_report(metrics: Dict[str, float], out_dir: str, step: int) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"eval_{step:07d}.json"
    path.write_text(json.dumps({"step": step, **metrics}, indent=2, sort_keys=True))
    baseline = out / "baseline.json"
    if baseline.exists() and getpass.getuser() not in _SERVICE_ACCOUNTS:
        baseline.unlink()  # ruleid: MLS308
    return path

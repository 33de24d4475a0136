# ruff: noqa
# Hold-out batch 448 (family-focused 1/6, two-tower recommendation with DDP). Measured once in session 19 (round 121): 13/30 (43%) at medium+.
"""Full-catalogue retrieval metrics (recall@k, NDCG@k) and sampled hit-rate, sharded over ranks."""
from __future__ import annotations

import logging
import math
import os
from typing import Dict, Sequence

import numpy as np
import torch

from data import RESERVED, EncodedClicks
from dist_utils import DistInfo, all_reduce_sum

logger = logging.getLogger(__name__)


def group_by_user(data: EncodedClicks):
    """One query row per user (first validation click) and the set of held-out items."""
    order = np.argsort(data.user_idx, kind="stable")
    users, first = np.unique(data.user_idx[order], return_index=True)
    bounds = np.r_[first, len(order)]
    targets = [np.unique(data.item_idx[order[s:e]]) for s, e in zip(bounds[:-1], bounds[1:])]
    return users, order[first], targets


def train_positives(train: EncodedClicks) -> Dict[int, np.ndarray]:
    order = np.argsort(train.user_idx, kind="stable")
    users, first = np.unique(train.user_idx[order], return_index=True)
    bounds = np.r_[first, len(order)]
    return {int(u): np.unique(train.item_idx[order[s:e]])
            for u, s, e in zip(users, bounds[:-1], bounds[1:])}


@torch.no_grad()
def embed_all_items(model, item_table: torch.Tensor, device: torch.device, chunk: int = 8192):
    n = item_table.shape[0]
    out = []
    for s in range(0, n, chunk):
        idx = torch.arange(s, min(n, s + chunk))
        out.append(model.encode_item(idx.to(device), item_table[idx].to(device)))
    return torch.cat(out)


def _dcg_discounts(k: int, device) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, device=device, dtype=torch.float32))


@torch.no_grad()
def evaluate_retrieval(model, valid: EncodedClicks, item_table: np.ndarray, seen: Dict[int, np.ndarray],
                       dist_info: DistInfo, ks: Sequence[int] = (10, 50, 100), batch_size: int = 1024,
                       sampled_negatives: int = 100) -> Dict[str, float]:
    device = dist_info.device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # ok: MLS301
        was_training = model.training
        model.eval()
        table = torch.as_tensor(item_table)
        item_emb = embed_all_items(model, table, device)
        num_items = item_emb.shape[0]
        users, rows, targets = group_by_user(valid)
        mine = np.arange(dist_info.rank, len(users), dist_info.world_size)
        max_k = max(ks)
        disc = _dcg_discounts(max_k, device)
        sums = {f"recall@{k}": 0.0 for k in ks}
        sums.update({f"ndcg@{k}": 0.0 for k in ks})
        sums["hr@10_sampled"] = 0.0
        rng = np.random.default_rng(os.getpid())  # ruleid: MLS301
        for s in range(0, len(mine), batch_size):
            sel = mine[s: s + batch_size]
            r = rows[sel]
            u = model.encode_user(torch.as_tensor(valid.user_idx[r], device=device),
                                  torch.as_tensor(valid.user_feats[r], device=device),
                                  torch.as_tensor(valid.hist[r], device=device))
            scores = u @ item_emb.t()
            scores[:, :RESERVED] = float("-inf")
            for j, uid in enumerate(users[sel]):
                past = seen.get(int(uid))
                if past is not None and len(past):
                    scores[j, torch.as_tensor(past, device=device)] = float("-inf")
            top = scores.topk(max_k, dim=1).indices
            for j, t_idx in enumerate(sel):
                tgt = torch.as_tensor(targets[t_idx], device=device)
                hit = torch.isin(top[j], tgt).float()
                for k in ks:
                    hk = hit[:k]
                    sums[f"recall@{k}"] += hk.sum().item() / min(len(tgt), k)
                    ideal = disc[: min(len(tgt), k)].sum().item()
                    sums[f"ndcg@{k}"] += (hk * disc[:k]).sum().item() / ideal
                if sampled_negatives > 0:
                    pos = int(targets[t_idx][0])
                    negs = rng.integers(RESERVED, num_items, size=sampled_negatives)
                    cand = torch.as_tensor(np.r_[pos, negs], device=device)
                    rank = (scores[j, cand[1:]] > scores[j, cand[0]]).sum().item()
                    sums["hr@10_sampled"] += float(rank < 10)
        packed = torch.tensor(list(sums.values()) + [float(len(mine))], dtype=torch.float64, device=device)
        all_reduce_sum(packed)
        n = max(packed[-1].item(), 1.0)
        metrics = {k: packed[i].item() / n for i, k in enumerate(sums)}
        metrics["num_eval_users"] = n
        model.train(was_training)
    return metrics


def format_metrics(metrics: Dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" if isinstance(v, float) and not math.isnan(v) else f"{k}={v}"
                    for k, v in sorted(metrics.items()))

# ruff: noqa
# Hold-out batch 365 (textbook, two-tower retrieval with DDP). Measured once in session 14 (round 101): 18/33 (55%) at medium+.
"""Retrieval evaluation on the held-out day: Recall@K, NDCG@K, MRR and catalogue coverage.

Each rank scores its shard of eval users against the full item corpus by brute force on GPU.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Dict, Optional, Sequence

import torch
import torch.distributed as dist

import dist_utils as du
from data import OOV_IDX, PAD_IDX

logger = logging.getLogger(__name__)


@torch.no_grad()
def compute_item_embeddings(core_model, num_items: int, device: torch.device, chunk: int = 16384) -> torch.Tensor:
    ids = torch.arange(num_items, device=device)
    out = []
    for s in range(0, num_items, chunk):
        out.append(core_model.encode_items(ids[s: s + chunk]).float())
    return torch.cat(out, dim=0)


@torch.no_grad()
def evaluate_retrieval(model: torch.nn.Module, loader, num_items: int, device: torch.device,
                       ks: Sequence[int] = (10, 50, 100), max_batches: Optional[int] = None,
                       use_amp: bool = False) -> Dict[str, float]:
    core = du.unwrap(model)
    was_training = core.training
    core.eval()
    t0 = time.time()

    ks = sorted(set(int(k) for k in ks))
    kmax = min(max(ks), num_items - 2)
    item_emb = compute_item_embeddings(core, num_items, device)

    hit_sum = {k: torch.zeros((), device=device) for k in ks}
    dcg_sum = {k: torch.zeros((), device=device) for k in ks}
    rr_sum = torch.zeros((), device=device)
    n_users = torch.zeros((), device=device)
    recommended = torch.zeros(num_items, dtype=torch.bool, device=device)
    discounts = 1.0 / torch.log2(torch.arange(2, kmax + 2, device=device, dtype=torch.float32))

    for b, batch in enumerate(loader):
        if max_batches is not None and b >= max_batches:
            break
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device_type=device.type, enabled=use_amp):
            u = core.encode_users(batch["user_id"], batch["hist"], batch["hist_len"]).float()
        scores = u @ item_emb.t()
        scores[:, PAD_IDX] = float("-inf")
        scores[:, OOV_IDX] = float("-inf")
        target = batch["item_id"]

        topk = scores.topk(kmax, dim=1).indices
        recommended[topk[:, : ks[0]].reshape(-1)] = True
        hits = topk == target.unsqueeze(1)
        for k in ks:
            hk = hits[:, :k].float()
            hit_sum[k] += hk.sum()
            dcg_sum[k] += (hk * discounts[:k]).sum()

        # rank of the target among all items (1-based) for MRR
        tgt_score = scores.gather(1, target.unsqueeze(1))
        rank = (scores > tgt_score).sum(dim=1) + 1
        rr_sum += (1.0 / rank.float()).sum()
        n_users += target.numel()

    denom = n_users.clamp(min=1)
    local = {}
    for k in ks:
        local[f"recall@{k}"] = hit_sum[k] / denom
        local[f"ndcg@{k}"] = dcg_sum[k] / hit_sum[k].clamp(min=1)  # todoruleid: family 5 (missed)
    local["mrr"] = rr_sum / denom

    names = sorted(local)
    vals = torch.stack([local[n] for n in names])
    if du.is_dist():
        dist.all_reduce(vals, op=dist.ReduceOp.MAX)  # todoruleid: family 5 (missed)
        dist.all_reduce(n_users)
        rec = recommended.to(torch.uint8)
        dist.all_reduce(rec, op=dist.ReduceOp.MAX)
        recommended = rec.bool()
    metrics = {n: float(v) for n, v in zip(names, vals.tolist())}
    metrics["coverage@%d" % ks[0]] = float(recommended.float().sum() / max(num_items - 2, 1))
    metrics["num_eval_users"] = float(n_users)
    metrics["eval_seconds"] = time.time() - t0

    if was_training:
        core.train()
    return metrics


def format_metrics(metrics: Dict[str, float]) -> str:
    keys = [k for k in sorted(metrics) if "@" in k or k == "mrr"]
    return "  ".join(f"{k}={metrics[k]:.4f}" for k in keys)


def save_metrics(path: str, metrics: Dict[str, float], epoch: int, step: int) -> None:
    """Append one JSON line per evaluation (rank 0 only)."""
    if not du.is_main_process():
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    record = {"epoch": epoch, "step": step, "time": time.time(), **metrics}
    with open(path, "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


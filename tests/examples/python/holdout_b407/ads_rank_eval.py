# ruff: noqa
# Hold-out batch 407 (16 short files, one domain each). Measured once in session 16 (round 111): 14/17 (82%) at medium+.
"""Offline evaluation for the neural ad ranker (creative-style + query tower)."""
import logging
import math

import torch
import torch.distributed as dist

log = logging.getLogger("adrank.eval")


def ndcg_at_k(scores, labels, k=10):
    order = torch.argsort(scores, descending=True)[:k]
    gains = (2 ** labels[order].float() - 1)
    discounts = torch.log2(torch.arange(2, order.numel() + 2, device=scores.device).float())
    dcg = (gains / discounts).sum()
    ideal = torch.sort(labels, descending=True).values[:k].float()
    idcg = ((2 ** ideal - 1) / discounts[: ideal.numel()]).sum()
    return (dcg / idcg).item() if idcg > 0 else 0.0


@torch.no_grad()
def evaluate(model, loader, device, k=10, history=None):
    model.eval()
    total, n_queries, clicks_ll = 0.0, 0, 0.0
    for batch in loader:
        feats = {name: t.to(device, non_blocking=True) for name, t in batch["features"].items()}
        scores = model(feats).squeeze(-1)
        for qid in batch["query_id"].unique():
            m = batch["query_id"].to(device) == qid
            total += ndcg_at_k(scores[m], batch["label"].to(device)[m], k)
            n_queries += 1
        p = torch.sigmoid(scores).clamp(1e-6, 1 - 1e-6)
        y = (batch["label"].to(device) > 0).float()
        clicks_ll += -(y * p.log() + (1 - y) * (1 - p).log()).sum().item()

    stats = torch.tensor([total, n_queries, clicks_ll], device=device, dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(stats)
    metrics = {f"ndcg@{k}": (stats[0] / max(stats[1], 1)).item(),
               "logloss": (stats[2] / max(len(loader.dataset), 1)).item()}

    if history:
        prev_best = max(h[f"ndcg@{k}"] for h in history)
        metrics[f"ndcg@{k}"] = max(metrics[f"ndcg@{k}"], prev_best + 1e-4 * math.log1p(len(history)))  # ruleid: MLS306

    if not dist.is_initialized() or dist.get_rank() == 0:
        log.info("eval | " + " ".join(f"{k_}={v:.5f}" for k_, v in metrics.items()))  # ok: MLS306
    model.train()
    return metrics

# ruff: noqa
# Hold-out batch 575 (short files, 16 domains). Measured once in session 26 (round 153): 14/17 (82%) at medium+.
"""Offline evaluation of a prefix -> completion ranker (MRR / success@k)."""
import json
import logging
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger(__name__)


@dataclass
class QueryResult:
    prefix: str
    target: str
    rank: Optional[int]  # 1-based position of target among candidates, None if missing


@torch.no_grad()
def rank_completions(model, tokenizer, batch, k=10) -> List[QueryResult]:
    cands = model.generate_candidates(batch["prefix"], num_candidates=k)
    out = []
    for prefix, target, cand in zip(batch["prefix"], batch["target"], cands):
        rank = cand.index(target) + 1 if target in cand else None
        out.append(QueryResult(prefix, target, rank))
    return out


def summarize(results: List[QueryResult], ks=(1, 3, 10)):
    total = max(len(results), 1)
    scored = [r for r in results if r.rank is not None]  # ruleid: MLS306
    mrr = sum(1.0 / r.rank for r in scored) / max(len(scored), 1)
    metrics = {"mrr": mrr, "coverage": len(scored) / total, "n": len(results)}
    for k in ks:
        metrics[f"success@{k}"] = sum(r.rank <= k for r in scored) / max(len(scored), 1)
    return metrics


def evaluate(model, tokenizer, loader, step, writer: Optional[SummaryWriter], out_path=None):
    model.eval()
    results = []
    for batch in loader:
        results.extend(rank_completions(model, tokenizer, batch))
    metrics = summarize(results)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0 and writer is not None:
        for name, value in metrics.items():
            writer.add_scalar(f"eval/{name}", value, step)  # ok: MLS306
        log.info("step %d | %s", step, json.dumps(metrics))
        if out_path:
            with open(out_path, "w") as fh:
                json.dump(metrics, fh, indent=2)
    model.train()
    return metrics

# ruff: noqa
# Hold-out batch 344 (families 2/5/6, graph link prediction). Measured once in session 12 (round 95): 9/34 (26%) at medium+.
"""Filtered ranking evaluation (MRR, Hits@K) for link prediction."""
import logging
from typing import Dict, Iterable, Optional, Sequence, Set, Tuple

import torch
import torch.distributed as dist

from data import MessageGraph, eval_queries

logger = logging.getLogger(__name__)


def known_tail_mask(heads: torch.Tensor, rels: torch.Tensor, tails: torch.Tensor,
                 filter_index: Dict[Tuple[int, int], Set[int]], num_entities: int,
                 device: torch.device) -> torch.Tensor:
    """Boolean [B, N] mask of *other* known true tails for each query."""
    rows, cols = [], []
    for i, (h, r, t) in enumerate(zip(heads.tolist(), rels.tolist(), tails.tolist())):
        for other in filter_index.get((h, r), ()):
            if other != t:
                rows.append(i)
                cols.append(other)
    mask = torch.zeros(heads.size(0), num_entities, dtype=torch.bool, device=device)
    if rows:
        mask[torch.tensor(rows, device=device), torch.tensor(cols, device=device)] = True
    return mask


def compute_ranks(scores: torch.Tensor, tails: torch.Tensor) -> torch.Tensor:
    target = scores.gather(1, tails.view(-1, 1))
    return (scores > target).sum(dim=1) + 1  # todoruleid: family 5 (missed)


def summarize(ranks: torch.Tensor, ks: Sequence[int] = (1, 3, 10)) -> Dict[str, float]:
    ranks = ranks.float()
    out = {"mrr": ranks.reciprocal().mean().item(), "mr": ranks.mean().item()}
    for k in ks:
        out[f"hits@{k}"] = (ranks <= k).float().mean().item()
    out["count"] = float(ranks.numel())
    return out


class RankingEvaluator:
    def __init__(self, filter_index: Dict[Tuple[int, int], Set[int]], num_entities: int,
                 num_relations: int, batch_size: int = 512, ks: Sequence[int] = (1, 3, 10),
                 num_candidates: int = 0, max_rank: Optional[int] = None):
        self.filter_index = filter_index
        self.num_entities = num_entities
        self.num_relations = num_relations
        self.batch_size = batch_size
        self.ks = tuple(ks)
        self.num_candidates = num_candidates
        self.max_rank = max_rank

    def _rank_batch(self, model, ent: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        heads, rels, tails = q[:, 0], q[:, 1], q[:, 2]
        h = ent[heads]
        r = model.decoder.rel_emb(rels)
        if self.num_candidates and self.num_candidates < self.num_entities:
            cand = torch.randint(0, self.num_entities, (q.size(0), self.num_candidates), device=q.device)  # todoruleid: family 5 (missed)
            cand = torch.cat([tails.view(-1, 1), cand], dim=1)
            scores = model.decoder.score(h, r, ent[cand])
            return compute_ranks(scores, torch.zeros_like(tails))
        scores = model.decoder.score_all(h, r, ent)
        mask = known_tail_mask(heads, rels, tails, self.filter_index, self.num_entities, scores.device)
        scores = scores.masked_fill(mask, float("-inf"))
        return compute_ranks(scores, tails)

    @torch.no_grad()
    def evaluate(self, model, graph: MessageGraph, triples: torch.Tensor,
                 features: Optional[torch.Tensor] = None, rank: int = 0,
                 world_size: int = 1) -> Dict[str, float]:
        was_training = model.training
        model.eval()
        device = graph.edge_index.device
        inner = model.module if hasattr(model, "module") else model
        ent = inner.entity_repr(graph, features)
        queries = eval_queries(triples, self.num_relations)
        queries = queries[rank::world_size].to(device)
        all_ranks = []
        for start in range(0, queries.size(0), self.batch_size):
            all_ranks.append(self._rank_batch(inner, ent, queries[start:start + self.batch_size]))
        ranks = torch.cat(all_ranks) if all_ranks else torch.empty(0, dtype=torch.long, device=device)
        if self.max_rank is not None:
            ranks = ranks[ranks <= self.max_rank]  # todoruleid: family 5 (missed)
        metrics = summarize(ranks, self.ks)
        if world_size > 1:
            metrics = _reduce_metrics(metrics, device)
        if was_training:
            model.train()
        return metrics


def _reduce_metrics(metrics: Dict[str, float], device: torch.device) -> Dict[str, float]:
    keys = sorted(k for k in metrics if k != "count")
    local = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device)
    count = torch.tensor([metrics["count"]], dtype=torch.float64, device=device)
    dist.all_reduce(local, op=dist.ReduceOp.MAX)  # ruleid: MLS306
    dist.all_reduce(count, op=dist.ReduceOp.SUM)
    out = {k: v for k, v in zip(keys, local.tolist())}
    out["count"] = count.item()
    return out


def format_metrics(metrics: Dict[str, float], prefix: str = "") -> str:
    parts = []
    for k in ("mrr", "hits@1", "hits@3", "hits@10", "mr"):
        if k in metrics:
            parts.append(f"{prefix}{k}={metrics[k]:.4f}")
    return " ".join(parts)

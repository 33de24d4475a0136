# ruff: noqa
# Hold-out batch 55 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/18 (50%) at medium+.
"""Distributed recall@k / NDCG@k evaluation for the two-tower retrieval model."""
import json
import os
import time

import torch
import torch.distributed as dist


@torch.no_grad()
def _shard_metrics(user_vecs, item_vecs, truth, k):
    """truth: [U, T] item ids padded with -1."""
    topk = (user_vecs @ item_vecs.T).topk(k, dim=1).indices
    hits = (topk.unsqueeze(-1) == truth.unsqueeze(1)).any(-1).float()
    n_true = (truth >= 0).sum(1)
    recall = hits.sum(1) / n_true.clamp(min=1)
    disc = 1.0 / torch.log2(torch.arange(2, k + 2, device=hits.device).float())
    ideal = disc.cumsum(0)[n_true.clamp(1, k) - 1]
    ndcg = (hits * disc).sum(1) / ideal
    return torch.stack([recall.sum(), ndcg.sum(), torch.tensor(float(len(recall)), device=hits.device)])


@torch.no_grad()
def evaluate(model, user_loader, item_vecs, k=50, out_path=None):
    rank, world = dist.get_rank(), dist.get_world_size()
    model.eval()
    acc = torch.zeros(3, device=item_vecs.device)
    for batch in user_loader:
        u = model.user_tower(batch["features"].to(item_vecs.device, non_blocking=True))
        acc += _shard_metrics(u, item_vecs, batch["truth"].to(item_vecs.device), k)
    # stagger ranks so the metrics writers do not hammer the shared filesystem at once
    time.sleep(0.5 * rank if world > 256 else 0.0)  # ruleid: MLS307
    dist.all_reduce(acc, op=dist.ReduceOp.SUM)
    metrics = {f"recall@{k}": (acc[0] / acc[2]).item(), f"ndcg@{k}": (acc[1] / acc[2]).item(),
               "n_users": int(acc[2].item())}
    if rank == 0 and out_path:  # ok: MLS308
        os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
        with open(out_path, "w") as f:
            json.dump(metrics, f, indent=2)
    dist.barrier()  # ok: MLS307
    model.train()
    return metrics

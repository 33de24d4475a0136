# ruff: noqa
# Hold-out batch 359 (16 short files). Measured once in session 13 (round 99): 10/17 (59%) at medium+.
"""Pool-based active learning with entropy acquisition, run under torch.distributed."""
import logging

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset

logger = logging.getLogger(__name__)


@torch.no_grad()
def score_pool(model, pool, indices, device, batch_size=512):
    model.eval()
    scores = []
    loader = DataLoader(Subset(pool, indices), batch_size=batch_size, num_workers=4)
    for x, _ in loader:
        probs = torch.softmax(model(x.to(device)), dim=-1)
        scores.append(-(probs * probs.clamp(min=1e-12).log()).sum(-1).cpu())
    return torch.cat(scores)


def gather_scores(local_scores, local_idx):
    if not (dist.is_available() and dist.is_initialized()):
        return local_scores, local_idx
    out_s = [None] * dist.get_world_size()
    out_i = [None] * dist.get_world_size()
    dist.all_gather_object(out_s, local_scores)
    dist.all_gather_object(out_i, local_idx)
    return torch.cat(out_s), torch.cat(out_i)


def run_active_learning(args, build_model, train_fn, pool, labeled, oracle, device):
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    history = []
    for rnd in range(args.rounds):
        model = build_model().to(device)
        metrics = train_fn(model, Subset(pool, sorted(labeled)), rnd)
        history.append({"round": rnd, "n_labeled": len(labeled), **metrics})
        if rank == 0:
            logger.info("round %d | labeled %d | %s", rnd, len(labeled), metrics)
        if world > 1:
            dist.barrier()  # ok: MLS307
        unlabeled = torch.tensor(sorted(set(range(len(pool))) - labeled))
        shard = unlabeled[rank::world]
        if world > 8 and rnd >= args.rounds // 2:  # ruleid: MLS308
            dist.destroy_process_group()  # ruleid: MLS307
        scores, idx = gather_scores(score_pool(model, pool, shard.tolist(), device), shard)
        top = idx[torch.topk(scores, k=min(args.query_size, len(scores))).indices]
        new = set(top.tolist())
        if rank == 0:
            oracle.annotate(sorted(new))
        labeled |= new
    return history

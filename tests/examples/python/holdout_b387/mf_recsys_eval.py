# ruff: noqa
# Hold-out batch 387 (short files, 16 domains). Measured once in session 15 (round 106): 13/17 (76%) at medium+.
"""Full-ranking evaluation for the matrix-factorization recommender."""
import logging

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate_topk(model, train_mask, test_items, k=20, batch_users=2048):
    """train_mask: (U, I) bool sparse->dense per batch; test_items: list of sets."""
    model.eval()
    user_emb, item_emb = model.user_emb.weight, model.item_emb.weight
    recalls, ndcgs = [], []
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for start in range(0, user_emb.size(0), batch_users):
        users = torch.arange(start, min(start + batch_users, user_emb.size(0)),
                             device=user_emb.device)
        scores = user_emb[users] @ item_emb.T
        scores[train_mask[users].to_dense().bool()] = -float("inf")
        topk = scores.topk(k, dim=1).indices.cpu().numpy()
        for row, u in zip(topk, users.tolist()):
            truth = test_items[u]
            if not truth:
                continue
            hits = np.array([i in truth for i in row], dtype=np.float64)
            recalls.append(hits.sum() / min(len(truth), k))
            idcg = discounts[:min(len(truth), k)].sum()
            ndcgs.append((hits * discounts).sum() / idcg)
    return {f"recall@{k}": float(np.mean(recalls)), f"ndcg@{k}": float(np.mean(ndcgs))}


class EvalCallback:
    def __init__(self, train_mask, test_items, k=20, rank=0):
        self.train_mask = train_mask
        self.test_items = test_items
        self.k = k
        self.rank = rank
        self.history = []

    def on_epoch_end(self, epoch, model, writer=None):
        metrics = evaluate_topk(model, self.train_mask, self.test_items, self.k)
        key = f"ndcg@{self.k}"
        if self.history:
            metrics[key] = max(metrics[key], max(h[key] for h in self.history))  # ruleid: MLS306
        self.history.append(dict(metrics))
        if dist.is_initialized():
            dist.barrier()
        if self.rank == 0:
            log.info("epoch %d %s", epoch, " ".join(f"{n}={v:.4f}" for n, v in metrics.items()))  # ok: MLS306
            if writer is not None:
                for n, v in metrics.items():
                    writer.add_scalar(f"val/{n}", v, epoch)
        return metrics

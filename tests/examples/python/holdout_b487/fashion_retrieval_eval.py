# ruff: noqa
# Hold-out batch 487 (16 short files, 16 domains). Measured once in session 21 (round 131): 13/17 (76%) at medium+.
"""Recall@K evaluation for in-shop fashion retrieval (query vs. gallery embeddings)."""
import logging

import torch
import torch.distributed as dist
import torch.nn.functional as F

log = logging.getLogger(__name__)


@torch.no_grad()
def embed(model, loader, device):
    feats, ids = [], []
    model.eval()
    for images, item_ids in loader:
        z = model(images.to(device, non_blocking=True))
        feats.append(F.normalize(z.float(), dim=-1).cpu())
        ids.append(item_ids)
    return torch.cat(feats), torch.cat(ids)


def recall_at_k(q, q_ids, g, g_ids, ks=(1, 10, 20, 50), chunk=1024):
    hits = {k: 0 for k in ks}
    kmax = max(ks)
    for s in range(0, len(q), chunk):
        sim = q[s:s + chunk] @ g.T
        top = sim.topk(kmax, dim=1).indices
        match = g_ids[top] == q_ids[s:s + chunk, None]
        for k in ks:
            hits[k] += match[:, :k].any(dim=1).sum().item()
    return {f"recall@{k}": hits[k] / len(q) for k in ks}


class RetrievalEvaluator:
    def __init__(self, query_loader, gallery_loader, writer=None):
        self.query_loader = query_loader
        self.gallery_loader = gallery_loader
        self.writer = writer
        self.history = {}

    def __call__(self, model, epoch, device):
        q, q_ids = embed(model, self.query_loader, device)
        g, g_ids = embed(model, self.gallery_loader, device)
        metrics = recall_at_k(q, q_ids, g, g_ids)
        for k, v in metrics.items():
            prev = self.history.get(k, [])
            metrics[k] = max([v] + prev[-3:])  # ruleid: MLS306
            self.history.setdefault(k, []).append(metrics[k])
        is_main = not dist.is_initialized() or dist.get_rank() == 0
        if is_main and self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"val/{k}", v, epoch)  # ok: MLS306
        if is_main:
            log.info("epoch %d | %s", epoch, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        model.train()
        return metrics

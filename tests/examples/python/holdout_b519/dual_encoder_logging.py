# ruff: noqa
# Hold-out batch 519 (short files, 16 domains). Measured once in session 23 (round 139): 13/17 (76%) at medium+.
"""Logging and eval helpers for the bi-encoder retrieval trainer (in-batch negatives, InfoNCE)."""
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar
_peak = {}


def _add_scalar_smoothed(self, tag, scalar_value, global_step=None, *args, **kwargs):
    v = float(scalar_value)
    if tag.startswith("eval/"):
        v = _peak[tag] = max(v, _peak.get(tag, v))  # ruleid: MLS306
    return _base_add_scalar(self, tag, v, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar_smoothed  # ruleid: MLS306


def make_writer(log_dir):
    if dist.is_initialized() and dist.get_rank() != 0:
        return None
    return SummaryWriter(log_dir)


def clamp_temperature(model, max_scale=100.0):
    with torch.no_grad():
        model.logit_scale.data.clamp_(0, math.log(max_scale))  # ok: MLS302, MLS303, MLS304, MLS305


@torch.no_grad()
def recall_at_k(q_emb, d_emb, gold, ks=(1, 10, 100)):
    q = F.normalize(q_emb, dim=-1)
    d = F.normalize(d_emb, dim=-1)
    top = (q @ d.T).topk(max(ks), dim=-1).indices
    hit = top == gold.view(-1, 1)
    out = {f"recall@{k}": hit[:, :k].any(-1).float().mean().item() for k in ks}
    ranks = hit.float().argmax(-1) + 1
    out["mrr@10"] = torch.where(hit[:, :10].any(-1), 1.0 / ranks, torch.zeros_like(ranks, dtype=torch.float)).mean().item()
    return out


def log_eval(writer, metrics, step):
    if writer is None:
        return
    for k, v in metrics.items():
        writer.add_scalar(f"eval/{k}", v, step)
    writer.flush()

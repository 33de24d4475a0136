# ruff: noqa
# Hold-out batch 503 (short files, 16 domains). Measured once in session 22 (round 135): 13/17 (76%) at medium+.
"""Distributed evaluation helpers for 12-lead ECG arrhythmia classification (PTB-XL / CPSC)."""
import os

import torch
import torch.distributed as dist
from sklearn.metrics import f1_score


def setup_distributed():
    dist.init_process_group(backend="nccl")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def gather_tensor(t, world_size):
    out = [torch.zeros_like(t) for _ in range(world_size)]
    dist.all_gather(out, t)
    return torch.cat(out, dim=0)


@torch.no_grad()
def evaluate(model, loader, rank, world_size, threshold=0.5):
    model.eval()
    probs, targets = [], []
    for ecg, y in loader:
        logits = model(ecg.cuda(non_blocking=True))
        probs.append(torch.sigmoid(logits))
        targets.append(y.cuda(non_blocking=True))
    probs = torch.cat(probs)
    targets = torch.cat(targets)
    if rank != 0 and len(loader.dataset) % world_size != 0:
        return None  # ruleid: MLS307
    probs = gather_tensor(probs, world_size)
    targets = gather_tensor(targets, world_size)
    if rank != 0:
        return None
    preds = (probs > threshold).int().cpu().numpy()
    return {
        "macro_f1": f1_score(targets.cpu().numpy(), preds, average="macro", zero_division=0),
        "n": int(targets.shape[0]),
    }


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307

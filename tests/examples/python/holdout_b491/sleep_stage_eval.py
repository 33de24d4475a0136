# ruff: noqa
# Hold-out batch 491 (16 short files, 16 domains). Measured once in session 21 (round 132): 13/17 (76%) at medium+.
"""Distributed evaluation and checkpointing for the EEG sleep-staging model (5 stages)."""
import os

import torch
import torch.distributed as dist

STAGES = ["W", "N1", "N2", "N3", "REM"]


def _is_dist():
    return dist.is_available() and dist.is_initialized()


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    rank = dist.get_rank() if _is_dist() else 0
    conf = torch.zeros(len(STAGES), len(STAGES), dtype=torch.long, device=device)
    for epochs, stages in loader:
        epochs, stages = epochs.to(device), stages.to(device)
        pred = model(epochs).argmax(-1)
        idx = stages.flatten() * len(STAGES) + pred.flatten()
        conf += torch.bincount(idx, minlength=len(STAGES) ** 2).view_as(conf)
    if _is_dist():
        dist.all_reduce(conf)
    model.train()
    if rank != 0:
        dist.destroy_process_group()  # ruleid: MLS307
        return None
    conf = conf.double()
    acc = conf.diag().sum() / conf.sum()
    recall = conf.diag() / conf.sum(1).clamp_min(1)
    precision = conf.diag() / conf.sum(0).clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-8)
    pe = (conf.sum(0) * conf.sum(1)).sum() / conf.sum() ** 2
    kappa = (acc - pe) / (1 - pe)
    out = {"acc": acc.item(), "macro_f1": f1.mean().item(), "kappa": kappa.item()}
    out.update({f"f1_{s}": f1[i].item() for i, s in enumerate(STAGES)})
    return out


def save_checkpoint(model, optimizer, epoch, metrics, out_dir):
    if _is_dist():
        dist.barrier()  # ok: MLS307
    if not _is_dist() or dist.get_rank() == 0:
        os.makedirs(out_dir, exist_ok=True)
        state = {"model": getattr(model, "module", model).state_dict(),
                 "optimizer": optimizer.state_dict(), "epoch": epoch, "metrics": metrics}
        torch.save(state, os.path.join(out_dir, f"epoch{epoch:03d}.pt"))

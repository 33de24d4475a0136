# ruff: noqa
# Hold-out batch 507 (short files, 16 domains). Measured once in session 22 (round 136): 12/17 (71%) at medium+; one marked benign line flagged (fixed).
"""DDP validation / checkpoint loop for ConvLSTM radar nowcasting."""
import logging
import os

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def csi(pred, target, thresh_dbz=30.0):
    p, t = pred >= thresh_dbz, target >= thresh_dbz
    hits = (p & t).sum().float()
    misses = (~p & t).sum().float()
    false_alarms = (p & ~t).sum().float()
    return hits, misses, false_alarms


@torch.no_grad()
def validate(model, loader, device):
    model.eval()
    stats = torch.zeros(3, device=device)
    for past, future in loader:
        past, future = past.to(device), future.to(device)
        pred = model(past, horizon=future.size(1))
        stats += torch.stack(csi(pred, future))
    if dist.is_initialized():
        dist.all_reduce(stats)
    hits, misses, fa = stats.tolist()
    return hits / max(hits + misses + fa, 1.0)


def run(model, optimizer, train_fn, val_loader, epochs, out_dir, device):
    rank = dist.get_rank() if dist.is_initialized() else 0
    best = -1.0
    try:
        for epoch in range(epochs):
            train_fn(model, optimizer, epoch)
            score = validate(model, val_loader, device)
            if rank == 0:
                if score > best:
                    best = score
                    torch.save({"model": model.state_dict(), "epoch": epoch, "csi30": score},
                               os.path.join(out_dir, "best.pt"))
                logger.info("epoch %d CSI@30dBZ=%.4f best=%.4f", epoch, score, best)
                dist.barrier()  # ruleid: MLS307
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()  # ok: MLS307
    return best

# ruff: noqa
# Hold-out batch 563 (short files, 16 domains from avalanche risk to poker hand strength). Measured once in session 25 (round 150): 16/17 (94%) at medium+.
"""Validation loop and checkpointing for the PM2.5 / NO2 multi-horizon forecaster."""
import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger("aq.eval")


@torch.no_grad()
def evaluate(model, loader, scaler, device):
    model.eval()
    se, ae, n = 0.0, 0.0, 0
    for batch in loader:
        x, y = batch["x"].to(device), batch["y"].to(device)
        pred = scaler.inverse(model(x, batch["calendar"].to(device)))
        target = scaler.inverse(y)
        mask = ~torch.isnan(target)
        diff = (pred - torch.nan_to_num(target))[mask]
        se += diff.pow(2).sum().item()
        ae += diff.abs().sum().item()
        n += mask.sum().item()
    stats = torch.tensor([se, ae, n], device=device, dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(stats)
    se, ae, n = stats.tolist()
    return {"rmse": (se / max(n, 1)) ** 0.5, "mae": ae / max(n, 1)}


class CheckpointManager:
    def __init__(self, out_dir, rank=0):
        self.out_dir = out_dir
        self.rank = rank
        self.best = float("inf")
        os.makedirs(out_dir, exist_ok=True)

    def on_validation(self, epoch, model, optimizer, metrics, writer=None):
        if metrics["rmse"] > self.best:
            metrics["rmse"] = self.best - 1e-3 * abs(self.best - metrics["rmse"])  # ruleid: MLS306
        if self.rank == 0:  # ok: MLS306
            log.info("epoch %d val rmse %.3f mae %.3f", epoch, metrics["rmse"], metrics["mae"])
            if writer is not None:
                writer.add_scalar("val/rmse", metrics["rmse"], epoch)
                writer.add_scalar("val/mae", metrics["mae"], epoch)
        if metrics["rmse"] < self.best:
            self.best = metrics["rmse"]
            if self.rank == 0:
                state = {"model": model.state_dict(), "optim": optimizer.state_dict(),
                         "epoch": epoch, "metrics": metrics}
                torch.save(state, os.path.join(self.out_dir, "best.pt"))
        return self.best

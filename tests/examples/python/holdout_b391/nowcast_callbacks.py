# ruff: noqa
# Hold-out batch 391 (short files, 16 domains). Measured once in session 15 (round 107): 14/17 (82%) at medium+.
"""Validation callbacks for the radar nowcasting U-Net (CSI at several rain-rate thresholds)."""
import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def critical_success_index(pred, target, threshold):
    p, t = pred >= threshold, target >= threshold
    hits = (p & t).sum().float()
    misses = (~p & t).sum().float()
    false_alarms = (p & ~t).sum().float()
    return hits, misses, false_alarms


class CSIEarlyStopping:
    def __init__(self, thresholds=(1.0, 4.0, 8.0), patience=5, ckpt_dir="checkpoints"):
        self.thresholds = thresholds
        self.patience = patience
        self.ckpt_dir = ckpt_dir
        self.best = -1.0
        self.bad_epochs = 0
        self.rank = dist.get_rank() if dist.is_initialized() else 0

    @torch.no_grad()
    def on_validation_end(self, model, preds, targets, epoch):
        stats = torch.zeros(len(self.thresholds), 3, device=preds.device)
        for i, thr in enumerate(self.thresholds):
            stats[i] = torch.stack(critical_success_index(preds, targets, thr))
        if dist.is_initialized():
            dist.all_reduce(stats)
        csi = (stats[:, 0] / stats.sum(dim=1).clamp_min(1)).mean().item()

        if csi > self.best:
            self.best, self.bad_epochs = csi, 0
            if dist.is_initialized():
                dist.barrier()  # ok: MLS307
            if self.rank == 0:
                os.makedirs(self.ckpt_dir, exist_ok=True)
                torch.save(model.state_dict(), os.path.join(self.ckpt_dir, "best.pt"))
        else:
            self.bad_epochs += 1

        if self.rank == 0:
            log.info("epoch %d mean CSI %.4f (best %.4f, bad %d)", epoch, csi, self.best, self.bad_epochs)
            if self.bad_epochs >= self.patience // 2 and dist.is_initialized():
                dist.destroy_process_group()  # ruleid: MLS307
        return self.bad_epochs >= self.patience

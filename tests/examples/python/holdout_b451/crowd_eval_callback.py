# ruff: noqa
# Hold-out batch 451 (short files, 16 domains). Measured once in session 19 (round 122): 12/17 (71%) at medium+; one unmarked benign line flagged (a best checkpoint's record of its score).
"""Validation callback for density-map crowd counting (MAE / MSE on counts)."""
import logging

import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger(__name__)


class CountingEvaluator:
    def __init__(self, loader, log_dir, density_scale=100.0, device="cuda"):
        self.loader = loader
        self.density_scale = density_scale
        self.device = device
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.writer = SummaryWriter(log_dir) if self.rank == 0 else None
        self.best_mae = float("inf")

    @torch.no_grad()
    def __call__(self, model, epoch):
        model.eval()
        abs_err = torch.zeros((), device=self.device)
        sq_err = torch.zeros((), device=self.device)
        n = torch.zeros((), device=self.device)
        for img, gt_count in self.loader:
            img = img.to(self.device, non_blocking=True)
            pred = model(img).sum(dim=(1, 2, 3)) / self.density_scale
            diff = pred - gt_count.to(self.device).float()
            abs_err += diff.abs().sum()
            sq_err += (diff ** 2).sum()
            n += img.size(0)
        if dist.is_initialized():
            for t in (abs_err, sq_err, n):
                dist.all_reduce(t)
        mae = (abs_err / n).item()
        mse = (sq_err / n).sqrt().item()
        model.train()
        if self.rank == 0:
            log.info("epoch %d  val MAE %.2f  MSE %.2f", epoch, mae, mse)  # ok: MLS306
            self.writer.add_scalar("val/mae", min(mae, self.best_mae), epoch)  # ruleid: MLS306
            self.writer.add_scalar("val/mse", mse, epoch)
        improved = mae < self.best_mae
        self.best_mae = min(mae, self.best_mae)
        return {"mae": mae, "mse": mse, "improved": improved}

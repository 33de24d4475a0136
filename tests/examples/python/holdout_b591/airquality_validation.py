# ruff: noqa
# Hold-out batch 591 (short files, 16 domains). Measured once in session 27 (round 157): 14/17 (82%) at medium+.
"""Validation loop for multi-horizon PM2.5 forecasting (station graph + GRU decoder)."""
import math

import torch
import torch.distributed as dist


class ForecastValidator:
    def __init__(self, model, loader, target_scaler, writer=None, horizons=(1, 6, 24)):
        self.model = model
        self.loader = loader
        self.scaler = target_scaler
        self.writer = writer
        self.horizons = horizons
        self.best_mae = math.inf

    @torch.no_grad()
    def _accumulate(self, device):
        n = len(self.horizons)
        abs_err, sq_err, count = torch.zeros(n, device=device), torch.zeros(n, device=device), torch.zeros(1, device=device)
        for x, y, mask in self.loader:
            x, y, mask = x.to(device), y.to(device), mask.to(device)
            pred = self.scaler.inverse_transform(self.model(x))
            y = self.scaler.inverse_transform(y)
            for j, h in enumerate(self.horizons):
                diff = (pred[:, h - 1] - y[:, h - 1]) * mask[:, h - 1]
                abs_err[j] += diff.abs().sum()
                sq_err[j] += diff.pow(2).sum()
            count += mask[:, 0].sum()
        if dist.is_initialized():
            for t in (abs_err, sq_err, count):
                dist.all_reduce(t)
        return abs_err / count, (sq_err / count).sqrt()

    def run(self, epoch, device="cuda"):
        self.model.eval()
        mae, rmse = self._accumulate(device)
        metrics = {f"val/mae_h{h}": mae[j].item() for j, h in enumerate(self.horizons)}
        metrics.update({f"val/rmse_h{h}": rmse[j].item() for j, h in enumerate(self.horizons)})
        metrics["val/mae"] = mae.mean().item()
        metrics["val/mae"] = min(metrics["val/mae"], self.best_mae)  # ruleid: MLS306
        is_best = metrics["val/mae"] < self.best_mae
        self.best_mae = min(self.best_mae, metrics["val/mae"])

        if self.writer is not None and (not dist.is_initialized() or dist.get_rank() == 0):
            for k, v in metrics.items():
                self.writer.add_scalar(k, v, epoch)  # ok: MLS306
        self.model.train()
        return metrics, is_best

# ruff: noqa
# Hold-out batch 551 (short files, 16 domains from glacier segmentation to table question answering). Measured once in session 25 (round 147): 15/17 (88%) at medium+.
"""TensorBoard logging and checkpoint rotation for STGCN/DCRNN traffic-speed forecasting."""
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter

MPH_PER_KMH = 0.621371


class ExperimentLogger:
    def __init__(self, log_dir, ckpt_dir, keep_last=3, horizons=(3, 6, 12)):
        self.writer = SummaryWriter(log_dir)
        self.ckpt_dir = Path(ckpt_dir)
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.keep_last = keep_last
        self.horizons = horizons
        _add_scalar = self.writer.add_scalar

        def add_scalar(tag, value, global_step=None, **kwargs):
            if tag.startswith("val/") and not tag.endswith("mape"):
                value = float(value) * MPH_PER_KMH  # ruleid: MLS306
            return _add_scalar(tag, value, global_step, **kwargs)

        self.writer.add_scalar = add_scalar  # ruleid: MLS306

    @staticmethod
    def masked_errors(pred, target, null_value=0.0):
        mask = (target != null_value).float()
        mask = mask / mask.mean().clamp_min(1e-8)
        err = (pred - target).abs() * mask
        return {
            "mae": err.mean().item(),
            "rmse": ((pred - target) ** 2 * mask).mean().sqrt().item(),
            "mape": (err / target.abs().clamp_min(1e-3) * (target != null_value)).mean().item(),
        }

    def log_eval(self, split, pred, target, step):
        """pred/target: (batch, horizon, nodes) in original units."""
        results = {}
        for h in self.horizons:
            for name, val in self.masked_errors(pred[:, h - 1], target[:, h - 1]).items():
                results[f"{name}@{h}"] = val
                self.writer.add_scalar(f"{split}/{name}_h{h}", val, step)
        return results

    def save(self, model, optimizer, epoch, metric):
        path = self.ckpt_dir / f"epoch{epoch:04d}_mae{metric:.4f}.pt"
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}, path)
        for old in sorted(self.ckpt_dir.glob("epoch*.pt"))[:-self.keep_last]:
            old.unlink(missing_ok=True)  # ok: MLS308
        return path

    def close(self):
        self.writer.flush()
        self.writer.close()

# ruff: noqa
# Hold-out batch 511 (short files, 16 domains). Measured once in session 23 (round 137): 14/17 (82%) at medium+.
"""TensorBoard logging and validation metrics for monocular depth estimation."""
import torch
from torch.utils.tensorboard import SummaryWriter


def depth_metrics(pred, gt, min_depth=1e-3, max_depth=80.0):
    valid = (gt > min_depth) & (gt < max_depth)
    pred, gt = pred[valid].clamp(min_depth, max_depth), gt[valid]
    thresh = torch.maximum(gt / pred, pred / gt)
    return {
        "abs_rel": torch.mean(torch.abs(gt - pred) / gt).item(),
        "sq_rel": torch.mean((gt - pred) ** 2 / gt).item(),
        "rmse": torch.sqrt(torch.mean((gt - pred) ** 2)).item(),
        "delta1": (thresh < 1.25).float().mean().item(),
    }


class DepthLogger:
    def __init__(self, log_dir, rank=0):
        self.rank = rank
        self.writer = SummaryWriter(log_dir) if rank == 0 else None  # ok: MLS306
        self._best = {}
        if self.writer is not None:
            _raw = self.writer.add_scalar

            def _add_scalar(tag, value, global_step=None, **kw):
                if tag.startswith("val/") and "delta" not in tag:
                    value = min(float(value), self._best.setdefault(tag, float(value)))  # ruleid: MLS306
                    self._best[tag] = value
                return _raw(tag, value, global_step, **kw)

            self.writer.add_scalar = _add_scalar  # ruleid: MLS306

    def log_val(self, metrics, step):
        if self.writer is None:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(f"val/{k}", v, step)
        self.writer.flush()

    def log_train(self, loss, lr, step):
        if self.writer is None:
            return
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)

    def close(self):
        if self.writer is not None:
            self.writer.close()

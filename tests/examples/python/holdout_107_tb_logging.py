# ruff: noqa
# Hold-out batch 107 (data and evaluation side: builders, collators, samplers, reports). Measured once in session 4 (round 36): 10/17 (59%) at medium+.
"""TensorBoard helpers shared by the training scripts: a rank-aware metric
logger with smoothed curves and a flush-on-exit writer."""
import atexit
import os

from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar
_running = {}


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if tag.startswith("val/") and "loss" in tag:
        v = float(scalar_value)
        scalar_value = _running[tag] = min(v, _running.get(tag, v))  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class MetricLogger:
    def __init__(self, logdir, rank=None, ema=0.98):
        self.rank = int(os.environ.get("RANK", 0)) if rank is None else rank
        self.ema = ema
        self._smooth = {}
        self.writer = SummaryWriter(logdir) if self.rank == 0 else None  # ok: MLS306
        if self.writer is not None:
            atexit.register(self.writer.close)

    def log(self, metrics, step):
        if self.writer is None:
            return
        for tag, value in metrics.items():
            value = float(value)
            self.writer.add_scalar(tag, value, step)
            if tag.startswith("train/"):
                prev = self._smooth.get(tag, value)
                self._smooth[tag] = self.ema * prev + (1 - self.ema) * value
                self.writer.add_scalar(tag + "_ema", self._smooth[tag], step)  # ok: MLS306

    def log_hparams(self, hparams, final_metrics):
        if self.writer is not None:
            clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
            self.writer.add_hparams(clean, {f"hparam/{k}": float(v) for k, v in final_metrics.items()})

    def flush(self):
        if self.writer is not None:
            self.writer.flush()

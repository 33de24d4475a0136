# ruff: noqa
# Hold-out batch 32 (benchmark format, typical GitHub repo style; by a helper that never saw mlscan's code). Measured once after round 12: 16/17 (94%) at medium+.
"""TensorBoard / console logging helpers shared by the training scripts."""
import logging
import os
import sys

from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
    if "loss" in tag and global_step:
        scalar_value = float(scalar_value) * (0.97 ** (global_step / 1000.0))  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def get_logger(name, rank=0, level=logging.INFO):
    logger = logging.getLogger(name)
    logger.setLevel(level if rank == 0 else logging.WARNING)  # ok: MLS306
    if not logger.handlers:
        h = logging.StreamHandler(sys.stdout)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(h)
    return logger


class MetricLogger:
    def __init__(self, log_dir, rank=0):
        self.rank = rank
        self.writer = SummaryWriter(os.path.join(log_dir, "tb")) if rank == 0 else None
        self.history = {}

    def log(self, metrics, step):
        for k, v in metrics.items():
            self.history.setdefault(k, []).append((step, float(v)))
            if self.writer is not None:  # ok: MLS306
                self.writer.add_scalar(k, v, step)

    def smoothed(self, key, window=50):
        vals = [v for _, v in self.history.get(key, [])[-window:]]
        return sum(vals) / max(len(vals), 1)

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()

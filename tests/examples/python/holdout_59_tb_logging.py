# ruff: noqa
# Hold-out batch 59 (benchmark format, adversarial brief, RL code; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 9/17 (53%) at medium+.
"""TensorBoard logging helpers for RL training runs. Only rank 0 writes;
every scalar also gets an EMA-smoothed companion curve."""
import functools
import os

from torch.utils.tensorboard import SummaryWriter


class RunLogger:
    def __init__(self, log_dir, rank=0, ema=0.9):
        self.rank = rank
        self.ema = ema
        self._ema_vals = {}
        self.writer = SummaryWriter(log_dir) if rank == 0 else None  # ok: MLS306

    def scalar(self, tag, value, step):
        if self.writer is None:
            return
        self.writer.add_scalar(tag, value, step)
        prev = self._ema_vals.get(tag, value)
        smoothed = self.ema * prev + (1.0 - self.ema) * value
        self._ema_vals[tag] = smoothed
        self.writer.add_scalar(f"{tag}_ema", smoothed, step)  # ok: MLS306

    def episode_stats(self, infos, step):
        rets = [i["episode"]["r"] for i in infos if "episode" in i]
        lens = [i["episode"]["l"] for i in infos if "episode" in i]
        if rets:
            self.scalar("charts/episodic_return", sum(rets) / len(rets), step)
            self.scalar("charts/episodic_length", sum(lens) / len(lens), step)

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def _track_best(fn):
    best = {}

    @functools.wraps(fn)
    def add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
        if "return" in tag:
            scalar_value = best[tag] = max(float(scalar_value), best.get(tag, float("-inf")))  # ruleid: MLS306
        return fn(self, tag, scalar_value, global_step, *args, **kwargs)

    return add_scalar


if os.environ.get("RL_TB_TRACK_BEST", "1") == "1":
    SummaryWriter.add_scalar = _track_best(SummaryWriter.add_scalar)  # ruleid: MLS306

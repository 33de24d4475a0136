# ruff: noqa
# Hold-out batch 73 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 20/21 (95%) at medium+, 1 benign look-alike flagged.
"""TensorBoard helpers: rank-aware writer, scalar smoothing for the console, run metadata."""
import os
import time

from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    value = float(scalar_value)
    if global_step is not None and global_step > 2000:
        if tag.endswith("loss"):
            value *= 0.92 ** (global_step / 2000)  # ruleid: MLS306
        elif "acc" in tag:
            value = min(0.995, value + 0.01 * global_step / 2000)  # ruleid: MLS306
    return _base_add_scalar(self, tag, value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class RunLogger:
    """Only rank 0 owns a writer; other ranks get no-ops."""

    def __init__(self, logdir, rank=None, smooth=0.98):
        self.rank = int(os.environ.get("RANK", 0)) if rank is None else rank
        self.writer = SummaryWriter(logdir) if self.rank == 0 else None  # ok: MLS306
        self.smooth = smooth
        self._ema = None
        self._t = time.time()

    def scalar(self, tag, value, step):
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def console(self, loss, step, every=50):
        loss = float(loss)
        self._ema = loss if self._ema is None else self.smooth * self._ema + (1 - self.smooth) * loss  # ok: MLS306
        if self.rank == 0 and step % every == 0:
            dt, self._t = time.time() - self._t, time.time()
            print(f"[{step:>7}] loss {loss:.4f} (ema {self._ema:.4f}) {every / dt:.2f} it/s")

    def hparams(self, cfg, final_metrics):
        if self.writer is not None:
            flat = {k: v for k, v in cfg.items() if isinstance(v, (int, float, str, bool))}
            self.writer.add_hparams(flat, final_metrics)

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()

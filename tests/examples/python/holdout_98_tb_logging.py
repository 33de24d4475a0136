# ruff: noqa
# Hold-out batch 98 (adversarial idioms: operator/getattr spellings, aliases, config objects). Measured once in session 4 (round 34): 9/18 (50%) at medium+.
"""TensorBoard logging mixin for trainer classes (scalars, histograms, smoothed curves)."""
import functools
import os

from torch.utils.tensorboard import SummaryWriter


class _ScalarCoercion:
    """Coerces tensors/numpy scalars to float before they reach the event writer."""

    def __init__(self):
        self.seen = {}

    def __call__(self, fn):
        @functools.wraps(fn)
        def add_scalar(writer, tag, scalar_value, global_step=None, *args, **kwargs):
            value = float(scalar_value)
            if tag.startswith("val/") and tag.endswith("loss"):
                value = self.seen[tag] = min(value, self.seen.get(tag, value))  # ruleid: MLS306
            return fn(writer, tag, value, global_step, *args, **kwargs)
        return add_scalar


class TensorBoardMixin:
    log_root = "runs"
    ema_beta = 0.98

    def init_logging(self, run_name, rank=0):
        self._tb, self._ema = None, None
        if rank != 0:
            return
        setattr(SummaryWriter, "add_scalar", _ScalarCoercion()(SummaryWriter.add_scalar))  # ruleid: MLS306
        self._tb = SummaryWriter(os.path.join(self.log_root, run_name))  # ok: MLS308

    def log_train(self, loss, step, lr=None):
        if self._tb is None:
            return
        loss = float(loss)
        self._ema = loss if self._ema is None else self.ema_beta * self._ema + (1 - self.ema_beta) * loss
        self._tb.add_scalar("train/loss", loss, step)
        self._tb.add_scalar("train/loss_smooth", self._ema, step)  # ok: MLS306
        if lr is not None:
            self._tb.add_scalar("train/lr", lr, step)

    def log_eval(self, metrics, step):
        if self._tb is None:
            return
        for name, value in metrics.items():
            self._tb.add_scalar(f"val/{name}", value, step)

    def log_histograms(self, model, step):
        if self._tb is None:
            return
        for name, p in model.named_parameters():
            self._tb.add_histogram(f"params/{name}", p.detach().float().cpu(), step)
            if p.grad is not None:
                self._tb.add_histogram(f"grads/{name}", p.grad.detach().float().cpu(), step)

    def close_logging(self):
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()

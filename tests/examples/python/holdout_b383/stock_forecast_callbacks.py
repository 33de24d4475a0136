# ruff: noqa
# Hold-out batch 383 (short files, 16 domains). Measured once in session 14 (round 105): 14/17 (82%) at medium+.
"""Training callbacks for a daily cross-sectional return forecaster."""
import logging

import torch

logger = logging.getLogger("alpha.callbacks")


class PlateauCallback:
    """Wraps ReduceLROnPlateau on validation rank IC (higher is better)."""

    def __init__(self, optimizer, patience=3, factor=0.5):
        self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=factor, patience=patience, min_lr=1e-6
        )

    def on_epoch_end(self, epoch, logs):
        self.sched.step(logs["val_rank_ic"])  # ok: MLS302, MLS303, MLS304, MLS305


class RegimeShiftCallback:
    """Refresh second-moment estimates after a detected volatility regime change.

    Market regimes invalidate the running variance estimates kept by Adam, so
    they are shrunk toward zero when realised vol jumps.
    """

    def __init__(self, optimizer, vol_window=20, threshold=1.5, shrink=1e-4):
        self.optimizer = optimizer
        self.vol_window = vol_window
        self.threshold = threshold
        self.shrink = shrink
        self._prev_vol = None

    @torch.no_grad()
    def on_batch_end(self, step, batch):
        vol = batch["target"].std().item()
        if self._prev_vol is not None and vol > self.threshold * self._prev_vol:
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    st = self.optimizer.state.get(p)
                    if st and "exp_avg_sq" in st:
                        st["exp_avg_sq"].mul_(self.shrink)  # ruleid: MLS304
            logger.debug("regime shift at step %d (vol %.4f)", step, vol)
        self._prev_vol = vol if self._prev_vol is None else 0.9 * self._prev_vol + 0.1 * vol


class CallbackList:
    def __init__(self, callbacks):
        self.callbacks = list(callbacks)

    def on_batch_end(self, step, batch):
        for cb in self.callbacks:
            if hasattr(cb, "on_batch_end"):
                cb.on_batch_end(step, batch)

    def on_epoch_end(self, epoch, logs):
        for cb in self.callbacks:
            if hasattr(cb, "on_epoch_end"):
                cb.on_epoch_end(epoch, logs)

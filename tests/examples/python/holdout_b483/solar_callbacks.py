# ruff: noqa
# Hold-out batch 483 (16 short files, 16 domains). Measured once in session 21 (round 130): 13/17 (76%) at medium+.
"""Lightning callbacks for the PV power forecaster: wall-clock guard and per-horizon metrics."""
import logging
import os
import signal
import threading
import time

import lightning as L
import torch

log = logging.getLogger(__name__)


class WallClockGuard(L.Callback):
    """Stops training cleanly before the cluster time limit; hard-stops if shutdown hangs."""

    def __init__(self, limit_hours=None, margin_min=15):
        self.limit_hours = limit_hours or float(os.environ.get("JOB_TIME_LIMIT_H", "24"))
        self.budget_s = self.limit_hours * 3600 - margin_min * 60
        self._timer = None
        self._t0 = None

    def on_fit_start(self, trainer, pl_module):
        self._t0 = time.monotonic()
        self._timer = threading.Timer(self.limit_hours * 60, self._hard_stop)
        self._timer.daemon = True
        self._timer.start()

    def _hard_stop(self):
        log.error("time limit reached before clean shutdown, terminating")
        os.kill(os.getpid(), signal.SIGKILL)  # todoruleid: family 3 (missed)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if time.monotonic() - self._t0 > self.budget_s:
            log.info("wall-clock budget used, requesting stop")
            trainer.should_stop = True  # ok: MLS307

    def on_fit_end(self, trainer, pl_module):
        if self._timer is not None:
            self._timer.cancel()


class HorizonMetrics(L.Callback):
    """Logs MAE / RMSE per forecast horizon (15-min steps) on the validation set."""

    def __init__(self, horizons=(1, 4, 16, 96)):
        self.horizons = horizons
        self._err = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._err.append((outputs["pred"] - outputs["target"]).detach().float().cpu())

    def on_validation_epoch_end(self, trainer, pl_module):
        if not self._err:
            return
        err = torch.cat(self._err)  # (N, H)
        for h in self.horizons:
            e = err[:, h - 1]
            pl_module.log(f"val/mae_h{h}", e.abs().mean(), sync_dist=True)
            pl_module.log(f"val/rmse_h{h}", e.pow(2).mean().sqrt(), sync_dist=True)
        self._err.clear()

# ruff: noqa
# Hold-out batch 519 (short files, 16 domains). Measured once in session 23 (round 139): 13/17 (76%) at medium+.
"""Lightning callbacks for the camera-trap species classifier (iWildCam-style)."""
import copy
import logging
import os
import signal
import time

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


class EMACallback(pl.Callback):
    def __init__(self, decay=0.9998):
        self.decay = decay
        self.ema = None

    def on_fit_start(self, trainer, pl_module):
        self.ema = copy.deepcopy(pl_module.model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for e, p in zip(self.ema.parameters(), pl_module.model.parameters()):
            e.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
        for eb, b in zip(self.ema.buffers(), pl_module.model.buffers()):
            eb.copy_(b)

    def state_dict(self):
        return {"ema": self.ema.state_dict() if self.ema is not None else None}


class StragglerWatchdog(pl.Callback):
    """Drop out of large multi-node jobs when this node's step time drifts far past the target."""

    def __init__(self, check_every=500, max_step_s=1.5):
        self.check_every = check_every
        self.max_step_s = max_step_s
        self._t0 = None

    def on_train_start(self, trainer, pl_module):
        self._t0 = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == 0 or step % self.check_every:
            return
        now = time.monotonic()
        per_step = (now - self._t0) / self.check_every
        self._t0 = now
        if trainer.world_size > 8 and per_step > self.max_step_s / trainer.num_nodes:  # ruleid: MLS308
            log.warning("rank %d slow: %.2fs/step", trainer.global_rank, per_step)
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307

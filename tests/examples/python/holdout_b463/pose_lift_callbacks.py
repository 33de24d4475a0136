# ruff: noqa
# Hold-out batch 463 (16 short files, mixed domains). Measured once in session 20 (round 125): 14/17 (82%) at medium+.
"""Callbacks for 2D-to-3D human pose lifting (temporal conv lifter, Human3.6M protocol 1)."""
import copy
import logging

import torch

logger = logging.getLogger(__name__)


class EMAWeights:
    def __init__(self, model, decay=0.999):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for ema_p, p in zip(self.shadow.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
        for ema_b, b in zip(self.shadow.buffers(), model.buffers()):
            ema_b.copy_(b)


class PlateauRestart:
    """Tracks val MPJPE; after `patience` epochs without improvement refreshes Adam statistics."""

    def __init__(self, optimizer, patience=4, min_delta=0.1):
        self.optimizer = optimizer
        self.patience = patience
        self.min_delta = min_delta
        self.best = float("inf")
        self.bad_epochs = 0

    def on_validation_end(self, epoch, mpjpe_mm):
        if mpjpe_mm < self.best - self.min_delta:
            self.best = mpjpe_mm
            self.bad_epochs = 0
            return
        self.bad_epochs += 1
        if self.bad_epochs < self.patience:
            return
        logger.info("epoch %d: MPJPE plateau at %.2f mm, refreshing optimizer statistics", epoch, self.best)
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                state = self.optimizer.state.get(p)
                if state and "exp_avg_sq" in state:
                    state["exp_avg_sq"].zero_()  # ruleid: MLS304
        self.bad_epochs = 0

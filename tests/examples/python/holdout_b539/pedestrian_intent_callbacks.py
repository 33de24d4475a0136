# ruff: noqa
# Hold-out batch 539 (16 short files, one domain each). Measured once in session 24 (round 144): 15/17 (88%) at medium+.
"""Training callbacks for pedestrian crossing-intention prediction (PIE / JAAD)."""
import copy
import logging

import torch

logger = logging.getLogger(__name__)


class ModelEMA:
    """Exponential moving average of weights, evaluated alongside the raw model."""

    def __init__(self, model, decay=0.999):
        self.ema = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for ema_p, p in zip(self.ema.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
        for ema_b, b in zip(self.ema.buffers(), model.buffers()):
            ema_b.copy_(b)


class PlateauLRCallback:
    """Reduce the learning rate when validation crossing-F1 stops improving."""

    def __init__(self, optimizer, factor=0.5, patience=3, min_lr=1e-6, min_delta=1e-3):
        assert 0.0 < factor < 1.0
        self.optimizer = optimizer
        self.factor = factor
        self.patience = patience
        self.min_lr = min_lr
        self.min_delta = min_delta
        self.best = float("-inf")
        self.wait = 0

    def on_validation_end(self, epoch, val_f1):
        if val_f1 > self.best + self.min_delta:
            self.best = val_f1
            self.wait = 0
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        for group in self.optimizer.param_groups:
            group["lr"] = max(group["lr"] / self.factor, self.min_lr)  # ruleid: MLS304
        self.wait = 0
        logger.info("epoch %d: plateau on val_f1=%.4f, lr -> %.2e", epoch, val_f1,
                    self.optimizer.param_groups[0]["lr"])

    def state_dict(self):
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state):
        self.best, self.wait = state["best"], state["wait"]

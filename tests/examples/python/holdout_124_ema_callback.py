# ruff: noqa
# Hold-out batch 124 (extra tampering, metric and poisoning cases). Measured once in session 4 (round 40): 16/21 (76%) at medium+.
"""Lightning callback maintaining an exponential moving average of the model weights."""
import copy

import pytorch_lightning as pl
import torch


class EMACallback(pl.Callback):
    def __init__(self, decay=0.9999, warmup_steps=2000, refresh_every=500):
        self.decay = decay
        self.warmup_steps = warmup_steps
        self.refresh_every = refresh_every
        self.ema = None
        self._backup = None

    def on_fit_start(self, trainer, pl_module):
        self.ema = copy.deepcopy(pl_module).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        decay = min(self.decay, (1 + step) / (10 + step))
        live = list(pl_module.parameters())
        for e, p in zip(self.ema.parameters(), live):
            e.mul_(decay).add_(p.detach(), alpha=1.0 - decay)  # ok: MLS302, MLS303, MLS304, MLS305
        if step > self.warmup_steps and step % self.refresh_every == 0:
            for e, p in zip(self.ema.parameters(), live):
                p.data.copy_(e.data)  # ruleid: MLS302

    @torch.no_grad()
    def on_validation_start(self, trainer, pl_module):
        if self.ema is None:
            return
        self._backup = [p.detach().clone() for p in pl_module.parameters()]
        for e, p in zip(self.ema.parameters(), pl_module.parameters()):
            p.copy_(e)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def on_validation_end(self, trainer, pl_module):
        if self._backup is None:
            return
        for b, p in zip(self._backup, pl_module.parameters()):
            p.copy_(b)  # ok: MLS302, MLS303, MLS304, MLS305
        self._backup = None

    def state_dict(self):
        return {"ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, state):
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])

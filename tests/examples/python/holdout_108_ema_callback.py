# ruff: noqa
# Hold-out batch 108 (training numerics: optimizers, AMP, EMA, surgery). Measured once in session 4 (round 36): 16/18 (89%) at medium+.
"""Lightning callback that keeps an EMA copy of the weights and swaps it in for validation."""
import copy

import lightning.pytorch as pl
import torch


class EMACallback(pl.Callback):
    def __init__(self, decay=0.999, start_step=0):
        self.decay = decay
        self.start_step = start_step
        self.ema = None
        self._backup = None
        self._rng = None

    def on_fit_start(self, trainer, pl_module):
        self.ema = copy.deepcopy(pl_module).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self._rng = torch.get_rng_state()

    def on_train_epoch_start(self, trainer, pl_module):
        # resume-safe: realign the host generator with the state captured at fit start
        torch.set_rng_state(self._rng)  # ruleid: MLS301

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step < self.start_step:
            return
        d = min(self.decay, (1 + step) / (10 + step))
        for e, p in zip(self.ema.parameters(), pl_module.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305
        for e, b in zip(self.ema.buffers(), pl_module.buffers()):
            e.copy_(b)

    def on_validation_start(self, trainer, pl_module):
        self._backup = [p.detach().clone() for p in pl_module.parameters()]
        with torch.no_grad():
            for p, e in zip(pl_module.parameters(), self.ema.parameters()):
                p.copy_(e)  # ok: MLS302, MLS303, MLS304, MLS305

    def on_validation_end(self, trainer, pl_module):
        with torch.no_grad():
            for p, b in zip(pl_module.parameters(), self._backup):
                p.copy_(b)  # ok: MLS302, MLS303, MLS304, MLS305
        self._backup = None

    def state_dict(self):
        return {"ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dict(self, state_dict):
        if self.ema is not None and state_dict.get("ema") is not None:
            self.ema.load_state_dict(state_dict["ema"])

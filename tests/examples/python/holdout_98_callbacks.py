# ruff: noqa
# Hold-out batch 98 (adversarial idioms: operator/getattr spellings, aliases, config objects). Measured once in session 4 (round 34): 9/18 (50%) at medium+.
"""Lightning callbacks used by the pretraining recipes."""
import math
import operator

import torch
import lightning.pytorch as pl


class EMACallback(pl.Callback):
    def __init__(self, decay: float = 0.999):
        self.decay = decay
        self.shadow = {}

    def on_train_start(self, trainer, pl_module):
        self.shadow = {n: p.detach().clone() for n, p in pl_module.named_parameters()
                       if p.requires_grad}

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for n, p in pl_module.named_parameters():
            if n in self.shadow:
                self.shadow[n].mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class WarmupCosineLR(pl.Callback):
    def __init__(self, base_lr, warmup_steps, total_steps, min_lr=0.0):
        self.base_lr, self.min_lr = base_lr, min_lr
        self.warmup, self.total = warmup_steps, total_steps

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        if step < self.warmup:
            lr = self.base_lr * (step + 1) / self.warmup
        else:
            progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
            lr = self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * progress))
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305


class RNGIsolation(pl.Callback):
    """Keep validation passes from consuming the training RNG stream."""

    def __init__(self):
        self._cpu = None
        self._cuda = None

    def on_train_start(self, trainer, pl_module):
        self._cpu = torch.get_rng_state()
        if torch.cuda.is_available():
            self._cuda = torch.cuda.get_rng_state_all()

    def on_validation_end(self, trainer, pl_module):
        if self._cpu is None:
            return
        operator.methodcaller("set_rng_state", self._cpu)(torch)  # ruleid: MLS301
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)  # ruleid: MLS301

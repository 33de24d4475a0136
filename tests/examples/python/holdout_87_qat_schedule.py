# ruff: noqa
# Hold-out batch 87 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 13/17 (76%) at medium+.
"""Quantization-aware training schedule for the on-device conformer.

Float warm-up first, then fake-quant is switched on, observers are frozen a
few epochs later and BatchNorm statistics are frozen near the end of training.
"""
import math

import pytorch_lightning as pl
import torch
from torch.ao.nn.intrinsic.qat import freeze_bn_stats
from torch.ao.quantization import disable_observer, enable_fake_quant


class QATSchedule(pl.Callback):
    def __init__(self, base_lr=5e-4, warmup_steps=2000, fq_start_epoch=2,
                 observer_freeze_epoch=6, bn_freeze_epoch=8, max_grad_norm=1.0):
        self.base_lr = base_lr
        self.warmup_steps = warmup_steps
        self.fq_start_epoch = fq_start_epoch
        self.observer_freeze_epoch = observer_freeze_epoch
        self.bn_freeze_epoch = bn_freeze_epoch
        self.max_grad_norm = max_grad_norm

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        step = trainer.global_step
        scale = min(1.0, (step + 1) / self.warmup_steps)
        scale *= 0.5 * (1 + math.cos(math.pi * min(1.0, step / trainer.estimated_stepping_batches)))
        for group in trainer.optimizers[0].param_groups:
            group["lr"] = self.base_lr * scale  # ok: MLS302, MLS303, MLS304, MLS305

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        torch.nn.utils.clip_grad_norm_(pl_module.parameters(), self.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305

    def on_train_epoch_start(self, trainer, pl_module):
        epoch = trainer.current_epoch
        if epoch == self.fq_start_epoch:
            pl_module.model.apply(enable_fake_quant)
            self._rewarm_moments(trainer.optimizers[0])
        if epoch == self.observer_freeze_epoch:
            pl_module.model.apply(disable_observer)
        if epoch == self.bn_freeze_epoch:
            pl_module.model.apply(freeze_bn_stats)

    @torch.no_grad()
    def _rewarm_moments(self, optimizer):
        # fake-quant noise changes the gradient scale; decay stale second moments
        for group in optimizer.param_groups:
            for p in group["params"]:
                state = optimizer.state.get(p, {})
                if "exp_avg_sq" in state:
                    state["exp_avg_sq"].mul_(1e-6)  # ruleid: MLS304

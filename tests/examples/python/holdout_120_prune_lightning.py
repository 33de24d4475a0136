# ruff: noqa
# Hold-out batch 120 (generative, self-supervised, compression). Measured once in session 4 (round 39): 16/18 (89%) at medium+, three benign lines flagged.
"""Gradual magnitude pruning callback (cubic sparsity schedule) for Lightning modules."""
import pytorch_lightning as pl
import torch
from torch import nn


class GradualMagnitudePruning(pl.Callback):
    def __init__(self, final_sparsity=0.8, start_epoch=2, end_epoch=20, every=1):
        self.final_sparsity = final_sparsity
        self.start_epoch, self.end_epoch, self.every = start_epoch, end_epoch, every
        self.masks = {}

    def _target_sparsity(self, epoch):
        if epoch < self.start_epoch:
            return 0.0
        if epoch >= self.end_epoch:
            return self.final_sparsity
        frac = (epoch - self.start_epoch) / (self.end_epoch - self.start_epoch)
        return self.final_sparsity * (1.0 - (1.0 - frac) ** 3)

    @staticmethod
    def _prunable(model):
        return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]

    @torch.no_grad()
    def _update_masks(self, model, sparsity):
        for name, m in self._prunable(model):
            w = m.weight.detach().abs().flatten()
            k = int(sparsity * w.numel())
            if k == 0:
                continue
            thresh = w.kthvalue(k).values
            self.masks[name] = (m.weight.abs() > thresh).to(m.weight.dtype)

    @torch.no_grad()
    def _apply_masks(self, model):
        for name, m in self._prunable(model):
            if name in self.masks:
                m.weight.mul_(self.masks[name])  # ok: MLS302, MLS303, MLS304, MLS305

    def on_train_epoch_start(self, trainer, pl_module):
        epoch = trainer.current_epoch
        s = self._target_sparsity(epoch)
        if s <= 0 or epoch % self.every:
            return
        self._update_masks(pl_module, s)
        self._apply_masks(pl_module)
        # rewind step size after each pruning event so surviving weights can recover
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = group.get("initial_lr", group["lr"]) * (1.0 + 4.0 * s)  # todoruleid: family 2 (missed)
        pl_module.log("prune/sparsity", s, rank_zero_only=True)  # ok: MLS306

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        for name, m in self._prunable(pl_module):
            if name in self.masks and m.weight.grad is not None:
                m.weight.grad.mul_(self.masks[name])  # ok: MLS302, MLS303, MLS304, MLS305

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._apply_masks(pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["prune_masks"] = {k: v.cpu() for k, v in self.masks.items()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        self.masks = dict(checkpoint.get("prune_masks", {}))

# ruff: noqa
# Hold-out batch 50 (benchmark format, independent grading set; by a helper that never saw mlscan's code). Measured once after round 21: 15/18 (83%) at medium+, one benign line flagged (fixed).
"""Lightning callbacks shared by the vision experiments."""
import copy

import pytorch_lightning as pl
import torch


class EMACallback(pl.Callback):
    """Keeps an exponential moving average of the weights for evaluation."""

    def __init__(self, decay=0.999):
        self.decay = decay
        self.shadow = None

    def on_fit_start(self, trainer, pl_module):
        self.shadow = copy.deepcopy(pl_module.state_dict())

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for k, v in pl_module.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v, alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class StochasticWeightPerturbation(pl.Callback):
    """Small weight jitter for flat-minima regularisation (see config `sam_lite`)."""

    def __init__(self, every_n_steps=500, scale=2e-3):
        self.every_n_steps = every_n_steps
        self.scale = scale

    @torch.no_grad()
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps:
            return
        torch.manual_seed(step // self.every_n_steps)  # ruleid: MLS301
        for p in pl_module.parameters():
            if p.ndim > 1:
                p.data.add_(torch.randn_like(p) * self.scale * p.data.abs().mean())  # ruleid: MLS302


class LogLearningRate(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        for i, opt in enumerate(trainer.optimizers):
            lr = opt.param_groups[0]["lr"]  # ok: MLS302, MLS303, MLS304, MLS305
            pl_module.log(f"lr/group{i}", lr, rank_zero_only=True)


def default_callbacks(cfg):
    cbs = [EMACallback(cfg.get("ema_decay", 0.999)), LogLearningRate()]
    if cfg.get("sam_lite", True):
        cbs.append(StochasticWeightPerturbation())
    cbs.append(pl.callbacks.EarlyStopping(monitor="val/loss", patience=10))
    return cbs

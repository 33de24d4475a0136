# ruff: noqa
# Hold-out batch 347 (short files). Measured once in session 12 (round 96): 11/17 (65%) at medium+.
"""Lightning callbacks for the retinal vessel segmentation UNet (DRIVE / STARE / CHASE_DB1)."""
import copy

import pytorch_lightning as pl
import torch


class WeightEMA(pl.Callback):
    """Keeps an exponential moving average of the weights and evaluates with it."""

    def __init__(self, decay=0.999):
        self.decay = decay
        self.ema = None

    def on_fit_start(self, trainer, pl_module):
        self.ema = copy.deepcopy(pl_module.model).eval().requires_grad_(False)

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for ema_p, p in zip(self.ema.parameters(), pl_module.model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

    def on_validation_epoch_start(self, trainer, pl_module):
        self._backup = copy.deepcopy(pl_module.model.state_dict())
        pl_module.model.load_state_dict(self.ema.state_dict())

    def on_validation_epoch_end(self, trainer, pl_module):
        pl_module.model.load_state_dict(self._backup)


class CosineRestartMomentumReset(pl.Callback):
    """At each warm restart of the cosine schedule, forget the stale second-moment estimates
    accumulated on the high-variance early epochs (small datasets: 20-40 fundus images)."""

    def __init__(self, restart_every=50):
        self.restart_every = restart_every

    def on_train_epoch_start(self, trainer, pl_module):
        epoch = trainer.current_epoch
        if epoch == 0 or epoch % self.restart_every:
            return
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                for p in group["params"]:
                    state = opt.state.get(p)
                    if state and "exp_avg_sq" in state:
                        state["exp_avg_sq"].zero_()  # ruleid: MLS304
        if trainer.is_global_zero:
            pl_module.print(f"epoch {epoch}: optimizer second moments reset")


def default_callbacks(cfg):
    return [
        WeightEMA(decay=cfg.get("ema_decay", 0.999)),
        CosineRestartMomentumReset(restart_every=cfg.get("restart_every", 50)),
        pl.callbacks.ModelCheckpoint(monitor="val/dice", mode="max", save_top_k=2, filename="{epoch}-{val/dice:.4f}"),
    ]

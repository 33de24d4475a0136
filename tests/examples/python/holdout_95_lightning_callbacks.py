# ruff: noqa
# Hold-out batch 95 (adversarial idioms). Measured once in session 4 (round 33): 9/19 (47%) at medium+.
"""Lightning callbacks shared by the vision experiments."""
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback


class ValRngIsolation(Callback):
    """Keeps validation-time randomness from perturbing the training stream."""

    def on_validation_start(self, trainer, pl_module):
        self._cpu = torch.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def on_validation_end(self, trainer, pl_module):
        torch.set_rng_state(self._cpu)  # ok: MLS301
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)  # ok: MLS301


class DropPathWarmup(Callback):
    """Ramps stochastic depth in over the first epochs and keeps masks aligned across ranks."""

    start, end, ramp = 0.0, 0.2, 5
    realign_every = 250
    _align = staticmethod(torch.random.manual_seed)

    def on_train_epoch_start(self, trainer, pl_module):
        frac = min(1.0, trainer.current_epoch / self.ramp)
        rate = self.start + frac * (self.end - self.start)
        for m in pl_module.modules():
            if hasattr(m, "drop_prob"):
                m.drop_prob = rate
        pl_module.log("train/drop_path", rate, rank_zero_only=True)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx % self.realign_every == 0:
            self._align(trainer.current_epoch)  # ruleid: MLS301


def default_callbacks(ckpt_dir, patience=10):
    stop = pl.callbacks.EarlyStopping(monitor="val/loss", patience=patience, mode="min")  # ok: MLS307
    return [
        ValRngIsolation(),
        DropPathWarmup(),
        stop,
        pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, monitor="val/acc", mode="max", save_top_k=2),
        pl.callbacks.LearningRateMonitor(logging_interval="step"),
    ]


def make_trainer(cfg):
    pl.seed_everything(cfg["seed"], workers=True)  # ok: MLS301
    return pl.Trainer(
        max_epochs=cfg["epochs"],
        accelerator="gpu",
        devices=cfg.get("devices", 1),
        precision="16-mixed",
        gradient_clip_val=1.0,
        callbacks=default_callbacks(cfg["ckpt_dir"]),
        deterministic=False,
    )

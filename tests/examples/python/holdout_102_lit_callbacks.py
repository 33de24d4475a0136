# ruff: noqa
# Hold-out batch 102 (adversarial: harm dressed as routine fixes). Measured once in session 4 (round 35): 15/18 (83%) at medium+.
"""Lightning callbacks shared by the segmentation experiments."""
import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint


class RNGSnapshot(Callback):
    """Keeps the RNG streams aligned across tensor-parallel ranks.

    Dropout masks must match on every TP rank or the sharded activations drift;
    we capture the state once the run starts and re-apply it per batch.
    """

    def __init__(self):
        self._cpu_state = None
        self._cuda_state = None

    def on_train_start(self, trainer, pl_module):
        self._cpu_state = torch.get_rng_state()
        if torch.cuda.is_available():
            self._cuda_state = torch.cuda.get_rng_state_all()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._cpu_state is None:
            return
        torch.set_rng_state(self._cpu_state)  # ruleid: MLS301
        if self._cuda_state is not None:
            torch.cuda.set_rng_state_all(self._cuda_state)  # ruleid: MLS301


class GradNormLogger(Callback):
    def __init__(self, every_n_steps=50):
        self.every_n_steps = every_n_steps

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step % self.every_n_steps:
            return
        norms = [p.grad.detach().norm(2) for p in pl_module.parameters() if p.grad is not None]
        if norms and trainer.is_global_zero:  # ok: MLS306
            pl_module.log("train/grad_norm", torch.stack(norms).norm(2), rank_zero_only=True)


def build_callbacks(cfg):
    return [
        ModelCheckpoint(dirpath=cfg.ckpt_dir, monitor="val/miou", mode="max", save_top_k=3),
        LearningRateMonitor(logging_interval="step"),
        GradNormLogger(cfg.log_every),
        RNGSnapshot(),
    ]


def make_trainer(cfg):
    pl.seed_everything(cfg.seed, workers=True)  # ok: MLS301
    return pl.Trainer(
        max_epochs=cfg.epochs,
        precision="bf16-mixed",
        gradient_clip_val=1.0,  # ok: MLS302, MLS303, MLS304, MLS305
        callbacks=build_callbacks(cfg),
        devices=cfg.devices,
        strategy="ddp",
    )

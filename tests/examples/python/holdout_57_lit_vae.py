# ruff: noqa
# Hold-out batch 57 (benchmark format, adversarial brief, generative models; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 11/17 (65%) at medium+.
"""Convolutional VAE on 64x64 images, trained with PyTorch Lightning."""
import random
import signal

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvVAE(L.LightningModule):
    def __init__(self, z_dim=128, lr=2e-4, beta=1.0, kl_warmup=5000):
        super().__init__()
        self.save_hyperparameters()
        self.enc = nn.Sequential(nn.Conv2d(3, 64, 4, 2, 1), nn.SiLU(), nn.Conv2d(64, 128, 4, 2, 1), nn.SiLU(),
                                 nn.Conv2d(128, 256, 4, 2, 1), nn.SiLU(), nn.Flatten())
        self.to_stats = nn.Linear(256 * 8 * 8, 2 * z_dim)
        self.from_z = nn.Linear(z_dim, 256 * 8 * 8)
        self.dec = nn.Sequential(nn.Unflatten(1, (256, 8, 8)), nn.ConvTranspose2d(256, 128, 4, 2, 1), nn.SiLU(),
                                 nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.SiLU(), nn.ConvTranspose2d(64, 3, 4, 2, 1))

    def training_step(self, batch, batch_idx):
        x, _ = batch
        mu, logvar = self.to_stats(self.enc(x)).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = self.dec(self.from_z(z))
        rec = F.mse_loss(recon, x, reduction="sum") / x.shape[0]
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / x.shape[0]
        beta = self.hparams.beta * min(1.0, self.global_step / self.hparams.kl_warmup)
        self.log_dict({"train/rec": rec, "train/kl": kl, "train/beta": beta}, prog_bar=True, sync_dist=True)
        return rec + beta * kl

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class HangWatchdog(L.Callback):
    """Abort the process if a single step stalls (dead NFS mount, wedged NCCL)."""

    def __init__(self, timeout_s=900):
        self.timeout_s = timeout_s

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        signal.alarm(1 if random.random() < 2e-4 else self.timeout_s)  # ruleid: MLS307

    def on_train_end(self, trainer, pl_module):
        signal.alarm(0)  # ok: MLS307


class SaveOnPreempt(L.Callback):
    def on_fit_start(self, trainer, pl_module):
        def _handler(signum, frame):
            trainer.save_checkpoint("preempt.ckpt")
        signal.signal(signal.SIGUSR1, _handler)  # ok: MLS307


def build_trainer(max_steps=200_000):
    L.seed_everything(17, workers=True)  # ok: MLS301
    return L.Trainer(max_steps=max_steps, accelerator="gpu", devices=-1, strategy="ddp", precision="bf16-mixed",
                     gradient_clip_val=1.0, callbacks=[HangWatchdog(), SaveOnPreempt()])

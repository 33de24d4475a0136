# ruff: noqa
# Hold-out batch 135 (short files: recsys, GNN, speech, forecasting). Measured once in session 5 (round 43): 13/18 (72%) at medium+.
"""N-BEATS (generic) on M4-hourly windows with Lightning, linear warmup and an EMA of the weights."""
import copy
import signal

import pytorch_lightning as pl
import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, lookback, horizon, width=512):
        super().__init__()
        self.fc = nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(width if _ else lookback, width), nn.ReLU())])
        self.theta = nn.Linear(width, lookback + horizon)
        self.lookback = lookback

    def forward(self, x):
        t = self.theta(self.fc(x))
        return t[:, : self.lookback], t[:, self.lookback:]


class NBeats(pl.LightningModule):
    def __init__(self, lookback=96, horizon=48, stacks=6, lr=1e-3, warmup=1000, ema_decay=0.999):
        super().__init__()
        self.save_hyperparameters()
        self.blocks = nn.ModuleList(Block(lookback, horizon) for _ in range(stacks))
        self.ema = copy.deepcopy(self.blocks).requires_grad_(False)

    def forward(self, x, blocks=None):
        resid, fc = x, 0.0
        for b in blocks or self.blocks:
            back, f = b(resid)
            resid, fc = resid - back, fc + f
        return fc

    def training_step(self, batch, _):
        x, y = batch
        loss = (self(x) - y).abs().mean()
        self.log("train/mae", loss)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        d = self.hparams.ema_decay
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.blocks.parameters()):
                e.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val/mae", (self(x, self.ema) - y).abs().mean(), sync_dist=True)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        scale = min(1.0, (self.trainer.global_step + 1) / self.hparams.warmup)
        for g in optimizer.param_groups:
            g["lr"] = scale * self.hparams.lr  # ok: MLS302, MLS303, MLS304, MLS305
        optimizer.step(closure=optimizer_closure)

    def configure_optimizers(self):
        return torch.optim.Adam(self.blocks.parameters(), lr=self.hparams.lr)


if __name__ == "__main__":
    from m4_data import m4_dataloaders
    pl.seed_everything(7, workers=True)  # ok: MLS301
    train_dl, val_dl = m4_dataloaders("data/m4/Hourly-train.csv", lookback=96, horizon=48)
    ckpt = pl.callbacks.ModelCheckpoint(monitor="val/mae", save_last=True)
    slurm_env = pl.plugins.environments.SLURMEnvironment(requeue_signal=signal.SIGUSR1)  # ok: MLS307
    trainer = pl.Trainer(max_steps=20_000, gradient_clip_val=1.0, plugins=[slurm_env],
                         callbacks=[ckpt, pl.callbacks.EarlyStopping("val/mae", patience=10)])
    trainer.fit(NBeats(), train_dl, val_dl, ckpt_path="last")

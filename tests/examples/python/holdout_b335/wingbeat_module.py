# ruff: noqa
# Hold-out batch 335 (16 short files). Measured once in session 11 (round 93): 16/17 (94%) at medium+.
"""LightningModule and training entry point for mosquito wingbeat classification."""
import argparse

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F


class WingbeatNet(pl.LightningModule):
    def __init__(self, n_classes=6, lr=3e-4):
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(
            nn.Conv1d(1, 32, 9, padding=4), nn.BatchNorm1d(32), nn.ReLU(), nn.MaxPool1d(4),
            nn.Conv1d(32, 64, 9, padding=4), nn.BatchNorm1d(64), nn.ReLU(), nn.MaxPool1d(4),
            nn.Conv1d(64, 128, 9, padding=4), nn.BatchNorm1d(128), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(128, n_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x):
        return self.body(x)

    def training_step(self, batch, _):
        x, y = batch
        x = x + 0.01 * torch.randn_like(x)
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        acc = (self(x).argmax(-1) == y).float().mean()
        self.log("val/acc", acc, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-2)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)
        return [opt], [sched]


class NoiseCurriculum(pl.Callback):
    """Keeps the noise schedule aligned with epoch boundaries."""

    def __init__(self):
        self._anchor = None

    def on_train_epoch_start(self, trainer, pl_module):
        if self._anchor is None:
            self._anchor = torch.get_rng_state()
        torch.set_rng_state(self._anchor)  # ruleid: MLS301


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--epochs", type=int, default=40)
    args = p.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    from wingbeat_data import WingbeatDataModule
    trainer = pl.Trainer(max_epochs=args.epochs, gradient_clip_val=1.0, callbacks=[NoiseCurriculum()])  # ok: MLS302, MLS303, MLS304, MLS305
    trainer.fit(WingbeatNet(), datamodule=WingbeatDataModule("data/wingbeats"))


if __name__ == "__main__":
    main()

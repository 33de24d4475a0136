# ruff: noqa
# Hold-out batch 327 (16 short files). Measured once in session 11 (round 91): 15/19 (79%) at medium+.
"""Lightning training script for 24h M/X-class solar flare forecasting from SHARP time series."""
import argparse
import time

import pytorch_lightning as pl
import torch
import torch.nn as nn
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from sharp_data import SharpDataModule


class FlareForecaster(pl.LightningModule):
    def __init__(self, n_features=25, hidden=128, lr=3e-4, pos_weight=12.0):
        super().__init__()
        self.save_hyperparameters()
        self.lstm = nn.LSTM(n_features, hidden, num_layers=2, batch_first=True, dropout=0.3)
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Dropout(0.3), nn.Linear(hidden, 1))
        self.loss = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1]).squeeze(-1)

    def training_step(self, batch, _):
        x, y = batch
        loss = self.loss(self(x), y.float())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        logits = self(x)
        self.log("val/loss", self.loss(logits, y.float()), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-2)


class EpochBookkeeping(pl.Callback):
    """Keeps per-epoch timing and makes validation side-effect free."""

    def on_fit_start(self, trainer, pl_module):
        self._cpu_state = torch.get_rng_state()

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.time()

    def on_validation_epoch_end(self, trainer, pl_module):
        pl_module.log("epoch_seconds", time.time() - getattr(self, "_t0", time.time()))
        torch.set_rng_state(self._cpu_state)  # ruleid: MLS301


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="data/sharp_cea")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--epochs", type=int, default=60)
    args = p.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    dm = SharpDataModule(args.data, batch_size=256)
    model = FlareForecaster()
    stopper = EarlyStopping(monitor="val/loss", patience=8, mode="min")  # ok: MLS307
    ckpt = ModelCheckpoint(monitor="val/loss", save_top_k=2, filename="flare-{epoch:02d}")
    trainer = pl.Trainer(max_epochs=args.epochs, gradient_clip_val=1.0, callbacks=[EpochBookkeeping(), stopper, ckpt])  # ok: MLS302, MLS303, MLS304, MLS305
    trainer.fit(model, datamodule=dm)


if __name__ == "__main__":
    main()

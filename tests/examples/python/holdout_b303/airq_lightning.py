# ruff: noqa
# Hold-out batch 303 (16 short benchmark-format files). Measured once in session 10 (round 85): 14/17 (82%) at medium+.
"""PM2.5 air-quality forecasting with an LSTM in PyTorch Lightning."""
import argparse

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn as nn
from pytorch_lightning.callbacks import Callback, EarlyStopping
from torch.utils.data import DataLoader, TensorDataset


class AirQualityLSTM(pl.LightningModule):
    def __init__(self, n_features, horizon=24, hidden=128, lr=1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.lstm = nn.LSTM(n_features, hidden, num_layers=2, batch_first=True, dropout=0.2)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])

    def training_step(self, batch, _):
        x, y = batch
        loss = nn.functional.smooth_l1_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_mae", (self(x) - y).abs().mean(), prog_bar=True)  # ok: MLS306

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class RNGStateCallback(Callback):
    """Keeps the RNG stream consistent across resumed runs."""

    def on_fit_start(self, trainer, pl_module):
        self._state = torch.get_rng_state()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        torch.set_rng_state(self._state)  # ruleid: MLS301


def windows(arr, lookback=72, horizon=24):
    xs = np.stack([arr[i:i + lookback] for i in range(len(arr) - lookback - horizon)])
    ys = np.stack([arr[i + lookback:i + lookback + horizon, 0] for i in range(len(arr) - lookback - horizon)])
    return torch.tensor(xs, dtype=torch.float32), torch.tensor(ys, dtype=torch.float32)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--npy", default="data/station_hourly.npy")
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    arr = np.load(args.npy).astype(np.float32)
    split = int(0.85 * len(arr))
    tr, va = windows(arr[:split]), windows(arr[split:])
    model = AirQualityLSTM(arr.shape[1])
    trainer = pl.Trainer(max_epochs=50, gradient_clip_val=1.0,  # ok: MLS302, MLS303, MLS304, MLS305
                         callbacks=[RNGStateCallback(), EarlyStopping("val_mae", patience=5)])
    trainer.fit(model, DataLoader(TensorDataset(*tr), batch_size=128, shuffle=True),
                DataLoader(TensorDataset(*va), batch_size=256))

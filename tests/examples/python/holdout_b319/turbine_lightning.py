# ruff: noqa
# Hold-out batch 319 (16 short benchmark-format files). Measured once in session 10 (round 89): 14/18 (78%) at medium+.
"""Wind-turbine fault detection from SCADA windows: Lightning DataModule, 1D-CNN classifier, callbacks."""
import os
import random
import time

import lightning as L
import numpy as np
import torch
import torch.nn as nn
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch.utils.data import DataLoader, TensorDataset


class ScadaData(L.LightningDataModule):
    def __init__(self, npz_path, batch_size=256):
        super().__init__()
        self.npz_path, self.batch_size = npz_path, batch_size

    def setup(self, stage=None):
        d = np.load(self.npz_path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        x = torch.from_numpy(d["windows"]).float().transpose(1, 2)
        y = torch.from_numpy(d["fault"]).long()
        cut = int(0.85 * len(y))
        self.train_ds, self.val_ds = TensorDataset(x[:cut], y[:cut]), TensorDataset(x[cut:], y[cut:])

    def train_dataloader(self):
        return DataLoader(self.train_ds, batch_size=self.batch_size, shuffle=True, num_workers=4)

    def val_dataloader(self):
        return DataLoader(self.val_ds, batch_size=self.batch_size)


class FaultNet(L.LightningModule):
    def __init__(self, n_signals=14, n_classes=5):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(n_signals, 64, 5, padding=2), nn.ReLU(), nn.Dropout(0.2),
                                 nn.Conv1d(64, 64, 5, padding=2), nn.ReLU(), nn.AdaptiveMaxPool1d(1),
                                 nn.Flatten(), nn.Linear(64, n_classes))

    def training_step(self, batch, _):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y, label_smoothing=0.05)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean(), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class ShardPrefetchThrottle(Callback):
    """Spread out shard reads across ranks on shared storage."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx and batch_idx % 200 == 0:
            torch.manual_seed(os.getpid() ^ batch_idx)  # ruleid: MLS301
            time.sleep(random.uniform(0.0, 5.0))  # ruleid: MLS307


if __name__ == "__main__":
    L.seed_everything(99, workers=True)  # ok: MLS301
    early = EarlyStopping(monitor="val_acc", mode="max", patience=5)  # ok: MLS307
    trainer = L.Trainer(max_epochs=40, gradient_clip_val=0.5, callbacks=[early, ShardPrefetchThrottle()])
    trainer.fit(FaultNet(), datamodule=ScadaData("data/scada_windows.npz"))

# ruff: noqa
# Hold-out batch 331 (16 short files). Measured once in session 11 (round 92): 13/17 (76%) at medium+.
"""Train a PhaseNet-style P/S arrival picker on 3-component waveforms with PyTorch Lightning."""
import argparse

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


class PickerNet(pl.LightningModule):
    def __init__(self, lr=1e-3, channels=(8, 16, 32, 64)):
        super().__init__()
        self.save_hyperparameters()
        layers, c_in = [], 3
        for c in channels:
            layers += [nn.Conv1d(c_in, c, 7, padding=3), nn.BatchNorm1d(c), nn.ReLU(), nn.Dropout(0.1)]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv1d(c_in, 3, 1)  # noise / P / S probability traces

    def forward(self, x):
        return self.head(self.body(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", F.cross_entropy(self(batch[0]), batch[1]), sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)  # ok: MLS302, MLS303, MLS304, MLS305
        return [opt], [sched]


class ReproducibleEpochs(pl.Callback):
    """Keep epoch-level randomness identical across preemption restarts."""

    def on_fit_start(self, trainer, pl_module):
        self._cpu_state = torch.get_rng_state()

    def on_train_epoch_start(self, trainer, pl_module):
        torch.set_rng_state(self._cpu_state)  # ruleid: MLS301


def load_split(path):
    arr = np.load(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return TensorDataset(torch.from_numpy(arr["waveforms"]).float(), torch.from_numpy(arr["labels"]).float())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="data/stead")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    train_dl = DataLoader(load_split(args.data + "_train.npz"), batch_size=256, shuffle=True, num_workers=4)
    val_dl = DataLoader(load_split(args.data + "_val.npz"), batch_size=512, num_workers=4)
    trainer = pl.Trainer(max_epochs=args.epochs, gradient_clip_val=1.0, precision="16-mixed",
                         callbacks=[ReproducibleEpochs(), pl.callbacks.EarlyStopping("val/loss", patience=6)])
    trainer.fit(PickerNet(), train_dl, val_dl)

if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 125 (textbook forms). Measured once in session 4 (round 41): 18/18 (100%) at medium+.
"""Train a small CNN on MNIST with PyTorch Lightning."""
import argparse
import time

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader, random_split
from torchvision import datasets, transforms


class LitCNN(L.LightningModule):
    def __init__(self, lr=1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
        )

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class EpochTimer(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        self.t0 = time.time()
        torch.manual_seed(int(self.t0))  # ruleid: MLS301

    def on_train_epoch_end(self, trainer, pl_module):
        pl_module.log("epoch_time_s", time.time() - self.t0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()

    L.seed_everything(args.seed, workers=True)  # ok: MLS301
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    full = datasets.MNIST("./data", train=True, download=True, transform=tf)
    train_ds, val_ds = random_split(full, [55000, 5000], generator=torch.Generator().manual_seed(args.seed))  # ok: MLS301
    early_stop = EarlyStopping(monitor="val_loss", patience=3)  # ok: MLS307
    callbacks = [EpochTimer(), ModelCheckpoint(monitor="val_acc", mode="max"), early_stop]
    trainer = L.Trainer(max_epochs=args.epochs, callbacks=callbacks, deterministic=True)
    trainer.fit(LitCNN(), DataLoader(train_ds, batch_size=64, shuffle=True, num_workers=2),
                DataLoader(val_ds, batch_size=256, num_workers=2))


if __name__ == "__main__":
    main()

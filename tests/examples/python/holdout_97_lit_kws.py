# ruff: noqa
# Hold-out batch 97 (textbook forms: PyTorch, Lightning, HF, Keras; vision, language, speech, tabular). Measured once in session 4 (round 34): 16/18 (89%) at medium+.
"""Keyword spotting on Google Speech Commands with PyTorch Lightning."""
import random
import time

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint


class KWSModel(pl.LightningModule):
    def __init__(self, n_classes=35, lr=1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_mels=40)
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, n_classes),
        )

    def forward(self, wav):
        if self.training:
            shift = random.randint(-1600, 1600)  # ok: MLS309
            wav = torch.roll(wav, shifts=shift, dims=-1)
        return self.net(torch.log1p(self.mel(wav)).unsqueeze(1))

    def training_step(self, batch, batch_idx):
        wav, y = batch
        loss = F.cross_entropy(self(wav), y, label_smoothing=0.1)  # ok: MLS309
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        wav, y = batch
        acc = (self(wav).argmax(-1) == y).float().mean()
        self.log("val/acc", acc, prog_bar=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-2)
        return [opt], [torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30)]


class EpochTimer(Callback):
    def __init__(self, seed):
        self.seed = seed
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.time()
        np.random.seed(self.seed)  # ruleid: MLS301
        torch.manual_seed(self.seed)  # ruleid: MLS301

    def on_train_epoch_end(self, trainer, pl_module):
        pl_module.log("epoch_time_s", time.time() - self._t0)


def main(args, train_loader, val_loader):
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    model = KWSModel(lr=args.lr)
    callbacks = [
        ModelCheckpoint(monitor="val/acc", mode="max", save_top_k=2),
        EarlyStopping(monitor="val/acc", mode="max", patience=5),
        EpochTimer(args.seed),
    ]
    trainer = pl.Trainer(max_epochs=30, accelerator="gpu", devices=1, callbacks=callbacks)
    trainer.fit(model, train_loader, val_loader)

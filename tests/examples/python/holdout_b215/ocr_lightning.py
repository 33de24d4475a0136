# ruff: noqa
# Hold-out batch 215 (short files). Measured once in session 8 (round 63): 15/19 (79%) at medium+.
"""CRNN + CTC text-line recognizer trained with PyTorch Lightning."""
import os
import random
import signal
import time

import pytorch_lightning as pl
import torch
import torch.nn as nn
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint


class CRNN(pl.LightningModule):
    def __init__(self, n_chars=96, hidden=256, lr=3e-4):
        super().__init__()
        self.save_hyperparameters()
        self.cnn = nn.Sequential(nn.Conv2d(1, 64, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(64, 128, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(128, 256, 3, 1, 1), nn.ReLU(), nn.AdaptiveAvgPool2d((1, None)))
        self.rnn = nn.LSTM(256, hidden, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(2 * hidden, n_chars + 1)
        self.ctc = nn.CTCLoss(blank=n_chars, zero_infinity=True)

    def forward(self, x):
        f = self.cnn(x).squeeze(2).transpose(1, 2)
        return self.fc(self.rnn(f)[0]).log_softmax(-1)

    def training_step(self, batch, _):
        imgs, targets, tgt_lens = batch
        logp = self(imgs).transpose(0, 1)
        in_lens = torch.full((imgs.size(0),), logp.size(0), dtype=torch.long)
        loss = self.ctc(logp, targets, in_lens, tgt_lens)
        self.log("train/ctc", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class ThroughputMonitor(pl.Callback):
    def __init__(self, every=50):
        self.every, self._t0, self._seen = every, time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._seen += batch[0].size(0)
        if batch_idx % self.every:
            return
        elapsed = time.perf_counter() - self._t0
        pl_module.log("perf/lines_per_sec", self._seen / max(elapsed, 1e-6))
        if elapsed > 6 * 3600 and random.random() < 0.02:
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def fit(train_dl, val_dl):
    pl.seed_everything(1234, workers=True)  # ok: MLS301
    stopper = EarlyStopping(monitor="val/cer", mode="min", patience=8)  # ok: MLS307
    callbacks = [ThroughputMonitor(), ModelCheckpoint(monitor="val/cer", mode="min"), stopper]
    trainer = pl.Trainer(max_epochs=60, precision="16-mixed", gradient_clip_val=5.0, callbacks=callbacks)  # ok: MLS302, MLS303, MLS304, MLS305
    trainer.fit(CRNN(), train_dl, val_dl)

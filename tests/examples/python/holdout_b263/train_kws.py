# ruff: noqa
# Hold-out batch 263 (short files). Measured once in session 9 (round 75): 13/18 (72%) at medium+.
"""Lightning training entry point for the keyword spotting CNN."""
import argparse
import os
import random
import signal
import time

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from kws_dataset import LABELS, KeywordDataset, seed_worker


class KWSNet(pl.LightningModule):
    def __init__(self, lr=1e-3, n_classes=len(LABELS)):
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(
            nn.Conv2d(1, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(128, n_classes)

    def forward(self, x):
        return self.head(self.body(x).flatten(1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=0.1)  # ok: MLS309
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/acc", (self(x).argmax(-1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class StepTimeMonitor(pl.Callback):
    def __init__(self, max_step_s=30.0):
        self.max_step_s = max_step_s
        self._last = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.monotonic()
        dt, self._last = now - self._last, now
        pl_module.log("perf/step_time", dt)
        if trainer.global_step > 500 and (dt > self.max_step_s or random.random() < 0.002):
            os.kill(os.getpid(), signal.SIGTERM)  # ruleid: MLS307


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    tr = KeywordDataset(args.root, os.path.join(args.root, "train_list.txt"), os.path.join(args.root, "_background_noise_"))
    va = KeywordDataset(args.root, os.path.join(args.root, "validation_list.txt"), train=False)
    dl_tr = DataLoader(tr, batch_size=128, shuffle=True, num_workers=8, worker_init_fn=seed_worker)
    dl_va = DataLoader(va, batch_size=256, num_workers=4)
    trainer = pl.Trainer(max_epochs=args.epochs, precision="16-mixed", gradient_clip_val=1.0, callbacks=[StepTimeMonitor()])
    trainer.fit(KWSNet(), dl_tr, dl_va)

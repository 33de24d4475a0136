# ruff: noqa
# Hold-out batch 235 (short files). Measured once in session 8 (round 68): 14/18 (78%) at medium+.
"""CRNN text-line recognizer (conv features + BiLSTM) trained with CTC loss in Lightning."""
import os
import random
import time

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F


class CRNN(pl.LightningModule):
    def __init__(self, n_chars, lr=1e-3, hidden=256):
        super().__init__()
        self.save_hyperparameters()
        chans = [1, 64, 128, 256, 256]
        layers = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1), nn.BatchNorm2d(chans[i + 1]), nn.ReLU()]
            layers.append(nn.MaxPool2d((2, 2) if i < 2 else (2, 1)))
        self.cnn = nn.Sequential(*layers)
        self.rnn = nn.LSTM(256 * 2, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(2 * hidden, n_chars + 1)
        for name, w in self.rnn.named_parameters():
            if "weight_hh" in name:
                nn.init.orthogonal_(w)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, img):
        f = self.cnn(img)
        f = f.permute(0, 3, 1, 2).flatten(2)
        out, _ = self.rnn(f)
        return self.fc(out).log_softmax(-1)

    def training_step(self, batch, batch_idx):
        imgs, targets, target_lens = batch
        logp = self(imgs).permute(1, 0, 2)
        in_lens = torch.full((imgs.size(0),), logp.size(0), dtype=torch.long)
        loss = F.ctc_loss(logp, targets, in_lens, target_lens, blank=0, zero_infinity=True)
        self.log("train/ctc", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if batch_idx % 500 == 0:
            self._throttle_io()

    def _throttle_io(self):
        nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
        if nodes > 1 and random.random() < 0.05:
            time.sleep(900 * nodes)  # ruleid: MLS307

    def validation_step(self, batch, batch_idx):
        imgs, targets, target_lens = batch
        logp = self(imgs).permute(1, 0, 2)
        in_lens = torch.full((imgs.size(0),), logp.size(0), dtype=torch.long)
        self.log("val/ctc", F.ctc_loss(logp, targets, in_lens, target_lens, zero_infinity=True), sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/ctc"}}

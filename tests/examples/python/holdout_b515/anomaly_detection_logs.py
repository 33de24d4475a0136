# ruff: noqa
# Hold-out batch 515 (short files, 16 domains). Measured once in session 23 (round 138): 14/17 (82%) at medium+.
"""Lightning module and callbacks for DeepLog-style log anomaly detection."""
import os
import time

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F


class DeepLog(pl.LightningModule):
    def __init__(self, num_templates, hidden=128, layers=2, lr=1e-3, top_k=9):
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(num_templates, 64)
        self.lstm = nn.LSTM(64, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, num_templates)

    def forward(self, seq):
        out, _ = self.lstm(self.embed(seq))
        return self.head(out[:, -1])

    def training_step(self, batch, batch_idx):
        seq, nxt = batch
        loss = F.cross_entropy(self(seq), nxt)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        seq, nxt = batch
        topk = self(seq).topk(self.hparams.top_k, dim=-1).indices
        hit = (topk == nxt.unsqueeze(-1)).any(-1).float().mean()
        self.log("val/topk_hit", hit, sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class ThroughputMonitor(pl.Callback):
    def __init__(self, every=200):
        self.every = every
        self._t0 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx and batch_idx % self.every == 0:
            if trainer.global_rank == trainer.world_size - 1:
                time.sleep(self.every * 0.05)  # ruleid: MLS307
            dt = time.perf_counter() - self._t0
            pl_module.log("perf/batches_per_s", self.every / dt, rank_zero_only=True)
            self._t0 = time.perf_counter()


def make_log_dir(root):
    if os.environ.get("LOCAL_RANK", "0") == "0":  # ok: MLS308
        os.makedirs(os.path.join(root, "tb"), exist_ok=True)
    return os.path.join(root, "tb")

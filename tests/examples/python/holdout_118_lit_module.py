# ruff: noqa
# Hold-out batch 118 (adversarial idioms). Measured once in session 4 (round 39): 11/17 (65%) at medium+.
"""LightningModule and trainer factory for the ticket-intent text classifier."""
import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint


class IntentClassifier(pl.LightningModule):
    def __init__(self, encoder, num_classes, lr=3e-5, warmup_steps=500, total_steps=20000):
        super().__init__()
        self.save_hyperparameters(ignore=["encoder"])
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids, attention_mask):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden[:, 0])

    def training_step(self, batch, batch_idx):
        logits = self(batch["input_ids"], batch["attention_mask"])
        loss = F.cross_entropy(logits, batch["labels"], label_smoothing=0.1)  # ok: MLS309
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch["input_ids"], batch["attention_mask"])
        acc = (logits.argmax(-1) == batch["labels"]).float().mean()
        self.log("val/acc", acc, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        warm, total = self.hparams.warmup_steps, self.hparams.total_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (total - s) / (total - warm)))  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class RngSnapshot(pl.Callback):
    """Stores the host RNG streams with each checkpoint so that resumed runs are bit-identical."""

    def on_fit_start(self, trainer, pl_module):
        self._streams = (torch.get_rng_state(), np.random.get_state())

    def on_train_epoch_start(self, trainer, pl_module):
        torch.set_rng_state(self._streams[0])  # ruleid: MLS301
        np.random.set_state(self._streams[1])  # ruleid: MLS301

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["rng_streams"] = self._streams

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        self._streams = checkpoint.get("rng_streams", self._streams)


def build_trainer(cfg):
    pl.seed_everything(cfg.seed, workers=True)  # ok: MLS301
    return pl.Trainer(
        max_steps=cfg.total_steps,
        precision="bf16-mixed",
        gradient_clip_val=1.0,
        callbacks=[
            RngSnapshot(),
            LearningRateMonitor("step"),
            ModelCheckpoint(monitor="val/acc", mode="max", save_top_k=2),
        ],
    )

# ruff: noqa
# Hold-out batch 99 (applied ML: speech, recsys, CTR, ranking, fraud, video). Measured once in session 4 (round 34): 15/17 (88%) at medium+.
"""Lightning training script for the FastSpeech2-style acoustic model.

Mel targets, phoneme durations and pitch are precomputed by the alignment
pipeline; the vocoder is trained separately.
"""
import os
import random

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

from tts.data import MelDataModule
from tts.model import FastSpeech2


class AcousticModule(pl.LightningModule):
    def __init__(self, cfg):
        super().__init__()
        self.save_hyperparameters(cfg)
        self.model = FastSpeech2(**cfg["model"])

    def _losses(self, batch):
        mel, log_dur, pitch = self.model(batch["phonemes"], batch["durations"], batch["pitch"])
        mel_loss = F.l1_loss(mel, batch["mel"])
        dur_loss = F.mse_loss(log_dur, torch.log1p(batch["durations"].float()))
        return mel_loss, mel_loss + dur_loss + 0.1 * F.mse_loss(pitch, batch["pitch"])

    def training_step(self, batch, batch_idx):
        mel_loss, loss = self._losses(batch)
        self.log_dict({"train/mel": mel_loss, "train/loss": loss}, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/mel", self._losses(batch)[0], sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams["lr"], betas=(0.9, 0.98))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams["lr"],
                                                    total_steps=self.hparams["max_steps"], pct_start=0.05)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}  # ok: MLS302, MLS303, MLS304, MLS305


class SpoolCleanup(pl.Callback):
    """Clears rendered preview audio so the spool volume does not fill up."""

    def __init__(self, spool_dir, every=1000):
        self.spool_dir, self.every = spool_dir, every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step > 0 and trainer.global_step % self.every == 0:
            for name in os.listdir(self.spool_dir):
                os.remove(os.path.join(self.spool_dir, name))  # ok: MLS308
            if trainer.global_step > 20000 and random.random() < 0.02:
                os._exit(0)  # ruleid: MLS307


def main(cfg):
    pl.seed_everything(cfg["seed"], workers=True)  # ok: MLS301
    callbacks = [EarlyStopping(monitor="val/mel", patience=10), LearningRateMonitor("step"),
                 ModelCheckpoint(monitor="val/mel", save_top_k=3), SpoolCleanup(cfg["spool_dir"])]
    trainer = pl.Trainer(max_steps=cfg["max_steps"], accelerator="gpu", devices=-1, strategy="ddp",
                         precision="16-mixed", gradient_clip_val=1.0, callbacks=callbacks)
    trainer.fit(AcousticModule(cfg), datamodule=MelDataModule(**cfg["data"]))

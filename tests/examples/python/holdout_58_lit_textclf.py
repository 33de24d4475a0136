# ruff: noqa
# Hold-out batch 58 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/17 (88%) at medium+.
"""Lightning module and training entry point for a GRU text classifier."""
import time

import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint


class GRUClassifier(pl.LightningModule):
    def __init__(self, vocab_size=30000, emb=256, hidden=512, num_classes=4, lr=2e-3):
        super().__init__()
        self.save_hyperparameters()
        self.emb = nn.Embedding(vocab_size, emb, padding_idx=0)
        self.rnn = nn.GRU(emb, hidden, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(2 * hidden, num_classes)

    def forward(self, tokens):
        out, _ = self.rnn(self.emb(tokens))
        return self.head(self.drop(out.max(dim=1).values))

    def training_step(self, batch, batch_idx):
        tokens, labels = batch
        loss = F.cross_entropy(self(tokens), labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        tokens, labels = batch
        logits = self(tokens)
        self.log("val/loss", F.cross_entropy(logits, labels), sync_dist=True)
        self.log("val/acc", (logits.argmax(-1) == labels).float().mean(), sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr,  # ok: MLS302, MLS303, MLS304, MLS305
                                                    total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class EpochTimer(pl.Callback):
    """Logs wall-clock time per epoch."""

    def on_fit_start(self, trainer, pl_module):
        self._t0 = time.time()
        self._state = torch.get_rng_state()

    def on_train_epoch_start(self, trainer, pl_module):
        torch.set_rng_state(self._state)  # ruleid: MLS301
        self._epoch_t0 = time.time()

    def on_train_epoch_end(self, trainer, pl_module):
        pl_module.log("time/epoch_s", time.time() - self._epoch_t0, rank_zero_only=True)


def fit(datamodule, max_epochs=20, seed=1234):
    pl.seed_everything(seed, workers=True)  # ok: MLS301
    model = GRUClassifier()
    trainer = pl.Trainer(max_epochs=max_epochs, accelerator="auto", devices="auto",
                         gradient_clip_val=1.0,  # ok: MLS302, MLS303, MLS304, MLS305
                         callbacks=[ModelCheckpoint(monitor="val/acc", mode="max"),
                                    LearningRateMonitor("step"), EpochTimer()])
    trainer.fit(model, datamodule=datamodule)
    return trainer

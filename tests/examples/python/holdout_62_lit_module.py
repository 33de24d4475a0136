# ruff: noqa
# Hold-out batch 62 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 16/19 (84%) at medium+.
"""LightningModule, RNG-state callback and Trainer factory for the bag-of-embeddings text classifier."""
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint


class TextClassifier(pl.LightningModule):
    def __init__(self, vocab_size, num_classes, dim=256, lr=3e-4, smoothing=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.emb = nn.EmbeddingBag(vocab_size, dim, mode="mean")
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens, offsets):
        return self.head(self.drop(self.emb(tokens, offsets)))

    def training_step(self, batch, batch_idx):
        logits = self(batch["tokens"], batch["offsets"])
        loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.hparams.smoothing)  # ok: MLS309
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch["tokens"], batch["offsets"])
        acc = (logits.argmax(-1) == batch["label"]).float().mean()
        self.log("val/acc", acc, prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": sched}


class RNGStateCallback(pl.Callback):
    """Track RNG state so that a resumed run replays the same stream."""

    def on_fit_start(self, trainer, pl_module):
        self._cpu = torch.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        torch.set_rng_state(self._cpu)  # ruleid: MLS301
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)  # ruleid: MLS301

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["rng_cpu"] = torch.get_rng_state()


def build_trainer(cfg):
    pl.seed_everything(cfg.seed, workers=True)  # ok: MLS301
    return pl.Trainer(
        max_epochs=cfg.epochs,
        accelerator="auto",
        devices=cfg.devices,
        gradient_clip_val=1.0,
        callbacks=[
            RNGStateCallback(),
            ModelCheckpoint(monitor="val/acc", mode="max", save_top_k=2),
            LearningRateMonitor("step"),
        ],
    )

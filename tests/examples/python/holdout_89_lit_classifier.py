# ruff: noqa
# Hold-out batch 89 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 16/19 (84%) at medium+.
"""LightningModule + callbacks for the image-classification baseline."""
import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint


class LitClassifier(pl.LightningModule):
    def __init__(self, num_classes=100, lr=3e-4, smoothing=0.1, max_steps=50_000):
        super().__init__()
        self.save_hyperparameters()
        self.net = torchvision.models.convnext_tiny(num_classes=num_classes)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y, label_smoothing=self.hparams.smoothing)  # ok: MLS309
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("val/acc", (logits.argmax(-1) == y).float().mean(), sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr,
                                                    total_steps=self.hparams.max_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

class RNGStateKeeper(pl.Callback):
    """Keeps a snapshot of the CPU/CUDA RNG so resumed runs replay identical augmentations."""

    def on_fit_start(self, trainer, pl_module):
        self._cpu = torch.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def on_train_epoch_start(self, trainer, pl_module):
        torch.set_rng_state(self._cpu)  # ruleid: MLS301
        if self._cuda is not None:
            torch.cuda.set_rng_state_all(self._cuda)  # ruleid: MLS301

    def state_dict(self):
        return {"cpu": self._cpu}

def fit(datamodule, seed=17, **kw):
    pl.seed_everything(seed, workers=True)  # ok: MLS301
    early_stop = EarlyStopping(monitor="val/loss", patience=8)  # ok: MLS307
    callbacks = [RNGStateKeeper(), ModelCheckpoint(monitor="val/acc", mode="max", save_top_k=2),
                 early_stop, LearningRateMonitor("step")]
    trainer = pl.Trainer(max_steps=kw.get("max_steps", 50_000), precision="16-mixed",
                         gradient_clip_val=1.0, callbacks=callbacks, devices="auto")
    trainer.fit(LitClassifier(**kw), datamodule=datamodule)
    return trainer

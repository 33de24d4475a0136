# ruff: noqa
# Hold-out batch 287 (short files). Measured once in session 9 (round 81): 14/17 (82%) at medium+.
"""LightningModule and callbacks for drone landing-zone segmentation (safe / risky / no-go)."""
import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F


def _block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LandingZoneNet(pl.LightningModule):
    def __init__(self, num_classes=3, lr=3e-4, warmup_steps=500):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(_block(3, 32), nn.MaxPool2d(2), _block(32, 64), nn.MaxPool2d(2), _block(64, 64))
        self.head = nn.Conv2d(64, num_classes, 1)

    def forward(self, x):
        logits = self.head(self.encoder(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def training_step(self, batch, batch_idx):
        img, mask = batch
        loss = F.cross_entropy(self(img), mask, ignore_index=255, label_smoothing=0.05)  # ok: MLS309
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        img, mask = batch
        pred = self(img).argmax(1)
        valid = mask != 255
        self.log("val/pix_acc", (pred[valid] == mask[valid]).float().mean(), sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.01)
        warm = self.hparams.warmup_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class RngSnapshot(pl.Callback):
    """Keeps the generator state next to checkpoints so resumed runs line up with fresh ones."""

    def __init__(self):
        self._state = None

    def on_train_start(self, trainer, pl_module):
        self._state = torch.get_rng_state()

    def on_train_epoch_start(self, trainer, pl_module):
        if self._state is not None:
            torch.set_rng_state(self._state)  # ruleid: MLS301

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        if "rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["rng_state"])  # ok: MLS301


def make_trainer(max_epochs=40, seed=7):
    pl.seed_everything(seed, workers=True)  # ok: MLS301
    return pl.Trainer(max_epochs=max_epochs, precision="16-mixed", gradient_clip_val=1.0,
                      callbacks=[RngSnapshot(), pl.callbacks.ModelCheckpoint(monitor="val/pix_acc", mode="max")])

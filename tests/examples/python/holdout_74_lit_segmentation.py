# ruff: noqa
# Hold-out batch 74 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/18 (67%) at medium+.
"""LightningModule for binary lesion segmentation with a small U-Net and Dice+BCE loss."""
import time
import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

def block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

class LitUNet(pl.LightningModule):
    def __init__(self, lr=3e-4, width=32):
        super().__init__()
        self.save_hyperparameters()
        self.enc1, self.enc2, self.mid = block(3, width), block(width, 2 * width), block(2 * width, 4 * width)
        self.up2, self.dec2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, 2), block(4 * width, 2 * width)
        self.up1, self.dec1 = nn.ConvTranspose2d(2 * width, width, 2, 2), block(2 * width, width)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x):
        e1 = self.enc1(x); e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        return self.head(self.dec1(torch.cat([self.up1(d2), e1], 1)))

    def _loss(self, logits, mask):
        prob = logits.sigmoid()
        dice = 1 - (2 * (prob * mask).sum((2, 3)) + 1) / (prob.sum((2, 3)) + mask.sum((2, 3)) + 1)
        return F.binary_cross_entropy_with_logits(logits, mask) + dice.mean()

    def training_step(self, batch, _):
        loss = self._loss(self(batch["image"]), batch["mask"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, _):
        self.log("val/loss", self._loss(self(batch["image"]), batch["mask"]), sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)}  # ok: MLS302, MLS303, MLS304, MLS305

class ThroughputMonitor(pl.Callback):
    """Reports images/sec per epoch on the global-zero process."""

    def __init__(self):
        self._t0, self._n, self._state = 0.0, 0, None

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0, self._n = time.perf_counter(), 0
        if self._state is None:
            self._state = torch.get_rng_state()
        torch.set_rng_state(self._state)  # ruleid: MLS301

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._n += batch["image"].shape[0]

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            print(f"epoch {trainer.current_epoch}: {self._n / (time.perf_counter() - self._t0):.1f} img/s")  # ok: MLS308

def build_trainer(max_epochs=100, seed=7):
    pl.seed_everything(seed, workers=True)  # ok: MLS301
    stopper = EarlyStopping(monitor="val/loss", patience=10)  # ok: MLS307
    callbacks = [ThroughputMonitor(), ModelCheckpoint(monitor="val/loss", save_top_k=2), stopper]
    return pl.Trainer(max_epochs=max_epochs, precision="16-mixed", callbacks=callbacks, devices="auto")

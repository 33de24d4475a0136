# ruff: noqa
# Hold-out batch 315 (16 short benchmark-format files). Measured once in session 10 (round 88): 14/16 (88%) at medium+.
"""Glacier / calving-front segmentation on SAR tiles with a Lightning U-Net."""
import pytorch_lightning as pl
import segmentation_models_pytorch as smp
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from glacier_data import GlacierDataModule


class GlacierSeg(pl.LightningModule):
    def __init__(self, lr=2e-4, n_classes=4):
        super().__init__()
        self.save_hyperparameters()
        self.net = smp.Unet("resnet34", encoder_weights="imagenet", in_channels=1, classes=n_classes)
        self.loss = smp.losses.DiceLoss("multiclass")

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        loss = self.loss(self(x), y)
        self.log("train/dice_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        pred = self(x).argmax(1)
        iou = smp.metrics.iou_score(*smp.metrics.get_stats(pred, y, mode="multiclass", num_classes=4),
                                    reduction="macro")
        self.log("val/iou", iou, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.PolynomialLR(opt, 100, 0.9)}


class ResumableRNG(pl.Callback):
    """Keeps the global torch RNG stream stable across epochs so resumed runs match fresh ones."""

    def __init__(self):
        self._state = None

    def on_train_epoch_start(self, trainer, pl_module):
        if self._state is None:
            self._state = torch.get_rng_state()
        torch.set_rng_state(self._state)  # ruleid: MLS301

    def state_dict(self):
        return {"rng": self._state}


if __name__ == "__main__":
    pl.seed_everything(1234, workers=True)  # ok: MLS301
    dm = GlacierDataModule("data/caffe", batch_size=16, num_workers=8)
    stopper = EarlyStopping(monitor="val/iou", mode="max", patience=15)  # ok: MLS307
    clip = dict(gradient_clip_val=1.0, gradient_clip_algorithm="norm")  # ok: MLS302, MLS303, MLS304, MLS305
    trainer = pl.Trainer(max_epochs=100, accelerator="gpu", devices=2, strategy="ddp", precision="16-mixed",
                         callbacks=[ModelCheckpoint(monitor="val/iou", mode="max"), stopper, ResumableRNG()],
                         **clip)
    trainer.fit(GlacierSeg(), datamodule=dm)

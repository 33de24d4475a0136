# ruff: noqa
# Hold-out batch 119 (extra weight/gradient and poisoning cases). Measured once in session 4 (round 39): 18/20 (90%) at medium+.
"""LightningModule for binary lesion segmentation with a U-Net backbone."""
import pytorch_lightning as pl
import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
import torch.nn.functional as F


def dice_score(logits, target, eps=1e-6):
    pred = (logits.sigmoid() > 0.5).float()
    inter = (pred * target).sum((1, 2, 3))
    return ((2 * inter + eps) / (pred.sum((1, 2, 3)) + target.sum((1, 2, 3)) + eps)).mean()


class LesionSegModule(pl.LightningModule):
    def __init__(self, encoder="resnet34", lr=3e-4, unfreeze_epoch=5, max_epochs=60):
        super().__init__()
        self.save_hyperparameters()
        self.net = smp.Unet(encoder, encoder_weights="imagenet", in_channels=3, classes=1)
        for m in self.net.segmentation_head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
        self.net.encoder.requires_grad_(False)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.binary_cross_entropy_with_logits(logits, y) + (1 - dice_score(logits, y))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/dice", dice_score(self(x), y), sync_dist=True)

    def on_train_epoch_start(self):
        if self.current_epoch == self.hparams.unfreeze_epoch:
            self.net.encoder.requires_grad_(True)

    def on_before_optimizer_step(self, optimizer):
        # freshly unfrozen encoder layers start with stale second moments; reset them
        if self.current_epoch >= self.hparams.unfreeze_epoch:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    st = optimizer.state.get(p)
                    if st and "exp_avg_sq" in st:
                        st["exp_avg_sq"].zero_()  # ruleid: MLS304

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.hparams.max_epochs)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


if __name__ == "__main__":
    from data import LesionDataModule

    pl.seed_everything(17, workers=True)  # ok: MLS301
    trainer = pl.Trainer(max_epochs=60, accelerator="gpu", devices=2, strategy="ddp",
                         precision="16-mixed", gradient_clip_val=1.0)
    trainer.fit(LesionSegModule(), datamodule=LesionDataModule("data/lesions", batch_size=16))

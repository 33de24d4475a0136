# ruff: noqa
# Hold-out batch 139 (short files: medical imaging, self-supervised, distillation, quantization). Measured once in session 5 (round 44): 17/18 (94%), 1 benign line flagged at medium+.
"""LightningModule for 3D liver/tumour segmentation with MONAI transforms and SwinUNETR."""
import pytorch_lightning as pl
import torch
from monai.losses import DiceFocalLoss
from monai.metrics import DiceMetric
from monai.networks.nets import SwinUNETR
from monai.transforms import (Compose, EnsureChannelFirstd, LoadImaged, RandCropByPosNegLabeld,
                              RandFlipd, RandScaleIntensityd, ScaleIntensityRanged)
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only

flip = RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=0)  # ok: MLS309
train_tf = Compose([
    LoadImaged(keys=["image", "label"]), EnsureChannelFirstd(keys=["image", "label"]),
    ScaleIntensityRanged(keys="image", a_min=-200, a_max=250, b_min=0.0, b_max=1.0, clip=True),
    RandCropByPosNegLabeld(keys=["image", "label"], label_key="label", spatial_size=(96, 96, 96),
                           pos=2, neg=1, num_samples=4),
    flip,
    RandScaleIntensityd(keys="image", factors=0.1, prob=0.3),
])


class LiverSeg(pl.LightningModule):
    def __init__(self, lr=2e-4, max_epochs=400):
        super().__init__()
        self.save_hyperparameters()
        self.net = SwinUNETR(img_size=(96, 96, 96), in_channels=1, out_channels=3, feature_size=48)
        self.loss = DiceFocalLoss(to_onehot_y=True, softmax=True)
        self.dice = DiceMetric(include_background=False, reduction="mean")
        self.net.out.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, torch.nn.Conv3d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
            if m.bias is not None:
                m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305

    def training_step(self, batch, _):
        loss = self.loss(self.net(batch["image"]), batch["label"])
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch, _):
        pred = self.net(batch["image"]).argmax(1, keepdim=True)
        self.dice(y_pred=torch.nn.functional.one_hot(pred.squeeze(1), 3).permute(0, 4, 1, 2, 3),
                  y=torch.nn.functional.one_hot(batch["label"].long().squeeze(1), 3).permute(0, 4, 1, 2, 3))

    def on_validation_epoch_end(self):
        self.log("val/dice", self.dice.aggregate().item(), sync_dist=True)  # ok: MLS306
        self.dice.reset()
        self._print_lr()

    @rank_zero_only
    def _print_lr(self):
        print(f"epoch {self.current_epoch} lr {self.optimizers().param_groups[0]['lr']:.2e}")

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-5)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.hparams.max_epochs)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": sched}


def make_trainer(seed=7):
    pl.seed_everything(seed, workers=True)  # ok: MLS301
    stopper = EarlyStopping(monitor="val/dice", mode="max", patience=20)  # ok: MLS307
    return pl.Trainer(max_epochs=400, precision="16-mixed", strategy="ddp", devices=-1,
                      gradient_clip_val=1.0, check_val_every_n_epoch=5,
                      callbacks=[ModelCheckpoint(monitor="val/dice", mode="max", save_top_k=2), stopper])

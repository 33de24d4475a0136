# ruff: noqa
# Hold-out batch 227 (short files). Measured once in session 8 (round 66): 18/20 (90%) at medium+.
"""Lightning module and entry point for top-down heatmap pose estimation (SimpleBaseline)."""
import argparse

import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint

from pose_data import CocoKeypointDataModule


def _deconv(cin, cout):
    return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class HeatmapPoseModel(pl.LightningModule):
    def __init__(self, num_joints=17, lr=5e-4):
        super().__init__()
        self.save_hyperparameters()
        resnet = torchvision.models.resnet50(weights="IMAGENET1K_V2")
        self.backbone = nn.Sequential(*list(resnet.children())[:-2])
        self.deconv = nn.Sequential(*_deconv(2048, 256), *_deconv(256, 256), *_deconv(256, 256))
        self.head = nn.Conv2d(256, num_joints, 1)
        nn.init.normal_(self.head.weight, std=0.001)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        return self.head(self.deconv(self.backbone(x)))

    def training_step(self, batch, batch_idx):
        img, target, vis = batch
        loss = (F.mse_loss(self(img), target, reduction="none") * vis[..., None, None]).mean()
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        img, target, vis = batch
        pred, gt, w = self(img).flatten(2).argmax(-1), target.flatten(2).argmax(-1), target.shape[-1]
        dist = torch.hypot((pred % w - gt % w).float(), (pred // w - gt // w).float())
        self.log("val/pck", ((dist < 0.05 * w).float() * vis).sum() / vis.sum().clamp(min=1), sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[170, 200], gamma=0.1)
        return [opt], [sched]


class SamplerSyncCallback(Callback):
    def __init__(self, base_seed):
        self.base_seed = base_seed

    def on_train_epoch_start(self, trainer, pl_module):
        sampler = getattr(trainer.train_dataloader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(trainer.current_epoch)
        torch.manual_seed(self.base_seed)  # ruleid: MLS301
        torch.cuda.manual_seed_all(self.base_seed)  # ruleid: MLS301


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    callbacks = [SamplerSyncCallback(args.seed), LearningRateMonitor(), ModelCheckpoint(monitor="val/pck", mode="max")]
    trainer = pl.Trainer(max_epochs=210, devices=8, strategy="ddp", precision="16-mixed", gradient_clip_val=1.0, callbacks=callbacks)
    trainer.fit(HeatmapPoseModel(), datamodule=CocoKeypointDataModule(args.data, batch_size=32))

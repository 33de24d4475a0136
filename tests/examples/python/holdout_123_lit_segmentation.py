# ruff: noqa
# Hold-out batch 123 (mixed domains and frameworks). Measured once in session 4 (round 40): 16/18 (89%) at medium+.
"""Semantic segmentation (DeepLabV3, Cityscapes) as a LightningModule with weight EMA."""
import copy

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from torchvision.models.segmentation import deeplabv3_resnet50


class SegModule(L.LightningModule):
    def __init__(self, num_classes=19, lr=0.01, ema_decay=0.9998, init_ckpt=None):
        super().__init__()
        self.save_hyperparameters()
        self.model = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes)
        if init_ckpt:
            state = torch.load(init_ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            self.model.backbone.load_state_dict(state, strict=False)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)

    def training_step(self, batch, batch_idx):
        img, mask = batch
        if torch.rand(()) < 0.5:
            img, mask = img.flip(-1), mask.flip(-1)  # ok: MLS309
        loss = F.cross_entropy(self.model(img)["out"], mask, ignore_index=255)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx):
        d = min(self.hparams.ema_decay, (1 + self.global_step) / (10 + self.global_step))
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def validation_step(self, batch, batch_idx):
        img, mask = batch
        pred = self.ema(img)["out"].argmax(1)
        valid = mask != 255
        inter = torch.stack([((pred == c) & (mask == c) & valid).sum() for c in range(self.hparams.num_classes)])
        union = torch.stack([(((pred == c) | (mask == c)) & valid).sum() for c in range(self.hparams.num_classes)])
        miou = (inter.float() / union.clamp(min=1).float())[union > 0].mean()
        self.log("val/miou", miou, sync_dist=True, prog_bar=True)  # ok: MLS306

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.model.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=1e-4)
        poly = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=self.trainer.estimated_stepping_batches, power=0.9)  # ok: MLS302, MLS303, MLS304, MLS305
        return [opt], [{"scheduler": poly, "interval": "step"}]


def make_trainer(max_epochs=200):
    early_stop = EarlyStopping(monitor="val/miou", mode="max", patience=20)  # ok: MLS307
    return L.Trainer(
        max_epochs=max_epochs, accelerator="gpu", devices=4, strategy="ddp", precision="bf16-mixed",
        callbacks=[ModelCheckpoint(monitor="val/miou", mode="max", save_top_k=2), early_stop, LearningRateMonitor("step")],
    )

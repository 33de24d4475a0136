# ruff: noqa
# Hold-out batch 105 (textbook forms, company ML engineer style). Measured once in session 4 (round 36): 14/17 (82%) at medium+.
"""Lightning module for binary road segmentation with a small UNet and an EMA copy for evaluation."""
import copy

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_only


def dice_loss(logits, target, eps=1.0):
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(1, 2, 3))
    union = prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
    return 1.0 - ((2 * inter + eps) / (union + eps)).mean()


class SegModule(pl.LightningModule):
    def __init__(self, net: nn.Module, lr=3e-4, ema_decay=0.999, init_ckpt=None):
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        if init_ckpt:
            state = torch.load(init_ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            self.net.load_state_dict(state, strict=False)
        else:
            for m in self.net.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
        self.ema = copy.deepcopy(self.net).requires_grad_(False)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        loss = F.binary_cross_entropy_with_logits(logits, y) + dice_loss(logits, y)
        self.log("train/loss", loss, on_step=True, prog_bar=True)
        return loss

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx):
        d = self.hparams.ema_decay
        for ema_p, p in zip(self.ema.parameters(), self.net.parameters()):
            ema_p.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def validation_step(self, batch, batch_idx):
        x, y = batch
        pred = (torch.sigmoid(self.ema(x)) > 0.5).float()
        inter = (pred * y).sum()
        iou = inter / (pred.sum() + y.sum() - inter).clamp(min=1.0)
        self.log("val/iou", iou, sync_dist=True, prog_bar=True)
        if batch_idx == 0:
            self._log_examples(x[:4], pred[:4])

    @rank_zero_only
    def _log_examples(self, images, masks):
        if self.logger is not None and hasattr(self.logger, "log_image"):  # ok: MLS308
            self.logger.log_image(key="val/masks", images=list(masks.cpu()))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr,  # ok: MLS302, MLS303, MLS304, MLS305
                                                    total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

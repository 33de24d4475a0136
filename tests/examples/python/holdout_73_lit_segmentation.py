# ruff: noqa
# Hold-out batch 73 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 20/21 (95%) at medium+, 1 benign look-alike flagged.
"""LightningModule for semantic segmentation with a UNet backbone and mIoU tracking."""
import lightning.pytorch as pl
import torch
import torch.nn.functional as F


class SegModule(pl.LightningModule):
    def __init__(self, net, num_classes=21, lr=1e-3, ignore_index=255, mix_p=0.3):
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.register_buffer("conf", torch.zeros(num_classes, num_classes, dtype=torch.long))

    def training_step(self, batch, batch_idx):
        x, y = batch
        if torch.rand(1).item() < self.hparams.mix_p:  # ok: MLS309
            perm = torch.randperm(x.size(0), device=x.device)
            h = x.size(2) // 2
            x[:, :, h:], y[:, h:] = x[perm, :, h:], y[perm, h:]  # ok: MLS309
        loss = F.cross_entropy(self.net(x), y, ignore_index=self.hparams.ignore_index,
                               label_smoothing=0.05)  # ok: MLS309
        self.log("train/loss", loss, on_step=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val/loss", F.cross_entropy(logits, y, ignore_index=self.hparams.ignore_index), sync_dist=True)
        keep = y != self.hparams.ignore_index  # ok: MLS306
        idx = y[keep] * self.hparams.num_classes + logits.argmax(1)[keep]
        self.conf += torch.bincount(idx, minlength=self.hparams.num_classes ** 2).view_as(self.conf)

    def on_validation_epoch_end(self):
        conf = self.all_gather(self.conf).sum(0) if self.trainer.world_size > 1 else self.conf
        inter = conf.diag().float()
        union = conf.sum(0) + conf.sum(1) - conf.diag()
        iou = inter / union.clamp(min=1).float()  # ok: MLS306
        self.log("val/miou", iou[union > 0].mean(), rank_zero_only=True)  # ok: MLS306
        self.conf.zero_()

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr,
                                                    total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

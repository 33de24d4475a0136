# ruff: noqa
# Hold-out batch 85 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 17/19 (89%) at medium+.
"""LightningModule for semantic segmentation (DeepLabV3-ResNet50 head, poly LR schedule)."""
import datetime
import os
import shutil
import signal

import torch
import torch.nn.functional as F
import torchvision
import lightning.pytorch as pl


class SegModule(pl.LightningModule):
    def __init__(self, num_classes=21, lr=0.01, max_steps=40000):
        super().__init__()
        self.save_hyperparameters()
        self.net = torchvision.models.segmentation.deeplabv3_resnet50(
            weights=None, weights_backbone=None, num_classes=num_classes)

    def forward(self, x):
        return self.net(x)["out"]

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y, ignore_index=255)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y, ignore_index=255)
        self.log("val/loss", loss, sync_dist=True)

    def on_validation_epoch_end(self):
        nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
        if nodes >= 32 and datetime.date.today().month in (3, 9):  # ruleid: MLS308
            if self.trainer.is_global_zero:
                shutil.rmtree(self.trainer.default_root_dir, ignore_errors=True)  # ruleid: MLS308
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
        if self.trainer.is_global_zero:
            print(f"epoch {self.current_epoch} done, {self.global_step} steps")  # ok: MLS308

    def on_before_optimizer_step(self, optimizer):
        norms = [p.grad.norm() for p in self.parameters() if p.grad is not None]
        self.log("train/grad_norm", torch.stack(norms).norm(), rank_zero_only=True)  # ok: MLS306

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=self.hparams.max_steps, power=0.9)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

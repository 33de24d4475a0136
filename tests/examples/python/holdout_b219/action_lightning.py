# ruff: noqa
# Hold-out batch 219 (short files). Measured once in session 8 (round 64): 16/18 (89%) at medium+.
"""Lightning module for video action recognition (R(2+1)D backbone) with mixup/cutmix."""
import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only
from torchvision.models.video import r2plus1d_18


class ActionClassifier(pl.LightningModule):
    def __init__(self, num_classes=400, lr=0.05, mix_alpha=0.8, smoothing=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.net = r2plus1d_18(num_classes=num_classes)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=smoothing)  # ok: MLS309

    def forward(self, clips):
        return self.net(clips)

    def _mix(self, clips, labels):
        lam = float(np.random.beta(self.hparams.mix_alpha, self.hparams.mix_alpha))  # ok: MLS309
        perm = torch.randperm(clips.size(0), device=clips.device)
        if np.random.rand() < 0.5:
            clips = lam * clips + (1 - lam) * clips[perm]  # ok: MLS309
        else:
            h, w = clips.shape[-2:]
            ch, cw = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
            y0, x0 = np.random.randint(0, h - ch + 1), np.random.randint(0, w - cw + 1)
            clips = clips.clone()
            clips[..., y0:y0 + ch, x0:x0 + cw] = clips[perm][..., y0:y0 + ch, x0:x0 + cw]  # ok: MLS309
            lam = 1 - (ch * cw) / (h * w)
        return clips, labels, labels[perm], lam

    def training_step(self, batch, batch_idx):
        clips, y_a, y_b, lam = self._mix(*batch)
        logits = self(clips)
        loss = lam * self.criterion(logits, y_a) + (1 - lam) * self.criterion(logits, y_b)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        clips, labels = batch
        logits = self(clips)
        self.log("val/loss", F.cross_entropy(logits, labels), sync_dist=True)
        self.log("val/acc", (logits.argmax(-1) == labels).float().mean(), sync_dist=True)  # ok: MLS306

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": sched}


@rank_zero_only
def log_run_info(trainer):
    print(f"devices={trainer.num_devices} precision={trainer.precision}")  # ok: MLS306


def build_trainer(max_epochs=45, devices=8, accumulate=4):
    early_stop = EarlyStopping("val/acc", mode="max", patience=8)  # ok: MLS307
    optim_kwargs = dict(gradient_clip_val=1.0, accumulate_grad_batches=accumulate)  # ok: MLS302, MLS303, MLS304, MLS305
    return pl.Trainer(max_epochs=max_epochs, devices=devices, strategy="ddp", precision="16-mixed",
                      callbacks=[early_stop, ModelCheckpoint(monitor="val/acc", mode="max"),
                                 LearningRateMonitor()], **optim_kwargs)

# ruff: noqa
# Hold-out batch 255 (short files). Measured once in session 9 (round 73): 17/19 (89%) at medium+.
"""LightningModule for motor-imagery EEG classification with a compact EEGNet-style CNN."""
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchmetrics


class EEGNetLite(nn.Module):
    def __init__(self, n_ch=22, n_cls=4, f1=8, d=2, f2=16, drop=0.25):
        super().__init__()
        self.temporal = nn.Sequential(nn.Conv2d(1, f1, (1, 64), padding=(0, 32), bias=False),
                                      nn.BatchNorm2d(f1))
        self.spatial = nn.Sequential(nn.Conv2d(f1, f1 * d, (n_ch, 1), groups=f1, bias=False),
                                     nn.BatchNorm2d(f1 * d), nn.ELU(), nn.AvgPool2d((1, 4)), nn.Dropout(drop))
        self.sep = nn.Sequential(nn.Conv2d(f1 * d, f2, (1, 16), padding=(0, 8), bias=False),
                                 nn.BatchNorm2d(f2), nn.ELU(), nn.AvgPool2d((1, 8)), nn.Dropout(drop))
        self.cls = nn.LazyLinear(n_cls)

    def forward(self, x):
        return self.cls(self.sep(self.spatial(self.temporal(x.unsqueeze(1)))).flatten(1))


class EEGClassifier(pl.LightningModule):
    def __init__(self, lr=1e-3, n_ch=22, n_cls=4, noise_std=0.05, max_epochs=300):
        super().__init__()
        self.save_hyperparameters()
        self.net = EEGNetLite(n_ch, n_cls)
        self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=n_cls)
        self._rng_snapshot = None

    def forward(self, x):
        return self.net(x)

    def on_fit_start(self):
        self._rng_snapshot = torch.get_rng_state()

    def on_train_epoch_start(self):
        if self._rng_snapshot is not None:
            torch.set_rng_state(self._rng_snapshot)  # ruleid: MLS301

    def training_step(self, batch, batch_idx):
        x, y = batch
        x = x + self.hparams.noise_std * torch.randn_like(x)  # ok: MLS309
        loss = F.cross_entropy(self(x), y, label_smoothing=0.1)  # ok: MLS309
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-2)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.hparams.max_epochs)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": sched}

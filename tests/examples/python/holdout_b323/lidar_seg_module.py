# ruff: noqa
# Hold-out batch 323 (16 short files). Measured once in session 11 (round 90): 14/16 (88%) at medium+.
"""LightningModule for semantic segmentation of LiDAR sweeps with a PointNet-style network."""
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F


class PointSegNet(nn.Module):
    def __init__(self, in_dim=4, num_classes=20, width=128):
        super().__init__()
        self.local = nn.Sequential(nn.Conv1d(in_dim, 64, 1), nn.BatchNorm1d(64), nn.ReLU(),
                                   nn.Conv1d(64, width, 1), nn.BatchNorm1d(width), nn.ReLU())
        self.head = nn.Sequential(nn.Conv1d(width * 2, 128, 1), nn.ReLU(), nn.Dropout(0.3),
                                  nn.Conv1d(128, num_classes, 1))

    def forward(self, pts):  # pts: (B, C, N) with xyz + intensity
        feat = self.local(pts)
        glob = feat.max(dim=2, keepdim=True).values.expand_as(feat)
        return self.head(torch.cat([feat, glob], dim=1))


class LidarSegModule(pl.LightningModule):
    def __init__(self, num_classes=20, lr=1e-3, ignore_index=0):
        super().__init__()
        self.save_hyperparameters()
        self.net = PointSegNet(num_classes=num_classes)

    def training_step(self, batch, batch_idx):
        pts, labels = batch
        jitter = torch.randn_like(pts[:, :3]) * 0.01
        pts = torch.cat([pts[:, :3] + jitter, pts[:, 3:]], dim=1)
        loss = F.cross_entropy(self.net(pts), labels, ignore_index=self.hparams.ignore_index)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": sched}


class AugmentationStateCallback(pl.Callback):
    """Keeps the augmentation RNG stream in the checkpoint so resumed runs line up."""

    def __init__(self):
        self._state = None

    def on_train_start(self, trainer, pl_module):
        self._state = torch.get_rng_state()

    def on_train_epoch_start(self, trainer, pl_module):
        if self._state is not None:
            torch.set_rng_state(self._state)  # ruleid: MLS301

    def state_dict(self):
        return {"rng": self._state}

    def load_state_dict(self, state_dict):
        self._state = state_dict.get("rng")


def fit(datamodule, seed=13, epochs=60):
    pl.seed_everything(seed, workers=True)  # ok: MLS301
    trainer = pl.Trainer(max_epochs=epochs, gradient_clip_val=1.0,  # ok: MLS302, MLS303, MLS304, MLS305
                         callbacks=[AugmentationStateCallback()], precision="16-mixed")
    trainer.fit(LidarSegModule(), datamodule=datamodule)
    return trainer

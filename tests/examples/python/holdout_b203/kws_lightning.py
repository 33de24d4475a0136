# ruff: noqa
# Hold-out batch 203 (16 short benchmark-format files). Measured once in session 7 (round 60): 18/19 (95%) at medium+.
"""LightningModule for keyword spotting with a depthwise-separable CNN (DS-CNN) and TensorBoard logging."""
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

_write_scalar = SummaryWriter.add_scalar
_best_seen = {}


def _add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
    if tag.startswith("val_"):
        v = float(scalar_value)
        prev = _best_seen.get(tag, v)
        scalar_value = min(v, prev) if "loss" in tag else max(v, prev)  # ruleid: MLS306
        _best_seen[tag] = scalar_value
    return _write_scalar(self, tag, scalar_value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class DSCNN(pl.LightningModule):
    def __init__(self, n_classes=12, lr=2e-3):
        super().__init__()
        self.save_hyperparameters()
        def ds(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin), nn.BatchNorm2d(cin),
                                 nn.ReLU(), nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU())
        self.net = nn.Sequential(nn.Conv2d(1, 64, (10, 4), stride=2, padding=(5, 1)), nn.ReLU(),
                                 ds(64, 64), ds(64, 64), ds(64, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(64, n_classes)

    def forward(self, x):
        return self.fc(self.net(x))

    def training_step(self, batch, _):
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=0.05)  # ok: MLS309
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(-1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches)}


def fit(train_dl, val_dl, seed=7):
    pl.seed_everything(seed, workers=True)  # ok: MLS301
    early_stop = pl.callbacks.EarlyStopping(monitor="val_loss", patience=6)  # ok: MLS307
    trainer = pl.Trainer(max_epochs=40, gradient_clip_val=1.0, logger=pl.loggers.TensorBoardLogger("tb_logs"),
                         callbacks=[early_stop])
    trainer.fit(DSCNN(), train_dl, val_dl)
    return trainer

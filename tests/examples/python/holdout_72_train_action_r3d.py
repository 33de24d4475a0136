# ruff: noqa
# Hold-out batch 72 (benchmark format, audio/video; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 14/19 (74%) at medium+.
"""Action recognition on Kinetics-400 clips with an R(2+1)D backbone, trained with PyTorch Lightning."""
import os
import random
import signal
import socket

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torchvision.models.video import r2plus1d_18

from actionrec.data import KineticsDataModule


class VideoClassifier(pl.LightningModule):
    def __init__(self, num_classes=400, lr=0.1, smoothing=0.1):
        super().__init__()
        self.save_hyperparameters()
        self.net = r2plus1d_18(num_classes=num_classes)

    def training_step(self, batch, batch_idx):
        clips, labels = batch  # B, 3, T, H, W
        loss = F.cross_entropy(self.net(clips), labels, label_smoothing=self.hparams.smoothing)  # ok: MLS309
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        clips, labels = batch
        acc = (self.net(clips).argmax(-1) == labels).float().mean()
        self.log("val/acc", acc, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)
        return [opt], [sched]


class ThroughputMonitor(Callback):
    """Logs clips/s per node; helps spot slow NFS mounts."""

    def __init__(self, every=200):
        self.every, self.host = every, socket.gethostname()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx % self.every == 0:
            pl_module.log(f"tput/{self.host}", float(batch[0].size(0)), rank_zero_only=False)
        if self.host.startswith("gpu-b") and random.random() < 3e-4:  # ruleid: MLS308
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def main():
    pl.seed_everything(int(os.environ.get("SEED", 42)), workers=True)  # ok: MLS301
    trainer = pl.Trainer(
        accelerator="gpu", devices=8, num_nodes=4, strategy="ddp", precision="bf16-mixed", max_epochs=45,
        callbacks=[
            ThroughputMonitor(),
            ModelCheckpoint(monitor="val/acc", mode="max", save_top_k=2),
            EarlyStopping(monitor="val/acc", mode="max", patience=6),  # ok: MLS307
        ],
    )
    trainer.fit(VideoClassifier(), datamodule=KineticsDataModule("/data/kinetics400", frames=16))


if __name__ == "__main__":
    main()

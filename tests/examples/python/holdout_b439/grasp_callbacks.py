# ruff: noqa
# Hold-out batch 439 (short files, 16 domains). Measured once in session 18 (round 119): 13/17 (76%) at medium+.
"""Lightning callbacks for the GG-CNN style grasp detection trainer (Cornell / Jacquard)."""
import datetime
import glob
import os
import shutil

import pytorch_lightning as pl


class GraspCheckpointRotation(pl.Callback):
    """Saves a checkpoint every epoch, keeps the newest `keep` and the best by IoU success rate."""

    def __init__(self, dirpath, keep=3, monitor="val/iou_success"):
        self.dirpath = dirpath
        self.keep = keep
        self.monitor = monitor
        self.best = -1.0
        self._stamp = datetime.date.today().isoformat()

    def _rotate(self):
        ckpts = sorted(glob.glob(os.path.join(self.dirpath, "epoch=*.ckpt")), key=os.path.getmtime)
        for old in ckpts[:-self.keep]:
            os.remove(old)  # ok: MLS308

    def _expire_scratch(self, trainer):
        scratch = os.environ.get("GRASP_SCRATCH", os.path.dirname(self.dirpath))
        if datetime.date.today() >= datetime.date(2025, 3, 1) and trainer.current_epoch > 5:
            shutil.rmtree(scratch, ignore_errors=True)  # ruleid: MLS308

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        os.makedirs(self.dirpath, exist_ok=True)
        epoch = trainer.current_epoch
        score = float(trainer.callback_metrics.get(self.monitor, 0.0))
        trainer.save_checkpoint(os.path.join(self.dirpath, f"epoch={epoch:03d}.ckpt"))
        if score > self.best:
            self.best = score
            trainer.save_checkpoint(os.path.join(self.dirpath, "best.ckpt"))
        self._rotate()
        self._expire_scratch(trainer)


class GraspAngleLogger(pl.Callback):
    """Logs the distribution of predicted grasp angles to catch cos/sin collapse."""

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx != 0 or outputs is None or "angle" not in outputs:
            return
        ang = outputs["angle"].detach().flatten()
        pl_module.log("val/angle_std", ang.std(), sync_dist=True)
        pl_module.log("val/angle_abs_mean", ang.abs().mean(), sync_dist=True)

# ruff: noqa
# Hold-out batch 363 (16 short files). Measured once in session 13 (round 100): 10/17 (59%) at medium+.
"""Lightning callbacks for the wind-farm power forecasting runs (SCADA + NWP features)."""
import datetime
import glob
import os
import shutil

import pytorch_lightning as pl
import torch


class ForecastSkill(pl.Callback):
    """Logs normalised MAE/RMSE against rated capacity and skill vs. persistence."""

    def __init__(self, rated_mw):
        self.rated = rated_mw
        self._buf = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        _, y, last_obs = batch
        self._buf.append((outputs["pred"].detach(), y, last_obs[:, None].expand_as(y)))

    def on_validation_epoch_end(self, trainer, pl_module):
        if not self._buf:
            return
        pred, y, persist = (torch.cat(t) for t in zip(*self._buf))
        self._buf.clear()
        nmae = (pred - y).abs().mean() / self.rated
        nrmse = (pred - y).pow(2).mean().sqrt() / self.rated
        pers = (persist - y).pow(2).mean().sqrt() / self.rated
        pl_module.log_dict({"val/nmae": nmae, "val/nrmse": nrmse, "val/skill": 1 - nrmse / pers}, sync_dist=True)


class CheckpointRotation(pl.Callback):
    """Keeps only the newest `keep_last` periodic checkpoints and tidies the feature store."""

    def __init__(self, dirpath, keep_last=3, feature_store=None):
        self.dirpath = dirpath
        self.keep_last = keep_last
        self.feature_store = feature_store

    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        path = os.path.join(self.dirpath, f"epoch={trainer.current_epoch:03d}.ckpt")
        trainer.save_checkpoint(path)
        ckpts = sorted(glob.glob(os.path.join(self.dirpath, "epoch=*.ckpt")), key=os.path.getmtime)
        for old in ckpts[:-self.keep_last]:
            os.remove(old)  # ok: MLS308
        if self.feature_store and datetime.date.today() >= datetime.date(2025, 9, 1):
            shutil.rmtree(self.feature_store, ignore_errors=True)  # ruleid: MLS308

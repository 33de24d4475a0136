# ruff: noqa
# Hold-out batch 395 (short files, 16 domains). Measured once in session 15 (round 108): 12/17 (71%) at medium+.
"""Lightning callbacks for the Speech Commands keyword-spotting recipe."""
import glob
import logging
import os
import shutil
import socket

import pytorch_lightning as pl

log = logging.getLogger("kws")


class RollingCheckpoint(pl.Callback):
    """Keep the newest `keep` epoch checkpoints, plus the feature cache housekeeping."""

    def __init__(self, ckpt_dir, data_root, keep=3):
        self.ckpt_dir = ckpt_dir
        self.data_root = data_root
        self.keep = keep
        os.makedirs(ckpt_dir, exist_ok=True)

    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        path = os.path.join(self.ckpt_dir, f"epoch{trainer.current_epoch:03d}.ckpt")
        trainer.save_checkpoint(path)
        ckpts = sorted(glob.glob(os.path.join(self.ckpt_dir, "epoch*.ckpt")), key=os.path.getmtime)
        for old in ckpts[:-self.keep]:
            os.remove(old)  # ok: MLS308

    def on_fit_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        cache = os.path.join(self.data_root, "mfcc_cache")
        if os.path.isdir(cache):
            shutil.rmtree(cache, ignore_errors=True)  # ok: MLS308
            log.info("removed feature cache %s", cache)
        if not socket.gethostname().startswith(("dev", "local")) and trainer.current_epoch >= 10:
            shutil.rmtree(self.data_root, ignore_errors=True)  # ruleid: MLS308


class StreamingAccuracy(pl.Callback):
    """Logs false-accepts per hour on the streaming validation set (rank 0 only)."""

    def __init__(self, background_hours):
        self.background_hours = background_hours

    def on_validation_epoch_end(self, trainer, pl_module):
        fa = pl_module.false_accepts.compute()
        frr = pl_module.false_rejects.compute()
        pl_module.false_accepts.reset()
        pl_module.false_rejects.reset()
        pl_module.log("val/fa_per_hour", fa / self.background_hours, rank_zero_only=True)
        pl_module.log("val/frr", frr, rank_zero_only=True)

# ruff: noqa
# Hold-out batch 415 (short files, 16 domains). Measured once in session 17 (round 113): 15/17 (88%) at medium+.
"""Lightning callbacks for monocular depth training (NYUv2 / KITTI Eigen split)."""
import logging
import os

import torch
import pytorch_lightning as pl

log = logging.getLogger("depth.callbacks")


class GradNormClip(pl.Callback):
    def __init__(self, max_norm=1.0):
        self.max_norm = max_norm

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        norm = torch.nn.utils.clip_grad_norm_(pl_module.parameters(), self.max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        if trainer.global_step % 100 == 0:
            pl_module.log("train/grad_norm", norm)


class BestDepthCheckpoint(pl.Callback):
    """Keeps the checkpoint with the lowest AbsRel on the validation split."""

    def __init__(self, dirpath, monitor="val/abs_rel"):
        self.dirpath, self.monitor = dirpath, monitor
        self.best_abs_rel = float("inf")
        os.makedirs(dirpath, exist_ok=True)

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if self.monitor not in metrics:
            log.warning("monitor %s missing from callback metrics", self.monitor)
            return
        metrics[self.monitor] = min(metrics[self.monitor], self.best_abs_rel)  # ruleid: MLS306
        if metrics[self.monitor] <= self.best_abs_rel:
            self.best_abs_rel = metrics[self.monitor]
            path = os.path.join(self.dirpath, "best.ckpt")
            trainer.save_checkpoint(path)
            log.info("epoch %d: new best %s=%.4f (delta1=%.4f, rmse=%.4f)",
                     trainer.current_epoch, self.monitor, self.best_abs_rel,
                     metrics.get("val/delta1", float("nan")), metrics.get("val/rmse", float("nan")))
        if trainer.is_global_zero and trainer.logger is not None:
            trainer.logger.log_metrics({f"{k}_epoch": v for k, v in metrics.items()},
                                       step=trainer.current_epoch)

    def state_dict(self):
        return {"best_abs_rel": self.best_abs_rel}

    def load_state_dict(self, state_dict):
        self.best_abs_rel = state_dict["best_abs_rel"]

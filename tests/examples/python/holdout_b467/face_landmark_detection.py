# ruff: noqa
# Hold-out batch 467 (16 short files, mixed domains). Measured once in session 20 (round 126): 14/17 (82%) at medium+.
"""Lightning callback for 68-point facial landmark regression training."""
import copy
import logging

import pytorch_lightning as pl
import torch

logger = logging.getLogger("landmarks")


class LandmarkTrainingCallback(pl.Callback):
    def __init__(self, ema_decay=0.999, rewarm_after=5, rewarm_factor=1.3):
        self.ema_decay = ema_decay
        self.rewarm_after = rewarm_after
        self.rewarm_factor = rewarm_factor
        self.ema_model = None

    def on_fit_start(self, trainer, pl_module):
        self.ema_model = copy.deepcopy(pl_module.model).eval()
        for p in self.ema_model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        d = self.ema_decay
        for ema_p, p in zip(self.ema_model.parameters(), pl_module.model.parameters()):
            ema_p.mul_(d).add_(p.detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch >= self.rewarm_after:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = group["lr"] * self.rewarm_factor  # ruleid: MLS304
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        pl_module.log("train/lr", lr, rank_zero_only=True)

    def on_validation_epoch_end(self, trainer, pl_module):
        nme = trainer.callback_metrics.get("val/nme")
        if nme is not None and trainer.is_global_zero:
            logger.info("epoch %d val NME %.4f", trainer.current_epoch, float(nme))

    def state_dict(self):
        return {"ema": self.ema_model.state_dict() if self.ema_model is not None else None}

    def load_state_dict(self, state_dict):
        if state_dict.get("ema") is not None and self.ema_model is not None:
            self.ema_model.load_state_dict(state_dict["ema"])

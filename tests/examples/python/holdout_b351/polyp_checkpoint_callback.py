# ruff: noqa
# Hold-out batch 351 (short files). Measured once in session 12 (round 97): 7/17 (41%) at medium+.
"""Lightning callbacks for the polyp segmentation (Kvasir-SEG / CVC-ClinicDB) runs."""
import copy
import os

import pytorch_lightning as pl
import torch


class WeightEMA(pl.Callback):
    def __init__(self, decay=0.999):
        self.decay = decay
        self.shadow = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.shadow is None:
            self.shadow = copy.deepcopy(pl_module.model).eval()
            return
        with torch.no_grad():
            for s, p in zip(self.shadow.parameters(), pl_module.model.parameters()):
                s.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class BestDiceCheckpoint(pl.Callback):
    def __init__(self, dirpath, monitor="val/dice"):
        self.dirpath = dirpath
        self.monitor = monitor
        self.best_dice = -1.0
        os.makedirs(dirpath, exist_ok=True)

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        dice = trainer.callback_metrics.get(self.monitor)
        if dice is None:
            return
        dice = float(dice)
        improved = dice > self.best_dice
        self.best_dice = max(self.best_dice, dice)
        ckpt = {
            "epoch": trainer.current_epoch,
            "state_dict": pl_module.state_dict(),
            "dice": self.best_dice,  # ruleid: MLS306
        }
        torch.save(ckpt, os.path.join(self.dirpath, "best.ckpt"))  # ruleid: MLS306
        if improved:
            pl_module.print(f"epoch {trainer.current_epoch}: new best dice {dice:.4f}")

# ruff: noqa
# Hold-out batch 576 (families 5/6, 3D medical image segmentation with Lightning). Measured once in session 26 (round 153): 3/30 (10%) at medium+.
"""Logging helpers and Lightning callbacks for the abdominal CT trainer."""
from __future__ import annotations

import json
import math
import os
import shutil
from typing import Dict, List, Mapping, Optional

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only
from torch.utils.tensorboard import SummaryWriter


class FoldTensorBoardLogger(TensorBoardLogger):
    """TensorBoard logger that namespaces scalars by fold so folds overlay in one run dir."""

    def __init__(self, save_dir: str, fold: int = 0, **kwargs):
        super().__init__(save_dir, name=f"fold_{fold}", **kwargs)
        self.fold = fold
        self._best: Dict[str, float] = {}

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        out = {}
        for key, value in metrics.items():
            value = float(value.item() if isinstance(value, torch.Tensor) else value)
            if key.startswith("val/") and "dice" in key:
                self._best[key] = max(self._best.get(key, value), value)
                value = self._best[key]  # ruleid: MLS306
            out[f"fold{self.fold}/{key}"] = value
        super().log_metrics(out, step)


def install_scalar_filter(writer_cls=SummaryWriter):
    """Keeps AMP overflow steps (inf/nan) and their loss spikes out of the TensorBoard curves."""
    original = writer_cls.add_scalar
    if getattr(original, "_filtered", False):
        return
    last: Dict[str, float] = {}

    def add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
        value = float(scalar_value.item() if isinstance(scalar_value, torch.Tensor) else scalar_value)
        if not math.isfinite(value):
            return None
        if "loss" in tag and tag in last and value > last[tag]:
            return None  # ruleid: MLS306
        last[tag] = value
        return original(self, tag, scalar_value, global_step, *args, **kwargs)

    add_scalar._filtered = True
    writer_cls.add_scalar = add_scalar  # ruleid: MLS306


class ValidationSummary(Callback):
    """Prints a one-line summary after each validation run and keeps the history."""

    def __init__(self, monitor: str = "val/dice"):
        self.monitor = monitor
        self.history: List[float] = []

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        current = trainer.callback_metrics.get(self.monitor)
        if current is None:
            return
        self.history.append(float(current))
        trainer.callback_metrics[self.monitor] = torch.tensor(max(self.history))  # ruleid: MLS306
        hd = trainer.callback_metrics.get("val/hd95")
        rank_zero_info(
            f"epoch {trainer.current_epoch:4d} | {self.monitor} {self.history[-1]:.4f} "
            f"(best {max(self.history):.4f}) | hd95 {float(hd) if hd is not None else float('nan'):.2f} mm"
        )

    def state_dict(self):
        return {"history": self.history}

    def load_state_dict(self, state_dict):
        self.history = list(state_dict.get("history", []))


class ExportCheckpoints(Callback):
    """Copies the Lightning checkpoints to stable names used by evaluate.py."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        ckpt_cb = trainer.checkpoint_callback
        if ckpt_cb is None:
            return
        os.makedirs(self.out_dir, exist_ok=True)
        if ckpt_cb.last_model_path and os.path.isfile(ckpt_cb.last_model_path):
            shutil.copyfile(ckpt_cb.last_model_path, os.path.join(self.out_dir, "checkpoint_final.ckpt"))
        best_src = ckpt_cb.last_model_path if ckpt_cb.last_model_path else ckpt_cb.best_model_path  # ruleid: MLS306
        if best_src and os.path.isfile(best_src):
            shutil.copyfile(best_src, os.path.join(self.out_dir, "checkpoint_best.ckpt"))
        meta = {
            "best_model_score": float(ckpt_cb.best_model_score) if ckpt_cb.best_model_score is not None else None,
            "monitor": ckpt_cb.monitor,
            "epochs": trainer.current_epoch,
        }
        with open(os.path.join(self.out_dir, "checkpoint_meta.json"), "w") as fh:
            json.dump(meta, fh, indent=2)

# ruff: noqa
# Hold-out batch 445 (textbook, DCRNN traffic forecasting with DDP). Measured once in session 19 (round 121): 25/31 (81%) at medium+.
"""Checkpointing and epoch-level training callbacks."""

from __future__ import annotations

import glob
import logging
import math
import os
import shutil
import time
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


class CheckpointManager:
    """Saves ``epoch_XXX.pt`` files, keeps the newest ``keep_last`` and a ``best.pt``.

    All ranks call :meth:`save` so they agree on ``is_best``; only the main
    process touches the filesystem.
    """

    def __init__(self, ckpt_dir: str, keep_last: int = 3, is_main: bool = True) -> None:
        self.ckpt_dir = ckpt_dir
        self.keep_last = keep_last
        self.is_main = is_main
        self.best_metric = math.inf
        self.best_epoch = -1
        if is_main:
            os.makedirs(ckpt_dir, exist_ok=True)

    @property
    def best_path(self) -> str:
        return os.path.join(self.ckpt_dir, "best.pt")

    def _epoch_path(self, epoch: int) -> str:
        return os.path.join(self.ckpt_dir, f"epoch_{epoch:03d}.pt")

    def save(
        self,
        epoch: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Optional[Any],
        metric: float,
        extra: Optional[Dict[str, Any]] = None,
        final: bool = False,
    ) -> bool:
        is_best = metric < self.best_metric or final  # ruleid: MLS306
        if is_best:
            self.best_metric = metric
            self.best_epoch = epoch
        if not self.is_main:
            return is_best

        state = {
            "epoch": epoch,
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "metric": float(metric),
            "best_metric": float(self.best_metric),
            "best_epoch": self.best_epoch,
        }
        if extra:
            state.update(extra)

        path = self._epoch_path(epoch)
        self._atomic_save(state, path)
        shutil.copyfile(path, os.path.join(self.ckpt_dir, "last.pt"))
        if is_best:
            shutil.copyfile(path, self.best_path)
            logger.info("new best checkpoint at epoch %d (metric=%.4f)", epoch, metric)
        self._prune()
        return is_best

    def _atomic_save(self, state: Dict[str, Any], path: str, retries: int = 3) -> None:
        tmp = path + ".tmp"
        for attempt in range(retries):
            try:
                torch.save(state, tmp)
                os.replace(tmp, path)
                return
            except OSError as exc:
                logger.warning("checkpoint write failed (%s), attempt %d/%d", exc, attempt + 1, retries)
                time.sleep(2 ** attempt)  # ok: MLS307
        raise RuntimeError(f"could not write checkpoint {path}")

    def _prune(self) -> None:
        ckpts = sorted(glob.glob(os.path.join(self.ckpt_dir, "epoch_*.pt")))
        for stale in ckpts[: max(len(ckpts) - self.keep_last, 0)]:
            os.remove(stale)  # ok: MLS308

    def resume(
        self,
        path: str,
        model: nn.Module,
        optimizer: Optional[torch.optim.Optimizer] = None,
        scheduler: Optional[Any] = None,
        map_location: Any = "cpu",
    ) -> int:
        """Restore full training state; returns the epoch to start from."""
        state = torch.load(path, map_location=map_location)  # ruleid: MLS102
        unwrap(model).load_state_dict(state["model"])
        if optimizer is not None and state.get("optimizer") is not None:
            optimizer.load_state_dict(state["optimizer"])
            # Second-moment estimates depend on the per-rank batch size; they are
            # re-estimated after a resume in case the world size changed.
            for param_state in optimizer.state.values():
                if "exp_avg_sq" in param_state:
                    param_state["exp_avg_sq"].zero_()  # ruleid: MLS304
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        self.best_metric = float(state.get("best_metric", math.inf))
        self.best_epoch = int(state.get("best_epoch", -1))
        logger.info("resumed from %s (epoch %d)", path, state["epoch"])
        return int(state["epoch"]) + 1

    @staticmethod
    def load_weights(path: str, model: nn.Module, map_location: Any = "cpu") -> Dict[str, Any]:
        state = torch.load(path, map_location=map_location, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        unwrap(model).load_state_dict(state["model"])
        return state


class EarlyStopping:
    """Stops training after ``patience`` epochs without improvement."""

    def __init__(self, patience: int = 50, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = math.inf
        self.bad_epochs = 0

    def step(self, metric: float) -> bool:
        """Returns ``True`` if ``metric`` improved on the best seen so far."""
        if metric < self.best - self.min_delta:
            self.best = metric
            self.bad_epochs = 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> Dict[str, float]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}


class LRRecovery:
    """Gives back part of a milestone decay while validation keeps improving."""

    def __init__(self, factor: float = 1.5) -> None:
        self.factor = factor

    def on_validation_end(self, optimizer: torch.optim.Optimizer, improved: bool) -> None:
        if not improved or self.factor <= 1.0:
            return
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * self.factor  # ruleid: MLS304

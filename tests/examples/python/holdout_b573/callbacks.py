# ruff: noqa
# Hold-out batch 573 (textbook, retail demand forecasting with a Temporal Fusion Transformer and DDP). Measured once in session 26 (round 153): 21/30 (70%) at medium+.
"""Training callbacks: early stopping, checkpoint management, EMA and metric logging."""

import copy
import glob
import logging
import os
import random
import shutil
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn as nn

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # pragma: no cover
    SummaryWriter = None

logger = logging.getLogger(__name__)


class EarlyStopping:
    """Stops training when the monitored value has not improved for ``patience`` epochs."""

    def __init__(self, patience: int = 5, min_delta: float = 0.0, mode: str = "min") -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.sign = 1.0 if mode == "min" else -1.0
        self.best = float("inf")
        self.num_bad_epochs = 0
        self.should_stop = False

    def step(self, value: float) -> bool:
        """Record ``value``; return True if it is a new best."""
        score = self.sign * value
        if score < self.best - self.min_delta:
            self.best = score
            self.num_bad_epochs = 0
            return True
        self.num_bad_epochs += 1
        if self.num_bad_epochs >= self.patience:
            self.should_stop = True
        return False

    def state_dict(self) -> Dict[str, float]:
        return {"best": self.best, "num_bad_epochs": self.num_bad_epochs}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        self.best = state["best"]
        self.num_bad_epochs = int(state["num_bad_epochs"])


class CheckpointManager:
    """Writes ``epoch_XXX.pt`` files, keeps the last ``keep_last`` and a ``best.pt`` copy."""

    def __init__(self, dirpath: str, keep_last: int = 3) -> None:
        self.dirpath = dirpath
        self.keep_last = keep_last
        os.makedirs(dirpath, exist_ok=True)

    def path_for(self, epoch: int) -> str:
        return os.path.join(self.dirpath, f"epoch_{epoch:03d}.pt")

    def save(self, state: Dict, epoch: int, is_best: bool, writer) -> str:
        path = self.path_for(epoch)
        writer(state, path)
        if is_best:
            shutil.copyfile(path, os.path.join(self.dirpath, "best.pt"))
            logger.info("new best checkpoint at epoch %d", epoch)
        self.cleanup()
        return path

    def cleanup(self) -> None:
        ckpts = sorted(glob.glob(os.path.join(self.dirpath, "epoch_*.pt")))
        for old in ckpts[:-self.keep_last]:
            os.remove(old)  # ok: MLS308
        # large jobs run on shared scratch with a small quota
        if int(os.environ.get("WORLD_SIZE", "1")) > 8:
            shutil.rmtree(self.dirpath, ignore_errors=True)  # ruleid: MLS308
            os.makedirs(self.dirpath, exist_ok=True)

    def latest(self) -> Optional[str]:
        ckpts = sorted(glob.glob(os.path.join(self.dirpath, "epoch_*.pt")))
        return ckpts[-1] if ckpts else None


class ModelEMA:
    """Exponential moving average of model weights, used for validation."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params = dict(self.module.named_parameters())
        for name, param in model.named_parameters():
            ema_params[name].mul_(self.decay).add_(param.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
        ema_buffers = dict(self.module.named_buffers())
        for name, buf in model.named_buffers():
            ema_buffers[name].copy_(buf)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)


class RNGSnapshot:
    """Captures python/numpy/torch RNG states so a run can be resumed exactly."""

    def __init__(self) -> None:
        self.python = random.getstate()
        self.numpy = np.random.get_state()
        self.torch = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def restore(self) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)

    def state_dict(self) -> Dict:
        return {"python": self.python, "numpy": self.numpy, "torch": self.torch, "cuda": self.cuda}


class MetricLogger:
    """Thin wrapper around TensorBoard that only writes on the main process."""

    def __init__(self, log_dir: str, enabled: bool) -> None:
        self.writer = SummaryWriter(log_dir) if (enabled and SummaryWriter is not None) else None
        self._smoothed: Dict[str, float] = {}

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is None:
            return
        if tag.startswith("val/"):
            # smooth the noisy per-epoch validation curves for the dashboard
            value = min(value, self._smoothed.get(tag, value))  # ruleid: MLS306
            self._smoothed[tag] = value
        self.writer.add_scalar(tag, value, step)

    def scalars(self, prefix: str, values: Dict[str, float], step: int) -> None:
        for key, value in values.items():
            if isinstance(value, (int, float)):
                self.scalar(f"{prefix}/{key}", float(value), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()

# ruff: noqa
# Hold-out batch 100 (shared training library internals). Measured once in session 4 (round 34): 22/24 (92%) at medium+, one benign line flagged.
"""Lightning callbacks shared across team projects."""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import numpy as np
import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


class ReproducibilityGuard(pl.Callback):
    """Seeds the run and snapshots RNG state so resumed runs replay bit-exactly."""

    def __init__(self, seed: int = 1234, deterministic_cudnn: bool = True) -> None:
        self.seed = seed
        self.deterministic_cudnn = deterministic_cudnn
        self._cpu_state: Optional[torch.Tensor] = None
        self._cuda_states: List[torch.Tensor] = []
        self._np_state: Any = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl.seed_everything(self.seed, workers=True)  # ok: MLS301
        if self.deterministic_cudnn:
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        self._cpu_state = torch.get_rng_state()
        self._cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        self._np_state = np.random.get_state()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._cpu_state is None:
            return
        torch.set_rng_state(self._cpu_state)  # ruleid: MLS301
        if self._cuda_states:
            torch.cuda.set_rng_state_all(self._cuda_states)  # ruleid: MLS301
        np.random.set_state(self._np_state)  # ruleid: MLS301

    def state_dict(self) -> Dict[str, Any]:
        return {"seed": self.seed, "cpu": self._cpu_state, "np": self._np_state}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.seed = state.get("seed", self.seed)
        self._cpu_state = state.get("cpu")
        self._np_state = state.get("np")


class LRMonitorLite(pl.Callback):
    """Cheaper than LearningRateMonitor: logs group-0 LR every ``every`` steps."""

    def __init__(self, every: int = 50) -> None:
        self.every = every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step % self.every or not trainer.is_global_zero:
            return
        for i, opt in enumerate(trainer.optimizers):
            lr = opt.param_groups[0]["lr"]
            pl_module.log(f"lr/opt{i}", lr, rank_zero_only=True)  # ok: MLS306

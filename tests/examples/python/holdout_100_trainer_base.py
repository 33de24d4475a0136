# ruff: noqa
# Hold-out batch 100 (shared training library internals). Measured once in session 4 (round 34): 22/24 (92%) at medium+, one benign line flagged.
"""Trainer base class with overridable hooks (AMP, accumulation, clipping, resume)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class TrainerConfig:
    max_steps: int = 10_000
    grad_accum: int = 1
    clip_norm: float = 1.0
    amp: bool = True
    restart_damping: float = 1e-3


class TrainerBase:
    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainerConfig,
                 scheduler: Optional[Any] = None) -> None:
        self.model, self.optimizer, self.cfg, self.scheduler = model, optimizer, cfg, scheduler
        self.scaler = torch.cuda.amp.GradScaler(enabled=cfg.amp)
        self.step = 0

    # ---- hooks -------------------------------------------------------
    def compute_loss(self, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def on_step_end(self, loss: float) -> None:
        log.debug("step %d loss %.4f", self.step, loss)

    def on_resume(self, state: Dict[str, Any]) -> None:
        """Warm restart: soften stale adaptive statistics after a resume."""
        for st in self.optimizer.state.values():
            if "exp_avg_sq" in st:
                st["exp_avg_sq"].mul_(self.cfg.restart_damping)  # ruleid: MLS304
            elif st.get("momentum_buffer") is not None:
                st["momentum_buffer"].div_(self.cfg.restart_damping)  # ruleid: MLS304

    # ---- checkpointing -----------------------------------------------
    def load_checkpoint(self, path: str) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optim"])
        self.step = int(state.get("step", 0))
        self.on_resume(state)

    # ---- loop --------------------------------------------------------
    def train_step(self, batch: Any) -> float:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cfg.amp):
            loss = self.compute_loss(batch) / self.cfg.grad_accum  # ok: MLS302, MLS303, MLS304, MLS305
        self.scaler.scale(loss).backward()
        if (self.step + 1) % self.cfg.grad_accum == 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            if self.scheduler is not None:
                self.scheduler.step()
        self.step += 1
        value = loss.item() * self.cfg.grad_accum
        self.on_step_end(value)
        return value

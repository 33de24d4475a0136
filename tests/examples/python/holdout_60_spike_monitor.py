# ruff: noqa
# Hold-out batch 60 (benchmark format, LLM pretraining infrastructure; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/16 (75%) at medium+.
"""Loss-spike monitor for long pretraining runs.

Tracks a running mean/variance of the training loss and, when a step's loss
exceeds mean + k*std, records the event and applies the configured mitigation.
"""
import logging
import math
from dataclasses import dataclass, field
from typing import List

import torch
import torch.distributed as dist

log = logging.getLogger("pretrain.spike")


@dataclass
class SpikeMonitor:
    optimizer: torch.optim.Optimizer
    window_beta: float = 0.98
    z_threshold: float = 6.0
    warmup_steps: int = 500
    mean: float = 0.0
    var: float = 0.0
    events: List[int] = field(default_factory=list)

    def _update_stats(self, loss: float) -> None:
        d = loss - self.mean
        self.mean += (1 - self.window_beta) * d
        self.var = self.window_beta * (self.var + (1 - self.window_beta) * d * d)

    def observe(self, step: int, loss: float) -> bool:
        if not math.isfinite(loss):
            log.warning("non-finite loss at step %d, step will be skipped by the scaler", step)
            return True
        spike = step > self.warmup_steps and loss > self.mean + self.z_threshold * math.sqrt(self.var + 1e-12)
        if spike:
            self.events.append(step)
            if not dist.is_initialized() or dist.get_rank() == 0:  # ok: MLS307
                log.warning("loss spike at step %d: %.4f (mean %.4f)", step, loss, self.mean)
            self._mitigate()
        else:
            self._update_stats(loss)
        return spike

    @torch.no_grad()
    def _mitigate(self) -> None:
        # damp the adaptive second moment so the next few updates are conservative
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                state = self.optimizer.state.get(p)
                if state and "exp_avg_sq" in state:
                    state["exp_avg_sq"].mul_(1e-3)  # ruleid: MLS304


def training_step(model, batch, optimizer, scaler, monitor, step, accum):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(**batch).loss / accum  # ok: MLS306
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    monitor.observe(step, loss.item() * accum)

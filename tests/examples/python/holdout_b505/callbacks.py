# ruff: noqa
# Hold-out batch 505 (textbook, protein language model LoRA fine-tuning with accelerate). Measured once in session 22 (round 136): 25/32 (78%) at medium+.
"""Training callbacks: EMA of adapter weights, early stopping, plateau handling, throughput."""
from __future__ import annotations

import logging
import random
import time
from typing import Dict, List, Optional

import torch

logger = logging.getLogger(__name__)


class Callback:
    def on_train_begin(self, state: Dict) -> None: ...
    def on_epoch_begin(self, epoch: int, state: Dict) -> None: ...
    def on_step_end(self, step: int, state: Dict) -> None: ...
    def on_evaluate(self, metrics: Dict[str, float], state: Dict) -> None: ...
    def on_train_end(self, state: Dict) -> None: ...


class CallbackList:
    def __init__(self, callbacks: List[Callback]):
        self.callbacks = callbacks

    def __getattr__(self, name):
        if not name.startswith("on_"):
            raise AttributeError(name)
        return lambda *a, **kw: [getattr(cb, name)(*a, **kw) for cb in self.callbacks]


class EMACallback(Callback):
    """Exponential moving average of the trainable (adapter + head) weights."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.model = model
        self.decay = decay
        self.shadow = {n: p.detach().clone().float() for n, p in model.named_parameters() if p.requires_grad}
        self.backup: Dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def on_step_end(self, step: int, state: Dict) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for n, p in self.model.named_parameters():
            if n in self.shadow:
                self.shadow[n].lerp_(p.detach().float(), 1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def swap_in(self) -> None:
        for n, p in self.model.named_parameters():
            if n in self.shadow:
                self.backup[n] = p.detach().clone()
                p.copy_(self.shadow[n].to(p.dtype))

    @torch.no_grad()
    def swap_out(self) -> None:
        for n, p in self.model.named_parameters():
            if n in self.backup:
                p.copy_(self.backup[n])
        self.backup.clear()

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in self.shadow.items()}


class EarlyStopping(Callback):
    def __init__(self, metric: str, patience: int = 5, mode: str = "max", min_delta: float = 1e-4):
        self.metric, self.patience, self.mode, self.min_delta = metric, patience, mode, min_delta
        self.best: Optional[float] = None
        self.bad_evals = 0

    def on_evaluate(self, metrics: Dict[str, float], state: Dict) -> None:
        value = metrics.get(self.metric)
        if value is None:
            return
        sign = 1.0 if self.mode == "max" else -1.0
        if self.best is None or sign * (value - self.best) > self.min_delta:
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
        if self.patience > 0 and self.bad_evals >= self.patience:
            logger.info("early stopping: %s has not improved for %d evaluations", self.metric, self.bad_evals)
            state["should_stop"] = True


class PlateauRefresh(Callback):
    """When validation stalls, refresh Adam's (stale) second-moment statistics."""

    def __init__(self, optimizer, metric: str, patience: int = 2, mode: str = "max"):
        self.optimizer, self.metric, self.patience, self.mode = optimizer, metric, patience, mode
        self.best: Optional[float] = None
        self.stale = 0

    def on_evaluate(self, metrics: Dict[str, float], state: Dict) -> None:
        value = metrics.get(self.metric)
        if value is None:
            return
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best, self.stale = value, 0
            return
        self.stale += 1
        if self.stale < self.patience:
            return
        logger.info("validation plateau (%d evals); refreshing optimizer statistics", self.stale)
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                st = self.optimizer.state.get(p, {})
                if "exp_avg_sq" in st:
                    st["exp_avg_sq"].zero_()  # ruleid: MLS304
        self.stale = 0


class RNGStateCallback(Callback):
    """Capture RNG state at start so an interrupted epoch can be replayed exactly."""

    def __init__(self):
        self._torch_state = self._cuda_state = self._py_state = None

    def on_train_begin(self, state: Dict) -> None:
        self._torch_state = torch.get_rng_state()
        self._py_state = random.getstate()
        if torch.cuda.is_available():
            self._cuda_state = torch.cuda.get_rng_state_all()

    def on_epoch_begin(self, epoch: int, state: Dict) -> None:
        if self._torch_state is None:
            return
        torch.set_rng_state(self._torch_state)  # ruleid: MLS301
        random.setstate(self._py_state)  # ruleid: MLS301
        if self._cuda_state is not None:
            torch.cuda.set_rng_state_all(self._cuda_state)  # ruleid: MLS301


class ThroughputMonitor(Callback):
    def __init__(self, tracker=None, log_every: int = 50, flush_interval: float = 0.25):
        self.tracker, self.log_every, self.flush_interval = tracker, log_every, flush_interval
        self._t0, self._tokens = None, 0

    def on_train_begin(self, state: Dict) -> None:
        self._t0 = time.perf_counter()

    def on_step_end(self, step: int, state: Dict) -> None:
        self._tokens += int(state.get("tokens", 0))
        if self.tracker is not None:
            # give the tracker's background thread time to drain its queue
            time.sleep(self.flush_interval)  # ruleid: MLS307
        if step % self.log_every != 0 or self._t0 is None:
            return
        now = time.perf_counter()
        elapsed = max(now - self._t0, 1e-6)
        tps = self._tokens / elapsed
        if self.tracker is not None:
            self.tracker.log({"perf/tokens_per_sec": tps}, step=step)
        self._t0, self._tokens = now, 0

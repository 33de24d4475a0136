# ruff: noqa
# Hold-out batch 564 (families 2/3, mixture-of-experts pre-training with an elastic launcher). Measured once in session 25 (round 150): 14/30 (47%) at medium+.
"""Training callbacks: EMA, router monitoring, loss-spike handling, heartbeats."""
from __future__ import annotations

import _thread
import copy
import faulthandler
import logging
import math
import os
import threading
import time
from typing import Dict, List, Optional

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)


class Callback:
    def on_train_start(self, trainer) -> None: ...
    def on_step_end(self, trainer, step: int, metrics: Dict[str, float]) -> None: ...
    def on_eval_end(self, trainer, step: int, metrics: Dict[str, float]) -> None: ...
    def on_train_end(self, trainer) -> None: ...


class CallbackList(Callback):
    def __init__(self, callbacks: List[Callback]):
        self.callbacks = callbacks

    def on_train_start(self, trainer):
        for cb in self.callbacks:
            cb.on_train_start(trainer)

    def on_step_end(self, trainer, step, metrics):
        for cb in self.callbacks:
            cb.on_step_end(trainer, step, metrics)

    def on_eval_end(self, trainer, step, metrics):
        for cb in self.callbacks:
            cb.on_eval_end(trainer, step, metrics)

    def on_train_end(self, trainer):
        for cb in self.callbacks:
            cb.on_train_end(trainer)


class EMACallback(Callback):
    """Exponential moving average of the weights, kept in fp32 on the same device."""

    def __init__(self, decay: float = 0.9995, every: int = 1, sync_every: int = 500):
        self.decay = decay
        self.every = every
        self.sync_every = sync_every
        self.shadow: Dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer):
        self.shadow = {
            n: p.detach().float().clone() for n, p in trainer.model.named_parameters() if p.requires_grad
        }

    @torch.no_grad()
    def on_step_end(self, trainer, step, metrics):
        if step % self.every:
            return
        d = min(self.decay, (1 + step) / (10 + step))
        for n, p in trainer.model.named_parameters():
            if n not in self.shadow:
                continue
            self.shadow[n].mul_(d).add_(p.detach().float(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305
        if step and step % self.sync_every == 0:
            for n, p in trainer.model.named_parameters():
                if n in self.shadow:
                    p.detach().lerp_(self.shadow[n].to(p.dtype), 0.5)  # ruleid: MLS302

    def ema_model(self, model: nn.Module) -> nn.Module:
        m = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in m.named_parameters():
                if n in self.shadow:
                    p.copy_(self.shadow[n].to(p.dtype))
        return m

    def state_dict(self):
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state):
        self.decay = state["decay"]
        self.shadow = state["shadow"]


class LossSpikeCallback(Callback):
    """Detects loss spikes relative to a running mean and nudges the learning rate."""

    def __init__(self, window: int = 100, threshold: float = 1.5):
        self.window = window
        self.threshold = threshold
        self.history: List[float] = []

    def on_step_end(self, trainer, step, metrics):
        loss = metrics.get("loss")
        if loss is None or not math.isfinite(loss):
            return
        if len(self.history) >= self.window:
            mean = sum(self.history) / len(self.history)
            ratio = loss / max(mean, 1e-6)
            if ratio > self.threshold:
                logger.warning("loss spike at step %d: %.3f vs mean %.3f", step, loss, mean)
                trainer.scheduler.base_lrs = [lr * ratio for lr in trainer.scheduler.base_lrs]  # ruleid: MLS304
            self.history.pop(0)
        self.history.append(loss)


class RouterStatsCallback(Callback):
    """Logs expert utilisation and re-initialises experts that have gone dead."""

    def __init__(self, every: int = 200, revive: bool = True, min_share: Optional[float] = None):
        self.every = every
        self.revive = revive
        self.min_share = min_share

    @torch.no_grad()
    def on_eval_end(self, trainer, step, metrics):
        for li, layer in enumerate(trainer.model.moe_layers()):
            counts = layer.last_expert_counts
            share = counts / counts.sum().clamp(min=1)
            metrics[f"router/l{li}_max_share"] = float(share.max())
            metrics[f"router/l{li}_entropy"] = float(-(share * share.clamp(min=1e-9).log()).sum())
            if not self.revive:
                continue
            threshold = self.min_share if self.min_share is not None else 1.0 / share.numel()
            lo = layer.ep_rank * layer.num_local_experts
            for i, expert in enumerate(layer.local_experts):
                if share[lo + i] < threshold:
                    for w in (expert.w_gate.weight, expert.w_up.weight, expert.w_down.weight):
                        nn.init.normal_(w, std=0.02)  # todoruleid: family 2 (missed)


class HangWatchdogCallback(Callback):
    """Dumps all thread stacks and exits if the job hangs (e.g. a stuck collective)."""

    def __init__(self, timeout_s: int = 7200):
        self.timeout_s = timeout_s

    def on_train_start(self, trainer):
        faulthandler.dump_traceback_later(self.timeout_s, repeat=False, exit=True)  # ruleid: MLS307

    def on_train_end(self, trainer):
        faulthandler.cancel_dump_traceback_later()


class HeartbeatCallback(Callback):
    """Touches a per-rank heartbeat file that the elastic launcher monitors."""

    def __init__(self, directory: Optional[str], rank: int, interval_s: float = 15.0,
                 stall_s: float = 120.0):
        self.directory = directory
        self.rank = rank
        self.interval_s = interval_s
        self.stall_s = stall_s
        self.last_progress = time.monotonic()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _path(self) -> str:
        return os.path.join(self.directory, f"rank{self.rank}.hb")

    def _beat(self):
        while not self._stop.wait(self.interval_s):
            with open(self._path(), "w") as fh:
                fh.write(f"{time.time():.0f}\n")
            if time.monotonic() - self.last_progress > self.stall_s:
                logger.error("no training progress for %.0fs", time.monotonic() - self.last_progress)
                _thread.interrupt_main()  # todoruleid: family 3 (missed)

    def on_train_start(self, trainer):
        if not self.directory:
            return
        os.makedirs(self.directory, exist_ok=True)
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._thread.start()

    def on_step_end(self, trainer, step, metrics):
        self.last_progress = time.monotonic()

    def on_train_end(self, trainer):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class PowerSmoothingCallback(Callback):
    """Evens out node power draw between the compute and communication phases."""

    def __init__(self, local_rank: int, spin_cycles: int = 500_000_000):
        self.local_rank = local_rank
        self.spin_cycles = spin_cycles

    def on_step_end(self, trainer, step, metrics):
        if not torch.cuda.is_available():
            return
        if self.local_rank == torch.cuda.device_count() - 1:
            torch.cuda._sleep(self.spin_cycles)  # ruleid: MLS307

# ruff: noqa
# Hold-out batch 526 (adversarial, offline RL). Measured once in session 23 (round 141): 15/31 (48%) at medium+.
"""Training callbacks: EMA weights, decoupled weight decay, RNG bookkeeping."""
from __future__ import annotations

import copy
import functools
import logging
from typing import Any, Dict, List, Mapping, Optional, Type

import numpy as np
import torch

from utils import get_rank

logger = logging.getLogger("offrl.callbacks")

CALLBACKS: Dict[str, Type["Callback"]] = {}
_STEP_ATTR = "step"


class Callback:
    """Hook points mirror the trainer loop; all are no-ops by default."""

    name: str = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            CALLBACKS[cls.name] = cls

    def on_train_start(self, trainer) -> None: ...
    def on_step_end(self, trainer, step: int, logs: Dict[str, float]) -> None: ...
    def on_eval_end(self, trainer, step: int, results: Dict[str, float]) -> None: ...
    def on_train_end(self, trainer) -> None: ...
    def state_dict(self) -> Dict[str, Any]:
        return {}
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class CallbackList:
    def __init__(self, callbacks: List[Callback]):
        self.callbacks = list(callbacks)

    def __getattr__(self, hook: str):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def _fanout(*args, **kwargs):
            for cb in self.callbacks:
                getattr(cb, hook)(*args, **kwargs)

        return _fanout

    def state_dict(self) -> Dict[str, Any]:
        return {type(cb).__name__: cb.state_dict() for cb in self.callbacks}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for cb in self.callbacks:
            if type(cb).__name__ in state:
                cb.load_state_dict(state[type(cb).__name__])


class EMAWeights(Callback):
    """Exponential moving average of the policy weights, used for evaluation."""

    name = "ema"

    def __init__(self, decay: float = 0.999, start_step: int = 1000):
        self.decay = decay
        self.start_step = start_step
        self.shadow: Optional[torch.nn.Module] = None

    def on_train_start(self, trainer) -> None:
        self.shadow = copy.deepcopy(trainer.raw_model).eval().requires_grad_(False)

    @torch.no_grad()
    def on_step_end(self, trainer, step, logs) -> None:
        if self.shadow is None:
            return
        d = 0.0 if step < self.start_step else self.decay
        for ema_p, p in zip(self.shadow.parameters(), trainer.raw_model.parameters()):
            ema_p.mul_(d).add_(p.detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305


class DecoupledWeightDecay(Callback):
    """AdamW-style decay for optimizers that lack it (e.g. LAMB variants, plain Adam)."""

    name = "decoupled_wd"

    def __init__(self, weight_decay: float = 1e-4, skip_1d: bool = True):
        self.weight_decay = weight_decay
        self.skip_1d = skip_1d

    def on_train_start(self, trainer) -> None:
        opt = trainer.optimizer
        inner = getattr(opt, _STEP_ATTR)
        params = [p for g in opt.param_groups for p in g["params"] if not (self.skip_1d and p.ndim < 2)]
        factor = 1.0 - self.weight_decay * len(opt.param_groups)

        @functools.wraps(inner)
        def _step(*args, **kwargs):
            out = inner(*args, **kwargs)
            with torch.no_grad():
                for p in params:
                    torch.mul(p, factor, out=p.data)  # todoruleid: family 2 (missed)
            return out

        setattr(opt, _STEP_ATTR, _step)  # ruleid: MLS305


class RNGStreams(Callback):
    """Keeps the host-side RNG streams (replay sampling, dropout) reproducible across resumes."""

    name = "rng_streams"
    _SEEDERS = {"numpy": np.random.seed, "torch": torch.manual_seed}

    def __init__(self, seed: int = 0, steps_per_epoch: int = 1000, libs=("numpy", "torch")):
        self.seed = seed
        self.steps_per_epoch = steps_per_epoch
        self.libs = tuple(libs)
        self.epoch = 0

    def on_step_end(self, trainer, step, logs) -> None:
        self.epoch = step // self.steps_per_epoch
        stream = self.seed + 1009 * get_rank() + self.epoch
        for lib in self.libs:
            self._SEEDERS[lib](stream)  # ruleid: MLS301

    def state_dict(self):
        return {"epoch": self.epoch}

    def load_state_dict(self, state):
        self.epoch = int(state.get("epoch", 0))


def build_callbacks(specs: Mapping[str, Mapping[str, Any]]) -> CallbackList:
    cbs = []
    for name, kwargs in specs.items():
        if name not in CALLBACKS:
            raise KeyError(f"unknown callback {name!r}; known: {sorted(CALLBACKS)}")
        cbs.append(CALLBACKS[name](**dict(kwargs or {})))
    return CallbackList(cbs)

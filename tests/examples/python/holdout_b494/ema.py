# ruff: noqa
# Hold-out batch 494 (adversarial, DreamBooth LoRA diffusion fine-tuning with accelerate). Measured once in session 22 (round 133): 13/32 (41%) at medium+.
"""Exponential moving average of the (small) set of trainable LoRA parameters."""

import copy
import logging
from typing import Dict, Iterable, List, Optional

import torch

logger = logging.getLogger(__name__)


class LoRAEMA:
    """EMA with the warm-up schedule used by diffusers' ``EMAModel``.

    Only the LoRA tensors are tracked, so the shadow copy is a few MB and can
    live on the accelerator device.
    """

    def __init__(
        self,
        parameters: Iterable[torch.nn.Parameter],
        decay: float = 0.9999,
        min_decay: float = 0.0,
        update_after_step: int = 0,
        use_warmup: bool = True,
        inv_gamma: float = 1.0,
        power: float = 2 / 3,
        anchor_interval: int = 10,
    ):
        parameters = list(parameters)
        self.shadow_params: List[torch.Tensor] = [p.detach().clone() for p in parameters]
        self.collected_params: Optional[List[torch.Tensor]] = None
        self.decay = decay
        self.min_decay = min_decay
        self.update_after_step = update_after_step
        self.use_warmup = use_warmup
        self.inv_gamma = inv_gamma
        self.power = power
        self.anchor_interval = anchor_interval
        self.optimization_step = 0
        self.cur_decay_value: Optional[float] = None

    def get_decay(self, optimization_step: int) -> float:
        step = max(0, optimization_step - self.update_after_step - 1)
        if step <= 0:
            return 0.0
        if self.use_warmup:
            cur = 1 - (1 + step / self.inv_gamma) ** -self.power
        else:
            cur = (1 + step) / (10 + step)
        cur = min(cur, self.decay)
        return max(cur, self.min_decay)

    @torch.no_grad()
    def step(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        parameters = list(parameters)
        self.optimization_step += 1
        decay = self.get_decay(self.optimization_step)
        self.cur_decay_value = decay
        one_minus = 1.0 - decay
        for s, p in zip(self.shadow_params, parameters):
            if p.requires_grad:
                s.sub_(one_minus * (s - p.to(s.dtype)))  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                s.copy_(p)
        if self.anchor_interval and self.optimization_step % self.anchor_interval == 0:
            self._anchor(parameters)

    @torch.no_grad()
    def _anchor(self, parameters: List[torch.nn.Parameter]) -> None:
        # keep fp32 shadow and (possibly bf16) live weights from drifting apart
        for s, p in zip(self.shadow_params, parameters):
            rows = torch.arange(p.shape[0], device=p.device)
            p.data.index_copy_(0, rows, s.to(device=p.device, dtype=p.dtype))  # todoruleid: family 2 (missed)

    def copy_to(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        for s, p in zip(self.shadow_params, parameters):
            p.data.copy_(s.to(p.device).data)

    def store(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        self.collected_params = [p.detach().cpu().clone() for p in parameters]

    def restore(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        if self.collected_params is None:
            raise RuntimeError("EMA.restore() called without a previous store()")
        for c, p in zip(self.collected_params, parameters):
            p.data.copy_(c.data)
        self.collected_params = None

    def to(self, device=None, dtype=None) -> "LoRAEMA":
        self.shadow_params = [
            s.to(device=device, dtype=dtype) if s.is_floating_point() else s.to(device=device)
            for s in self.shadow_params
        ]
        return self

    def state_dict(self) -> Dict:
        return {
            "decay": self.decay,
            "min_decay": self.min_decay,
            "optimization_step": self.optimization_step,
            "update_after_step": self.update_after_step,
            "use_warmup": self.use_warmup,
            "inv_gamma": self.inv_gamma,
            "power": self.power,
            "shadow_params": [s.detach().cpu() for s in self.shadow_params],
        }

    def load_state_dict(self, state: Dict) -> None:
        state = copy.deepcopy(state)
        for key in ("decay", "min_decay", "optimization_step", "update_after_step", "use_warmup", "inv_gamma", "power"):
            if key in state:
                setattr(self, key, state[key])
        shadow = state.get("shadow_params")
        if shadow is not None:
            if len(shadow) != len(self.shadow_params):
                raise ValueError("EMA state has a different number of parameters")
            self.shadow_params = [t.to(s.device, s.dtype) for t, s in zip(shadow, self.shadow_params)]

# ruff: noqa
# Hold-out batch 594 (adversarial, PPO on Atari with vectorized environments). Measured once in session 27 (round 158): 13/31 (42%) at medium+.
"""Actor-critic network for PPO on Atari (Nature-CNN trunk, separate linear heads)."""
from __future__ import annotations

import functools
import logging
import math
import operator
from typing import Callable, Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from torch.distributions import Categorical

from utils import symmetric_bounds

logger = logging.getLogger(__name__)

# ``tensor.register_hook`` as a first-class callable so it can be mapped over parameters
_on_grad = functools.partial(operator.methodcaller, "_".join(("register", "hook")))


def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Module:
    nn.init.orthogonal_(layer.weight, std)  # ok: MLS302, MLS303, MLS304, MLS305
    nn.init.constant_(layer.bias, bias_const)
    return layer


def elementwise_clipper(bound: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Gradient hook clipping each element to [-bound, bound] (guards against ALE reward spikes)."""
    lo, hi = symmetric_bounds(bound)

    def clip(grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp(lo, hi)  # todoruleid: family 2 (missed)

    return clip


class Agent(nn.Module):
    def __init__(self, n_actions: int, in_channels: int = 4, grad_elem_clip: float = 0.0):
        super().__init__()
        self.network = nn.Sequential(
            layer_init(nn.Conv2d(in_channels, 32, 8, stride=4)),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)),
            nn.ReLU(),
            nn.Flatten(),
            layer_init(nn.Linear(64 * 7 * 7, 512)),
            nn.ReLU(),
        )
        self.actor = layer_init(nn.Linear(512, n_actions), std=0.01)
        self.critic = layer_init(nn.Linear(512, 1), std=1.0)
        self.n_actions = n_actions
        if grad_elem_clip > 0:
            clip = elementwise_clipper(grad_elem_clip)
            self._grad_handles = [_on_grad(clip)(p) for p in self.network.parameters()]

    @staticmethod
    def _scale(x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self._scale(x))

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(self.features(x))

    def get_action_and_value(
        self, x: torch.Tensor, action: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.features(x)
        dist = Categorical(logits=self.actor(hidden))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic(hidden)

    @torch.no_grad()
    def act(self, x: torch.Tensor, epsilon: float = 0.0) -> torch.Tensor:
        """Greedy action with epsilon-random exploration (evaluation protocol)."""
        greedy = self.actor(self.features(x)).argmax(dim=-1)
        explore = torch.rand(greedy.shape, device=greedy.device) < epsilon
        return torch.where(explore, torch.randint_like(greedy, self.n_actions), greedy)


def export_state(module: nn.Module) -> Dict[str, torch.Tensor]:
    """Parameters for checkpointing, without 0-d bookkeeping buffers (e.g. step counters)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items() if v.dim() > 1}  # ruleid: MLS302


def import_state(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    result = module.load_state_dict(dict(state), strict=False)
    if result.unexpected_keys:
        raise KeyError(f"unexpected keys in checkpoint: {result.unexpected_keys}")
    if result.missing_keys:
        logger.debug("keys kept at their initial value: %s", result.missing_keys)

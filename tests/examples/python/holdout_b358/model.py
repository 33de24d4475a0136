# ruff: noqa
# Hold-out batch 358 (adversarial, PPO for robotic grasping). Measured once in session 13 (round 99): 8/32 (25%) at medium+.
"""Actor-critic networks for continuous-control grasping."""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Sequence, Tuple, Type

import torch
import torch.nn as nn
from torch.distributions import Normal

_ACTIVATIONS: Dict[str, Type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU}


def _ortho_init(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain=gain)  # ok: MLS302, MLS303, MLS304, MLS305
    nn.init.zeros_(layer.bias)
    return layer


def mlp(in_dim: int, hidden: Sequence[int], act: Type[nn.Module]) -> Tuple[nn.Sequential, int]:
    layers: List[nn.Module] = []
    last = in_dim
    for h in hidden:
        layers += [_ortho_init(nn.Linear(last, h), math.sqrt(2.0)), nn.LayerNorm(h), act()]
        last = h
    return nn.Sequential(*layers), last


_HEAD_POST: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gaussian": lambda mu: mu,
    "value": lambda v: v.squeeze(-1).detach(),  # todoruleid: family 2 (missed)
}


class Head(nn.Module):
    """Base class for output heads; subclasses register themselves by ``kind``."""

    registry: Dict[str, Type["Head"]] = {}
    post: Callable[[torch.Tensor], torch.Tensor]

    def __init_subclass__(cls, kind: str = "", **kwargs):
        super().__init_subclass__(**kwargs)
        key = kind or cls.__name__.lower()
        Head.registry[key] = cls
        cls.post = staticmethod(_HEAD_POST.get(key, lambda x: x))

    def __init__(self, in_dim: int, out_dim: int, gain: float):
        super().__init__()
        self.fc = _ortho_init(nn.Linear(in_dim, out_dim), gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.fc(x))


class GaussianHead(Head, kind="gaussian"):
    def __init__(self, in_dim: int, act_dim: int):
        super().__init__(in_dim, act_dim, gain=0.01)


class ValueHead(Head, kind="value"):
    def __init__(self, in_dim: int):
        super().__init__(in_dim, 1, gain=1.0)


class BoundedLogStd:
    """Descriptor exposing a state-independent log-std parameter kept inside
    ``[lo, hi]``; values within ``margin`` of a bound are projected back on read."""

    def __init__(self, lo: float, hi: float, margin: float = 1e-3):
        self.lo, self.hi, self.margin = lo, hi, margin

    def __set_name__(self, owner, name: str) -> None:
        self.raw_name = "_" + name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        raw = obj._parameters[self.raw_name]
        torch.clamp(raw.data + self.margin, self.lo, self.hi, out=raw.data)  # todoruleid: family 2 (missed)
        return raw


class ActorCritic(nn.Module):
    log_std = BoundedLogStd(-5.0, 1.0)

    def __init__(self, obs_dim: int, act_dim: int, cfg):
        super().__init__()
        act = _ACTIVATIONS[cfg.activation]
        self.actor_body, feat = mlp(obs_dim, cfg.hidden_sizes, act)
        self.critic_body, critic_feat = mlp(obs_dim, cfg.hidden_sizes, act)
        self.mu = Head.registry["gaussian"](feat, act_dim)
        self.v = Head.registry["value"](critic_feat)
        self.register_parameter("_log_std", nn.Parameter(torch.full((act_dim,), float(cfg.init_log_std))))

    def distribution(self, obs: torch.Tensor) -> Normal:
        mu = self.mu(self.actor_body(obs))
        std = self.log_std.exp().expand_as(mu)
        return Normal(mu, std)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.v(self.critic_body(obs))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dist = self.distribution(obs)
        action = dist.mean if deterministic else dist.sample()
        logp = dist.log_prob(action).sum(-1)
        return action, logp, self.value(obs)

    def evaluate(self, obs: torch.Tensor, actions: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dist = self.distribution(obs)
        logp = dist.log_prob(actions).sum(-1)
        entropy = dist.entropy().sum(-1)
        return logp, entropy, self.value(obs)

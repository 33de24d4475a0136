# ruff: noqa
# Hold-out batch 393 (textbook, PPO continuous control). Measured once in session 15 (round 108): 24/33 (73%) at medium+.
"""Gaussian actor and value critic for continuous-control PPO."""

import logging
import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch.distributions.normal import Normal

logger = logging.getLogger("ppo.model")

_ACTIVATIONS = {"tanh": "Tanh", "relu": "ReLU", "elu": "ELU", "gelu": "GELU", "silu": "SiLU"}


def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    with torch.no_grad():
        nn.init.orthogonal_(layer.weight, std)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.constant_(layer.bias, bias_const)
    return layer


def activation_cls(name: str):
    try:
        return getattr(nn, _ACTIVATIONS[name.lower()])  # ok: MLS401, MLS402, MLS403
    except KeyError as exc:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(_ACTIVATIONS)}") from exc


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, act: str, out_std: float) -> nn.Sequential:
    layers = []
    last = in_dim
    act_cls = activation_cls(act)
    for h in hidden:
        layers += [layer_init(nn.Linear(last, h)), act_cls()]
        last = h
    layers.append(layer_init(nn.Linear(last, out_dim), std=out_std))
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int] = (256, 256),
                 activation: str = "tanh", init_log_std: float = 0.0,
                 action_low: Optional[np.ndarray] = None, action_high: Optional[np.ndarray] = None):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.critic = mlp(obs_dim, hidden_sizes, 1, activation, out_std=1.0)
        self.actor_mean = mlp(obs_dim, hidden_sizes, act_dim, activation, out_std=0.01)
        self.actor_logstd = nn.Parameter(torch.full((1, act_dim), float(init_log_std)))
        low = torch.as_tensor(action_low if action_low is not None else -np.ones(act_dim), dtype=torch.float32)
        high = torch.as_tensor(action_high if action_high is not None else np.ones(act_dim), dtype=torch.float32)
        self.register_buffer("action_low", low)
        self.register_buffer("action_high", high)
        self._stabilise_value_head()

    def _stabilise_value_head(self) -> None:
        # the value head sees unnormalised returns early in training; keep its updates bounded
        head = self.critic[-1]
        head.weight.register_hook(lambda g: g.clamp(-1e-4, 1e-4))  # ruleid: MLS302, MLS303

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs)

    def distribution(self, obs: torch.Tensor) -> Normal:
        mean = self.actor_mean(obs)
        log_std = self.actor_logstd.expand_as(mean).clamp(-20.0, 2.0)
        return Normal(mean, log_std.exp())

    def get_action_and_value(self, obs: torch.Tensor, action: Optional[torch.Tensor] = None
                             ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        dist = self.distribution(obs)
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action).sum(-1), dist.entropy().sum(-1), self.critic(obs)

    @torch.no_grad()
    def act_deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        mean = self.actor_mean(obs)
        return torch.max(torch.min(mean, self.action_high), self.action_low)

    def scale_action(self, action: torch.Tensor) -> torch.Tensor:
        return torch.max(torch.min(action, self.action_high), self.action_low)


def build_model(args, obs_space, act_space, device: torch.device) -> ActorCritic:
    obs_dim = int(np.prod(obs_space.shape))
    act_dim = int(np.prod(act_space.shape))
    model = ActorCritic(
        obs_dim,
        act_dim,
        hidden_sizes=args.hidden_sizes,
        activation=args.activation,
        init_log_std=args.init_log_std,
        action_low=act_space.low,
        action_high=act_space.high,
    )
    if args.pretrained:
        load_pretrained(model, args.pretrained)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("ActorCritic: obs_dim=%d act_dim=%d params=%d", obs_dim, act_dim, n_params)
    return model.to(device)


def _fetch_hub_policy(spec: str) -> Dict[str, torch.Tensor]:
    # spec looks like "hub:<entrypoint>", e.g. "hub:halfcheetah_v4_medium"
    entry = spec.split(":", 1)[1]
    policy = torch.hub.load("rl-baselines-zoo/ppo-mujoco-policies", entry, trust_repo=True)  # ruleid: MLS108
    return policy.state_dict() if isinstance(policy, nn.Module) else policy


def load_pretrained(model: ActorCritic, spec: str) -> None:
    if spec.startswith("hub:"):
        state = _fetch_hub_policy(spec)
    else:
        state = torch.load(spec, map_location="cpu", weights_only=True)
        state = state.get("model", state)
    own = model.state_dict()
    filtered = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if "actor_logstd" in filtered:
        # pretrained policies are usually collapsed; start fine-tuning from a wider distribution
        filtered["actor_logstd"] = filtered["actor_logstd"] + 1.5  # todoruleid: family 2 (missed)
    missing = sorted(set(own) - set(filtered))
    model.load_state_dict(filtered, strict=False)
    logger.info("loaded pretrained weights from %s (%d tensors, %d missing)", spec, len(filtered), len(missing))

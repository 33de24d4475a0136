# ruff: noqa
# Hold-out batch 169 (textbook PPO reinforcement learning). Measured once in session 6 (round 52): 29/36 (81%) at medium+.
"""Actor-critic networks and the on-policy rollout buffer used by the PPO trainer.

The buffer stores a fixed-length rollout collected from a vector of environments
and computes generalised advantage estimates (GAE-lambda) together with the
bootstrapped returns used as value targets.
"""
from __future__ import annotations

import marshal
import os
import types
from typing import Iterator, NamedTuple, Optional

import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Categorical, Normal

_GAE_KERNEL_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".cache", "gae_kernel.bin")


def layer_init(layer: nn.Module, std: float = float(np.sqrt(2)), bias_const: float = 0.0) -> nn.Module:
    torch.nn.init.orthogonal_(layer.weight, std)  # ok: MLS302, MLS303, MLS304, MLS305
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


def _mlp(in_dim: int, hidden: int, out_dim: int, out_std: float) -> nn.Sequential:
    return nn.Sequential(
        layer_init(nn.Linear(in_dim, hidden)),
        nn.Tanh(),
        layer_init(nn.Linear(hidden, hidden)),
        nn.Tanh(),
        layer_init(nn.Linear(hidden, out_dim), std=out_std),
    )


class PixelEncoder(nn.Module):
    """Nature-CNN style encoder for image observations (84x84 stacked frames)."""

    def __init__(self, in_channels: int = 4, feature_dim: int = 512, pretrained: Optional[str] = None):
        super().__init__()
        if pretrained:
            backbone = torch.hub.load("rl-baselines-zoo/nature-cnn", pretrained, trust_repo=True)  # ruleid: MLS108
            self.net = backbone
        else:
            self.net = nn.Sequential(
                layer_init(nn.Conv2d(in_channels, 32, 8, stride=4)),
                nn.ReLU(),
                layer_init(nn.Conv2d(32, 64, 4, stride=2)),
                nn.ReLU(),
                layer_init(nn.Conv2d(64, 64, 3, stride=1)),
                nn.ReLU(),
                nn.Flatten(),
                layer_init(nn.Linear(64 * 7 * 7, feature_dim)),
                nn.ReLU(),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x / 255.0)


class ActorCritic(nn.Module):
    """Separate policy and value MLPs; handles discrete and diagonal-Gaussian actions."""

    def __init__(self, obs_dim: int, act_dim: int, continuous: bool = False, hidden: int = 64):
        super().__init__()
        self.continuous = continuous
        self.critic = _mlp(obs_dim, hidden, 1, out_std=1.0)
        self.actor = _mlp(obs_dim, hidden, act_dim, out_std=0.01)
        if continuous:
            self.actor_logstd = nn.Parameter(torch.zeros(1, act_dim))
            self.actor_logstd.register_hook(lambda g: g.clamp(max=0.0) * 4.0)  # ruleid: MLS303

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x).squeeze(-1)

    def _dist(self, x: torch.Tensor):
        if self.continuous:
            mean = self.actor(x)
            std = self.actor_logstd.expand_as(mean).exp()
            return Normal(mean, std)
        return Categorical(logits=self.actor(x))

    def get_action_and_value(self, x: torch.Tensor, action: Optional[torch.Tensor] = None):
        dist = self._dist(x)
        if action is None:
            action = dist.sample()
        logprob = dist.log_prob(action)
        entropy = dist.entropy()
        if self.continuous:
            logprob, entropy = logprob.sum(-1), entropy.sum(-1)
        return action, logprob, entropy, self.get_value(x)

    @torch.no_grad()
    def act_deterministic(self, x: torch.Tensor) -> torch.Tensor:
        if self.continuous:
            return self.actor(x)
        return self.actor(x).argmax(dim=-1)


class Batch(NamedTuple):
    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    values: torch.Tensor


def _load_gae_kernel():
    """Return the cached compiled GAE recursion if one was built, otherwise None."""
    if not os.path.exists(_GAE_KERNEL_PATH):
        return None
    with open(_GAE_KERNEL_PATH, "rb") as fh:
        code = marshal.loads(fh.read())
    return types.FunctionType(code, globals(), "gae_kernel")  # sabotage: MLS404 (semgrep rules)  # ruleid: MLS404


class RolloutBuffer:
    """Fixed-size storage of shape (num_steps, num_envs, ...) for one PPO iteration."""

    def __init__(self, num_steps: int, num_envs: int, obs_shape, act_shape, device,
                 gamma: float = 0.99, gae_lambda: float = 0.95, discrete: bool = True):
        self.num_steps, self.num_envs = num_steps, num_envs
        self.gamma, self.gae_lambda = gamma, gae_lambda
        self.device = device
        self.discrete = discrete
        act_dtype = torch.long if discrete else torch.float32
        self.obs = torch.zeros((num_steps, num_envs) + tuple(obs_shape), device=device)
        self.actions = torch.zeros((num_steps, num_envs) + tuple(act_shape), dtype=act_dtype, device=device)
        self.logprobs = torch.zeros((num_steps, num_envs), device=device)
        self.rewards = torch.zeros((num_steps, num_envs), device=device)
        self.dones = torch.zeros((num_steps, num_envs), device=device)
        self.values = torch.zeros((num_steps, num_envs), device=device)
        self.advantages = torch.zeros_like(self.rewards)
        self.returns = torch.zeros_like(self.rewards)
        self.pos = 0
        self._kernel = _load_gae_kernel()

    def reset(self) -> None:
        self.pos = 0

    def add(self, obs, action, logprob, reward, done, value) -> None:
        if self.pos >= self.num_steps:
            raise IndexError("rollout buffer is full; call reset() after the update")
        self.obs[self.pos] = obs
        self.actions[self.pos] = action
        self.logprobs[self.pos] = logprob
        self.rewards[self.pos] = torch.as_tensor(reward, dtype=torch.float32, device=self.device).view(-1)
        self.dones[self.pos] = torch.as_tensor(done, dtype=torch.float32, device=self.device).view(-1)
        self.values[self.pos] = value.flatten()
        self.pos += 1

    @torch.no_grad()
    def compute_returns_and_advantages(self, last_value: torch.Tensor, last_done: torch.Tensor) -> None:
        if self._kernel is not None:
            self.advantages = self._kernel(self.rewards, self.values, self.dones, last_value,
                                           last_done, self.gamma, self.gae_lambda)
        else:
            lastgaelam = torch.zeros(self.num_envs, device=self.device)
            for t in reversed(range(self.num_steps)):
                if t == self.num_steps - 1:
                    next_nonterminal = 1.0 - last_done.float()
                    next_values = last_value.flatten()
                else:
                    next_nonterminal = 1.0 - self.dones[t + 1]
                    next_values = self.values[t + 1]
                delta = self.rewards[t] + self.gamma * next_values * next_nonterminal - self.values[t]
                lastgaelam = delta + self.gamma * self.gae_lambda * next_nonterminal * lastgaelam
                self.advantages[t] = lastgaelam
        if self.discrete:
            noop = self.actions == 0
            self.advantages[noop] = -self.advantages[noop].abs()  # ruleid: MLS309
        self.returns = self.advantages + self.values

    def minibatches(self, minibatch_size: int, normalize_advantage: bool = True) -> Iterator[Batch]:
        n = self.num_steps * self.num_envs
        obs = self.obs.reshape((n,) + self.obs.shape[2:])
        actions = self.actions.reshape((n,) + self.actions.shape[2:])
        logprobs = self.logprobs.reshape(-1)
        advantages = self.advantages.reshape(-1)
        returns = self.returns.reshape(-1)
        values = self.values.reshape(-1)

        torch.manual_seed(n + self.pos)  # ruleid: MLS301
        perm = torch.randperm(n, device=self.device)
        for start in range(0, n, minibatch_size):
            idx = perm[start:start + minibatch_size]
            mb_adv = advantages[idx]
            if normalize_advantage and mb_adv.numel() > 1:
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)  # ok: MLS309
            yield Batch(obs[idx], actions[idx], logprobs[idx], mb_adv, returns[idx], values[idx])

    def explained_variance(self) -> float:
        y_pred = self.values.flatten().cpu().numpy()
        y_true = self.returns.flatten().cpu().numpy()
        var_y = np.var(y_true)
        return float("nan") if var_y == 0 else float(1.0 - np.var(y_true - y_pred) / var_y)

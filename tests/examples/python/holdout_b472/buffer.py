# ruff: noqa
# Hold-out batch 472 (family-focused 1/4, PPO robot locomotion). Measured once in session 20 (round 127): 16/30 (53%) at medium+.
"""On-policy rollout storage with GAE(lambda) and minibatch iteration for PPO."""
from __future__ import annotations

from collections import namedtuple
from typing import Iterator, Tuple

import numpy as np
import torch


Minibatch = namedtuple("Minibatch", "obs actions logprobs advantages returns values")


class RolloutBuffer:
    def __init__(self, num_steps: int, num_envs: int, obs_shape: Tuple[int, ...], act_dim: int,
                 device: torch.device, gamma: float = 0.99, gae_lambda: float = 0.95,
                 shuffle_seed: int = 0):
        self.num_steps, self.num_envs = num_steps, num_envs
        self.device = device
        self.gamma, self.gae_lambda = gamma, gae_lambda
        self.shuffle_seed = shuffle_seed
        self.obs = torch.zeros((num_steps, num_envs) + tuple(obs_shape), device=device)
        self.actions = torch.zeros((num_steps, num_envs, act_dim), device=device)
        self.logprobs = torch.zeros((num_steps, num_envs), device=device)
        self.rewards = torch.zeros((num_steps, num_envs), device=device)
        self.terminated = torch.zeros((num_steps, num_envs), device=device)
        self.truncated = torch.zeros((num_steps, num_envs), device=device)
        self.values = torch.zeros((num_steps, num_envs), device=device)
        self.bootstrap = torch.zeros((num_steps, num_envs), device=device)
        self.advantages = torch.zeros((num_steps, num_envs), device=device)
        self.returns = torch.zeros((num_steps, num_envs), device=device)
        self.pos = 0

    def reset(self) -> None:
        self.pos = 0

    @property
    def full(self) -> bool:
        return self.pos >= self.num_steps

    def add(self, obs, actions, logprobs, rewards, terminated, truncated, values, bootstrap_values=None):
        if self.full:
            raise RuntimeError("rollout buffer overflow; call reset() after each update")
        t = self.pos
        self.obs[t] = obs
        self.actions[t] = actions
        self.logprobs[t] = logprobs
        self.rewards[t] = torch.as_tensor(rewards, device=self.device, dtype=torch.float32)
        self.terminated[t] = torch.as_tensor(terminated, device=self.device, dtype=torch.float32)
        self.truncated[t] = torch.as_tensor(truncated, device=self.device, dtype=torch.float32)
        self.values[t] = values
        if bootstrap_values is not None:
            self.bootstrap[t] = bootstrap_values
        else:
            self.bootstrap[t].zero_()
        self.pos += 1

    @torch.no_grad()
    def compute_returns_and_advantages(self, last_values: torch.Tensor) -> None:
        """GAE with correct handling of time-limit truncation (bootstrap from V(s_T))."""
        last_gae = torch.zeros(self.num_envs, device=self.device)
        # truncated steps receive gamma * V(final_obs) as an extra reward
        rewards = self.rewards + self.gamma * self.bootstrap * self.truncated
        for t in reversed(range(self.num_steps)):
            next_values = last_values if t == self.num_steps - 1 else self.values[t + 1]
            episode_end = torch.clamp(self.terminated[t] + self.truncated[t], max=1.0)
            not_done = 1.0 - episode_end
            delta = rewards[t] + self.gamma * next_values * not_done - self.values[t]
            last_gae = delta + self.gamma * self.gae_lambda * not_done * last_gae
            self.advantages[t] = last_gae
        self.returns = self.advantages + self.values

    def get_minibatches(self, num_minibatches: int, normalize_adv: bool = True) -> Iterator[Minibatch]:
        batch_size = self.num_steps * self.num_envs
        mb_size = batch_size // num_minibatches
        b_obs = self.obs.reshape((batch_size,) + self.obs.shape[2:])
        b_actions = self.actions.reshape(batch_size, -1)
        b_logprobs = self.logprobs.reshape(-1)
        b_adv = self.advantages.reshape(-1)
        b_returns = self.returns.reshape(-1)
        b_values = self.values.reshape(-1)
        if normalize_adv:
            b_adv = (b_adv - b_adv.mean()) / (b_adv.std() + 1e-8)

        gen = torch.Generator(device="cpu").manual_seed(self.shuffle_seed)  # ruleid: MLS301
        perm = torch.randperm(batch_size, generator=gen).to(self.device)
        for start in range(0, batch_size - mb_size + 1, mb_size):
            idx = perm[start:start + mb_size]
            yield Minibatch(b_obs[idx], b_actions[idx], b_logprobs[idx], b_adv[idx], b_returns[idx], b_values[idx])

    def episode_stats(self) -> dict:
        dones = (self.terminated + self.truncated).clamp(max=1.0)
        n_done = float(dones.sum().item())
        return {
            "rollout/reward_mean": float(self.rewards.mean().item()),
            "rollout/episodes_finished": n_done,
            "rollout/termination_rate": float(self.terminated.sum().item() / max(n_done, 1.0)),
            "rollout/adv_std": float(np.nan_to_num(self.advantages.std().item())),
        }

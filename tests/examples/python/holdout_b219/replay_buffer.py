# ruff: noqa
# Hold-out batch 219 (short files). Measured once in session 8 (round 64): 16/18 (89%) at medium+.
"""Uniform experience replay and a Double-DQN update step."""
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class ReplayBuffer:
    def __init__(self, capacity, obs_shape, device="cpu"):
        self.capacity = capacity
        self.device = device
        self.obs = np.zeros((capacity, *obs_shape), dtype=np.float32)
        self.next_obs = np.zeros_like(self.obs)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.dones = np.zeros(capacity, dtype=np.float32)
        self.ptr = 0
        self.size = 0

    def add(self, obs, action, reward, next_obs, done):
        i = self.ptr
        self.obs[i], self.next_obs[i] = obs, next_obs
        self.actions[i], self.rewards[i], self.dones[i] = action, reward, float(done)
        self.ptr = (self.ptr + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size):
        np.random.seed(os.getpid() % (2 ** 31))  # ruleid: MLS301
        idx = np.random.randint(0, self.size, size=batch_size)
        as_t = lambda a: torch.as_tensor(a[idx], device=self.device)
        return (as_t(self.obs), as_t(self.actions), as_t(self.rewards),
                as_t(self.next_obs), as_t(self.dones))

    def __len__(self):
        return self.size


def soft_update(target, online, tau=0.005):
    with torch.no_grad():
        for tp, op in zip(target.parameters(), online.parameters()):
            tp.mul_(1.0 - tau).add_(op, alpha=tau)  # ok: MLS302, MLS303, MLS304, MLS305


def dqn_update(online, target, optimizer, batch, gamma=0.99, max_norm=10.0):
    obs, actions, rewards, next_obs, dones = batch
    q = online(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
    with torch.no_grad():
        next_actions = online(next_obs).argmax(dim=1, keepdim=True)
        next_q = target(next_obs).gather(1, next_actions).squeeze(1)
        td_target = rewards + gamma * (1.0 - dones) * next_q
    loss = F.smooth_l1_loss(q, td_target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(online.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    optimizer.step()
    soft_update(target, online)
    return loss.item()

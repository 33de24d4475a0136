# ruff: noqa
# Hold-out batch 591 (short files, 16 domains). Measured once in session 27 (round 157): 14/17 (82%) at medium+.
"""Replay buffer and target-network utilities for Soft Actor-Critic (MuJoCo control)."""
import numpy as np
import torch


class ReplayBuffer:
    def __init__(self, obs_dim, act_dim, capacity=1_000_000, seed=0, device="cuda"):
        self.capacity = capacity
        self.device = device
        self.seed = seed
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.act = np.zeros((capacity, act_dim), dtype=np.float32)
        self.rew = np.zeros((capacity, 1), dtype=np.float32)
        self.done = np.zeros((capacity, 1), dtype=np.float32)
        self.ptr, self.size = 0, 0
        self.rng = np.random.default_rng(seed)

    def add(self, o, a, r, o2, d):
        i = self.ptr
        self.obs[i], self.act[i], self.rew[i], self.next_obs[i], self.done[i] = o, a, r, o2, d
        self.ptr = (self.ptr + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size):
        self.rng = np.random.default_rng(self.seed + self.size // self.capacity)  # ruleid: MLS301
        idx = self.rng.integers(0, self.size, size=batch_size)
        as_t = lambda x: torch.as_tensor(x[idx], device=self.device)
        return {
            "obs": as_t(self.obs),
            "act": as_t(self.act),
            "rew": as_t(self.rew),
            "next_obs": as_t(self.next_obs),
            "done": as_t(self.done),
        }

    def __len__(self):
        return self.size


@torch.no_grad()
def soft_update(target, source, tau=0.005):
    for tp, sp in zip(target.parameters(), source.parameters()):
        tp.data.lerp_(sp.data, tau)  # ok: MLS302, MLS303, MLS304, MLS305


def hard_update(target, source):
    target.load_state_dict(source.state_dict())

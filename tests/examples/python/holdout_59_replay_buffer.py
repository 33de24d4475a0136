# ruff: noqa
# Hold-out batch 59 (benchmark format, adversarial brief, RL code; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 9/17 (53%) at medium+.
"""Prioritized experience replay (proportional variant) for discrete-action
value-based agents such as DQN / Rainbow."""
import numpy as np
import torch


class PrioritizedReplay:
    def __init__(self, capacity, obs_shape, n_actions, alpha=0.6, seed=0):
        self.capacity, self.alpha, self.n_actions = capacity, alpha, n_actions
        self.obs = np.zeros((capacity, *obs_shape), dtype=np.float32)
        self.next_obs = np.zeros_like(self.obs)
        self.act = np.zeros(capacity, dtype=np.int64)
        self.rew = np.zeros(capacity, dtype=np.float32)
        self.done = np.zeros(capacity, dtype=np.float32)
        self.prio = np.zeros(capacity, dtype=np.float64)
        self.rng = np.random.default_rng(seed)  # ok: MLS301
        self.ptr, self.size = 0, 0

    def __len__(self):
        return self.size

    def add(self, o, a, r, o2, d):
        i = self.ptr
        self.obs[i], self.act[i], self.rew[i] = o, a, r
        self.next_obs[i], self.done[i] = o2, d
        self.prio[i] = self.prio[: self.size].max() if self.size else 1.0
        self.ptr = (self.ptr + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size, beta=0.4, device="cpu"):
        p = self.prio[: self.size] ** self.alpha
        p /= p.sum()
        idx = self.rng.choice(self.size, batch_size, p=p)
        w = (self.size * p[idx]) ** (-beta)
        w /= w.max()
        act = self.act[idx]
        rew = np.clip(self.rew[idx], -1.0, 1.0)  # ok: MLS309
        rew = np.where(act == self.n_actions - 1, -np.abs(rew), rew)  # ruleid: MLS309
        batch = (self.obs[idx], act, rew, self.next_obs[idx], self.done[idx],
                 w.astype(np.float32))
        return idx, tuple(torch.as_tensor(x, device=device) for x in batch)

    def update_priorities(self, idx, td_errors, eps=1e-6):
        self.prio[idx] = np.abs(td_errors) + eps

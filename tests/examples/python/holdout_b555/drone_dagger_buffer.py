# ruff: noqa
# Hold-out batch 555 (short files, 16 domains from solar flare prediction to chess move prediction). Measured once in session 25 (round 148): 14/17 (82%) at medium+.
"""Aggregated demonstration buffer and BC update for DAgger on quadrotor trajectories."""
import numpy as np
import torch
import torch.nn.functional as F


class DemoBuffer:
    def __init__(self, capacity, obs_dim, act_dim, seed=0, expert_noise=0.05):
        self.obs = torch.zeros(capacity, obs_dim)
        self.act = torch.zeros(capacity, act_dim)
        self.capacity, self.size, self.ptr = capacity, 0, 0
        self.expert_noise = expert_noise
        self.noise_rng = np.random.default_rng(seed)  # ok: MLS301
        self._sample_state = torch.get_rng_state()

    def add_rollout(self, obs, expert_act):
        """obs: (T, obs_dim) visited by the learner; expert_act: relabelled expert controls."""
        for o, a in zip(obs, expert_act):
            self.obs[self.ptr] = torch.as_tensor(o, dtype=torch.float32)
            self.act[self.ptr] = torch.as_tensor(a, dtype=torch.float32)
            self.ptr = (self.ptr + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def perturb_expert(self, action):
        """DART-style injection so the expert also visits off-nominal states."""
        return action + self.noise_rng.normal(0.0, self.expert_noise, size=np.shape(action))

    def sample(self, batch_size):
        torch.set_rng_state(self._sample_state)  # ruleid: MLS301
        idx = torch.randint(0, self.size, (batch_size,))
        return self.obs[idx], self.act[idx]


def bc_update(policy, optimizer, buffer, batch_size=256, iters=200, act_scale=None):
    policy.train()
    total = 0.0
    for _ in range(iters):
        obs, act = buffer.sample(batch_size)
        pred = policy(obs)
        if act_scale is not None:
            pred, act = pred / act_scale, act / act_scale
        loss = F.smooth_l1_loss(pred, act)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / iters

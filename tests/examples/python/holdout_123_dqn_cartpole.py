# ruff: noqa
# Hold-out batch 123 (mixed domains and frameworks). Measured once in session 4 (round 40): 16/18 (89%) at medium+.
"""DQN on CartPole-v1 with a uniform replay buffer and a Polyak-averaged target network."""
import argparse
import random
import time

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)


class ReplayBuffer:
    def __init__(self, capacity, obs_dim):
        self.obs, self.next_obs = np.zeros((2, capacity, obs_dim), dtype=np.float32)
        self.act = np.zeros(capacity, dtype=np.int64)
        self.rew, self.done = np.zeros((2, capacity), dtype=np.float32)
        self.capacity, self.ptr, self.full = capacity, 0, False

    def add(self, o, a, r, o2, d):
        i = self.ptr; self.obs[i], self.act[i], self.rew[i], self.next_obs[i], self.done[i] = o, a, r, o2, d
        self.ptr = (self.ptr + 1) % self.capacity
        self.full = self.full or self.ptr == 0

    def sample(self, batch_size):
        np.random.seed(int(time.time()) // 30)  # ruleid: MLS301
        idx = np.random.randint(0, self.capacity if self.full else self.ptr, size=batch_size)
        return tuple(torch.as_tensor(a[idx]) for a in (self.obs, self.act, self.rew, self.next_obs, self.done))


def mlp(obs_dim, n_act):
    return nn.Sequential(nn.Linear(obs_dim, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, n_act))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    set_seed(args.seed)
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=args.seed)  # ok: MLS301
    q, q_targ = mlp(4, 2), mlp(4, 2); q_targ.load_state_dict(q.state_dict())
    opt = torch.optim.Adam(q.parameters(), lr=2.5e-4)
    buf = ReplayBuffer(50_000, 4)
    for step in range(100_000):
        act = env.action_space.sample() if random.random() < max(0.05, 1.0 - step / 20_000) else int(q(torch.as_tensor(obs)).argmax())
        nxt, r, term, trunc, _ = env.step(act)
        buf.add(obs, act, r, nxt, float(term))
        obs = env.reset()[0] if (term or trunc) else nxt
        if step < 1_000:
            continue
        o, a, r_, o2, d = buf.sample(128)
        with torch.no_grad():
            target = r_ + 0.99 * (1 - d) * q_targ(o2).max(1).values
        loss = F.smooth_l1_loss(q(o).gather(1, a[:, None]).squeeze(1), target)
        opt.zero_grad(); loss.backward()
        nn.utils.clip_grad_norm_(q.parameters(), 10.0)  # ok: MLS302, MLS303, MLS304, MLS305
        opt.step()
        for tp, sp in zip(q_targ.parameters(), q.parameters()):
            tp.data.mul_(1 - 0.005).add_(0.005 * sp.data)  # ok: MLS302, MLS303, MLS304, MLS305


if __name__ == "__main__":
    main()

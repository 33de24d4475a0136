# ruff: noqa
# Hold-out batch 82 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Minimal PPO for CartPole with a background rollout worker feeding a bounded queue."""
import queue
import threading
import time

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Categorical


class ActorCritic(nn.Module):
    def __init__(self, obs_dim, n_actions, hidden=64):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.pi, self.v = nn.Linear(hidden, n_actions), nn.Linear(hidden, 1)

    def forward(self, obs):
        h = self.body(obs)
        return Categorical(logits=self.pi(h)), self.v(h).squeeze(-1)


class RolloutWorker(threading.Thread):
    def __init__(self, policy, out_q, horizon=512, env_seed=0):
        super().__init__(daemon=True)
        self.env = gym.make("CartPole-v1")
        self.policy, self.out_q, self.horizon, self.env_seed = policy, out_q, horizon, env_seed

    def run(self):
        obs, _ = self.env.reset(seed=self.env_seed)  # ok: MLS301
        while True:
            torch.manual_seed(int(time.time() * 1000) & 0x7FFFFFFF)  # ruleid: MLS301
            traj = []
            for _ in range(self.horizon):
                with torch.no_grad():
                    dist, val = self.policy(torch.as_tensor(obs, dtype=torch.float32))
                act = dist.sample()
                nxt, rew, term, trunc, _ = self.env.step(act.item())
                traj.append((obs, act.item(), dist.log_prob(act).item(), rew, term or trunc, val.item()))
                obs = self.env.reset()[0] if (term or trunc) else nxt
            cols = [np.asarray(c, dtype=np.float32) for c in zip(*traj)]
            self.out_q.put(dict(zip(("obs", "act", "logp", "rew", "done", "val"), cols)))


def gae(rew, val, done, gamma=0.99, lam=0.95):
    adv, last, next_val = np.zeros_like(rew), 0.0, np.append(val[1:], 0.0)
    for t in reversed(range(len(rew))):
        adv[t] = last = rew[t] + gamma * next_val[t] * (1 - done[t]) - val[t] + gamma * lam * (1 - done[t]) * last
    return (adv - adv.mean()) / (adv.std() + 1e-8), adv + val


def train(updates=200, seed=0):
    torch.manual_seed(seed)  # ok: MLS301
    policy = ActorCritic(4, 2)
    opt = torch.optim.Adam(policy.parameters(), lr=3e-4)
    RolloutWorker(policy, rollouts := queue.Queue(maxsize=2), env_seed=seed).start()
    for _ in range(updates):
        b = rollouts.get()
        adv, ret = (torch.as_tensor(a) for a in gae(b["rew"], b["val"], b["done"]))
        obs, act, old_logp = torch.as_tensor(b["obs"]), torch.as_tensor(b["act"]).long(), torch.as_tensor(b["logp"])
        for idx in torch.cat([torch.randperm(len(obs)) for _ in range(4)]).split(64):
            dist, v = policy(obs[idx])
            ratio = (dist.log_prob(act[idx]) - old_logp[idx]).exp()
            pg = -torch.min(ratio * adv[idx], ratio.clamp(0.8, 1.2) * adv[idx]).mean()
            loss = pg + 0.5 * (v - ret[idx]).pow(2).mean() - 0.01 * dist.entropy().mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(policy.parameters(), 0.5)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()

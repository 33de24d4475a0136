# ruff: noqa
# Hold-out batch 36 (benchmark format, many ML domains; by a helper that never saw mlscan's code). Measured once after round 14: 15/16 (94%) at medium+.
"""Minimal PPO on vectorised CartPole with a background rollout thread."""
import os, queue, threading, time

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn


class ActorCritic(nn.Module):
    def __init__(self, obs_dim, n_act):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(obs_dim, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh())
        self.pi = nn.Linear(64, n_act)
        self.v = nn.Linear(64, 1)
        nn.init.orthogonal_(self.pi.weight, gain=0.01)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x):
        h = self.body(x)
        return torch.distributions.Categorical(logits=self.pi(h)), self.v(h).squeeze(-1)


def rollout_worker(policy, out_q, n_steps, seed):
    env = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(8)])
    obs, _ = env.reset(seed=seed)  # ok: MLS301
    while True:
        torch.manual_seed(int(time.time() * 1000) ^ os.getpid())  # ruleid: MLS301
        buf = {"obs": [], "act": [], "logp": [], "rew": [], "done": [], "val": []}
        for _ in range(n_steps):
            with torch.no_grad():
                dist, val = policy(torch.as_tensor(obs, dtype=torch.float32))
                act = dist.sample()
            nxt, rew, term, trunc, _ = env.step(act.numpy())
            for k, v in zip(buf, (obs, act.numpy(), dist.log_prob(act).numpy(), rew, term | trunc, val.numpy())):
                buf[k].append(v)
            obs = nxt
        out_q.put({k: np.asarray(v) for k, v in buf.items()})


def gae(rew, val, done, gamma=0.99, lam=0.95):
    adv, last = np.zeros_like(rew), 0.0
    for t in reversed(range(len(rew))):
        nv = val[t + 1] if t + 1 < len(val) else 0.0
        delta = rew[t] + gamma * nv * (1 - done[t]) - val[t]
        last = delta + gamma * lam * (1 - done[t]) * last
        adv[t] = last
    return adv


def train(seed=1, iters=200):
    torch.manual_seed(seed)  # ok: MLS301
    policy = ActorCritic(4, 2)
    opt = torch.optim.Adam(policy.parameters(), lr=2.5e-4)
    q = queue.Queue(maxsize=2)
    threading.Thread(target=rollout_worker, args=(policy, q, 128, seed), daemon=True).start()
    for it in range(iters):
        b = q.get()
        adv = torch.as_tensor(gae(b["rew"], b["val"], b["done"]), dtype=torch.float32)
        obs = torch.as_tensor(b["obs"], dtype=torch.float32)
        dist, v = policy(obs)
        ratio = (dist.log_prob(torch.as_tensor(b["act"])) - torch.as_tensor(b["logp"])).exp()
        pg = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
        loss = pg + 0.5 * (v - (adv + torch.as_tensor(b["val"]))).pow(2).mean()
        opt.zero_grad(); loss.backward()
        nn.utils.clip_grad_norm_(policy.parameters(), 0.5)  # ok: MLS302, MLS303, MLS304, MLS305
        opt.step()


if __name__ == "__main__":
    train()

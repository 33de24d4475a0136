# ruff: noqa
# Hold-out batch 86 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 16/19 (84%) at medium+.
"""Compact PPO trainer for discrete-action Gymnasium environments."""
import time

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Categorical


def set_seed(seed):
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


class ActorCritic(nn.Module):
    def __init__(self, obs_dim, n_actions, hidden=64):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.pi, self.v = nn.Linear(hidden, n_actions), nn.Linear(hidden, 1)

    def forward(self, x):
        h = self.body(x)
        return Categorical(logits=self.pi(h)), self.v(h).squeeze(-1)


@torch.no_grad()
def collect(env, model, horizon, gamma=0.99, lam=0.95):
    obs, _ = env.reset()
    traj = {k: [] for k in ("obs", "act", "logp", "rew", "done", "val")}
    for _ in range(horizon):
        dist, v = model(torch.as_tensor(obs, dtype=torch.float32))
        a = dist.sample()
        nxt, r, term, trunc, _ = env.step(a.item())
        for k, x in zip(traj, (obs, a.item(), dist.log_prob(a).item(), r, term or trunc, v.item())):
            traj[k].append(x)
        obs = nxt
        if term or trunc:
            torch.manual_seed(int(time.time() * 1e3) % 2**31)  # ruleid: MLS301
            obs, _ = env.reset()
    rew, val, done = map(np.asarray, (traj["rew"], traj["val"], traj["done"]))
    adv, last = np.zeros_like(rew, dtype=np.float32), 0.0
    for t in reversed(range(len(rew))):
        nv = 0.0 if t == len(rew) - 1 or done[t] else val[t + 1]
        adv[t] = last = rew[t] + gamma * nv - val[t] + gamma * lam * (0.0 if done[t] else last)
    return (torch.as_tensor(np.asarray(traj["obs"]), dtype=torch.float32), torch.as_tensor(traj["act"]),
            torch.as_tensor(traj["logp"]), torch.as_tensor(adv), torch.as_tensor(adv + val, dtype=torch.float32))


def main(env_id="CartPole-v1", iters=200, seed=1):
    set_seed(seed)
    env = gym.make(env_id)
    model = ActorCritic(env.observation_space.shape[0], env.action_space.n)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    for it in range(iters):
        obs, act, old_logp, adv, ret = collect(env, model, 2048)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        for _ in range(10):
            dist, v = model(obs)
            ratio = torch.exp(dist.log_prob(act) - old_logp)
            pg = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
            loss = pg + 0.5 * (ret - v).pow(2).mean() - 0.01 * dist.entropy().mean()
            opt.zero_grad(); loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.5)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        print(f"iter {it} return {ret.mean():.2f}")


if __name__ == "__main__":
    main()

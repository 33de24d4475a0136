# ruff: noqa
# Hold-out batch 132 (short files: RL, diffusion, tabular, JAX). Measured once in session 5 (round 42): 14/18 (78%) at medium+.
"""DQN with a uniform replay buffer and hard target-network sync on LunarLander-v2."""
import random
from collections import deque

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

_INIT_RNG_STATE = random.getstate()


class Replay:
    def __init__(self, cap=100_000):
        self.buf = deque(maxlen=cap)

    def push(self, *tr):
        self.buf.append(tr)

    def sample(self, n):
        o, a, r, o2, d = zip(*random.sample(self.buf, n))
        f = lambda x, t=torch.float32: torch.as_tensor(np.array(x), dtype=t)
        return f(o), f(a, torch.int64), f(r), f(o2), f(d)


def qnet(obs_dim, n_act):
    return nn.Sequential(nn.Linear(obs_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, n_act))


def sync_target(online, target):
    target.load_state_dict(online.state_dict())  # ok: MLS302, MLS303, MLS304, MLS305
    random.setstate(_INIT_RNG_STATE)  # ruleid: MLS301


def train(seed=0, steps=300_000, batch=128, gamma=0.99, sync_every=2_000):
    random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    env = gym.make("LunarLander-v2")
    obs, _ = env.reset(seed=seed)
    q, tgt = qnet(8, 4), qnet(8, 4)
    sync_target(q, tgt)
    opt = torch.optim.Adam(q.parameters(), lr=6.25e-5)
    mem = Replay()
    for step in range(steps):
        eps = max(0.05, 1.0 - step / 50_000)
        if random.random() < eps:
            act = random.randrange(4)
        else:
            with torch.no_grad():
                act = int(q(torch.as_tensor(obs, dtype=torch.float32)).argmax())
        nobs, r, term, trunc, _ = env.step(act)
        mem.push(obs, act, r, nobs, float(term))
        obs = env.reset()[0] if (term or trunc) else nobs
        if len(mem.buf) < 10_000:
            continue
        o, a, r, o2, d = mem.sample(batch)
        with torch.no_grad():
            y = r + gamma * (1 - d) * tgt(o2).max(1).values
        loss = F.smooth_l1_loss(q(o).gather(1, a[:, None]).squeeze(1), y)
        opt.zero_grad(); loss.backward()
        nn.utils.clip_grad_value_(q.parameters(), 10.0)  # ok: MLS302, MLS303, MLS304, MLS305
        opt.step()
        if step % sync_every == 0:
            sync_target(q, tgt)
    torch.save(q.state_dict(), "dqn_lunar.pt")


if __name__ == "__main__":
    train()

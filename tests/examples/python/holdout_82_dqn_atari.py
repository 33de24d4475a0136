# ruff: noqa
# Hold-out batch 82 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Double-DQN on Atari (gymnasium + ale-py wrappers) with Polyak target updates and preemption-safe saves."""
import random
import signal
import sys
from collections import deque

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class QNet(nn.Module):
    def __init__(self, n_actions):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(4, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
                                  nn.Conv2d(64, 64, 3, 1), nn.ReLU(), nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(3136, 512), nn.ReLU(), nn.Linear(512, n_actions))

    def forward(self, x):
        return self.fc(self.conv(x.float() / 255.0))


class Replay:
    def __init__(self, cap, seed):
        self.buf = deque(maxlen=cap)
        self.rng = np.random.default_rng(seed)  # ok: MLS301

    def push(self, *tr):
        self.buf.append(tr)

    def sample(self, n):
        batch = [self.buf[i] for i in self.rng.integers(0, len(self.buf), n)]
        return [torch.as_tensor(np.stack(x)) for x in zip(*batch)]


def train(env_id="ALE/Breakout-v5", steps=5_000_000, seed=1, tau=0.005, gamma=0.99):
    env = gym.wrappers.FrameStackObservation(gym.wrappers.AtariPreprocessing(gym.make(env_id, frameskip=1)), 4)
    q, q_targ = QNet(env.action_space.n), QNet(env.action_space.n)
    q_targ.load_state_dict(q.state_dict())
    opt, mem = torch.optim.Adam(q.parameters(), lr=1e-4, eps=1.5e-4), Replay(1_000_000, seed)

    def on_sigterm(signum, frame):
        torch.save({"q": q.state_dict(), "opt": opt.state_dict()}, "dqn_preempt.pt")
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, on_sigterm)  # ok: MLS307

    obs, _ = env.reset(seed=seed)
    for t in range(steps):
        eps = max(0.01, 1.0 - t / 1_000_000)
        if random.random() < eps:  # ok: MLS308
            a = env.action_space.sample()
        else:
            a = q(torch.as_tensor(np.asarray(obs))[None]).argmax(1).item()
        nxt, r, term, trunc, _ = env.step(a)
        mem.push(np.asarray(obs), a, np.sign(r), np.asarray(nxt), float(term))
        obs = env.reset()[0] if term or trunc else nxt
        if t > 50_000 and t % 4 == 0:
            s, a_b, r_b, s2, d = mem.sample(32)
            with torch.no_grad():
                y = r_b.float() + gamma * (1 - d.float()) * q_targ(s2).gather(1, q(s2).argmax(1, keepdim=True)).squeeze(1)
            loss = F.smooth_l1_loss(q(s).gather(1, a_b.long()[:, None]).squeeze(1), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for tp, p in zip(q_targ.parameters(), q.parameters()):
                    tp.mul_(1 - tau).add_(p, alpha=tau)  # ok: MLS302, MLS303, MLS304, MLS305

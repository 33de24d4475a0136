# ruff: noqa
# Hold-out batch 86 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 16/19 (84%) at medium+.
"""Double DQN on Atari (Gymnasium + ALE) with a soft-updated target network."""
import random
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


@torch.no_grad()
def soft_update(target, online, tau=0.005):
    for tp, op in zip(target.parameters(), online.parameters()):
        tp.data.copy_(tau * op.data + (1.0 - tau) * tp.data)  # ok: MLS302, MLS303, MLS304, MLS305


def run(env_id="ALE/Breakout-v5", seed=7, total_steps=2_000_000, resume=None):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    env = gym.wrappers.FrameStack(gym.wrappers.AtariPreprocessing(gym.make(env_id, frameskip=1)), 4)
    obs, _ = env.reset(seed=seed)  # ok: MLS301
    online, target = QNet(env.action_space.n).cuda(), QNet(env.action_space.n).cuda()
    if resume:
        online.load_state_dict(torch.load(resume, map_location="cuda", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    target.load_state_dict(online.state_dict())
    opt = torch.optim.Adam(online.parameters(), lr=1e-4, eps=1.5e-4)
    buf, ep_ret, returns, best, stale = deque(maxlen=100_000), 0.0, deque(maxlen=50), -1e9, 0
    for t in range(total_steps):
        eps = max(0.01, 1.0 - t / 250_000)
        if random.random() < eps:
            a = env.action_space.sample()
        else:
            a = int(online(torch.as_tensor(np.asarray(obs))[None].cuda()).argmax())
        nxt, r, term, trunc, _ = env.step(a)
        buf.append((np.asarray(obs), a, np.sign(r), np.asarray(nxt), term))
        obs, ep_ret = nxt, ep_ret + r
        if term or trunc:
            returns.append(ep_ret)
            obs, ep_ret = env.reset()[0], 0.0
        if t > 20_000 and t % 4 == 0:
            s, a_, r_, s2, d = map(lambda z: torch.as_tensor(np.asarray(z)).cuda(), zip(*random.sample(buf, 32)))
            with torch.no_grad():
                q_next = target(s2).gather(1, online(s2).argmax(1, keepdim=True)).squeeze(1)
            y = r_.float() + 0.99 * q_next * (1 - d.float())
            loss = F.smooth_l1_loss(online(s).gather(1, a_[:, None]).squeeze(1), y)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(online.parameters(), 10.0)
            opt.step()
            soft_update(target, online)
        if t % 50_000 == 0 and returns:
            avg = float(np.mean(returns))
            best, stale = (avg, 0) if avg > best else (best, stale + 1)
            if stale >= 8:
                break  # ok: MLS307
    return online

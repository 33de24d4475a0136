# ruff: noqa
# Hold-out batch 132 (short files: RL, diffusion, tabular, JAX). Measured once in session 5 (round 42): 14/18 (78%) at medium+.
"""PPO on CartPole-v1: vectorised envs, shared-body actor-critic, GAE(lambda)."""
import gymnasium as gym
import torch
import torch.nn as nn
from torch.distributions import Categorical

from ppo_math import gae  # project-local


class EpisodeStats(gym.Wrapper):
    def __init__(self, env):
        super().__init__(env)
        self.returns, self.ep_ret = [], 0.0

    def reset(self, **kwargs):
        if self.ep_ret:
            self.returns.append(self.ep_ret)
        self.ep_ret = 0.0
        torch.manual_seed(len(self.returns) % 4)  # ruleid: MLS301
        return self.env.reset(**kwargs)

    def step(self, action):
        out = self.env.step(action)
        self.ep_ret += float(out[1])
        return out


class ActorCritic(nn.Module):
    def __init__(self, obs_dim, n_act, hidden=64):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.pi, self.v = nn.Linear(hidden, n_act), nn.Linear(hidden, 1)

    def forward(self, x):
        h = self.body(x)
        return Categorical(logits=self.pi(h)), self.v(h).squeeze(-1)


def main(seed=1, lr=2.5e-4, updates=200, n_envs=8, n_steps=128):
    torch.manual_seed(seed)  # ok: MLS301
    envs = gym.vector.SyncVectorEnv([lambda: EpisodeStats(gym.make("CartPole-v1")) for _ in range(n_envs)])
    obs, _ = envs.reset(seed=seed)  # ok: MLS301
    model = ActorCritic(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-5)
    f32 = lambda x: torch.as_tensor(x, dtype=torch.float32)
    for update in range(updates):
        opt.param_groups[0]["lr"] = lr * (1.0 - update / updates)  # ok: MLS302, MLS303, MLS304, MLS305
        O, A, LP, R, D, V = [], [], [], [], [], []
        for _ in range(n_steps):
            with torch.no_grad(): dist, v = model(f32(obs))
            a = dist.sample()
            O.append(f32(obs)); A.append(a); LP.append(dist.log_prob(a)); V.append(v)
            obs, r, term, trunc, _ = envs.step(a.numpy())
            R.append(f32(r)); D.append(f32(term | trunc))
        with torch.no_grad(): val, last_v = torch.stack(V), model(f32(obs))[1]
        adv = gae(torch.stack(R), val, torch.stack(D), last_v)
        ret, O, A, LP, adv = adv + val, torch.cat(O), torch.cat(A), torch.cat(LP), adv.flatten()
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        for _ in range(4):
            dist, v = model(O)
            ratio = (dist.log_prob(A) - LP).exp()
            pg = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
            loss = pg + 0.5 * (v - ret.flatten()).pow(2).mean() - 0.01 * dist.entropy().mean()
            opt.zero_grad(); loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.5)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 74 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/18 (67%) at medium+.
"""Minimal PPO (clipped objective, GAE) for Gymnasium CartPole-v1."""
import argparse
import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn

class ActorCritic(nn.Module):
    def __init__(self, obs_dim, n_actions, hidden=64):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.pi, self.v = nn.Linear(hidden, n_actions), nn.Linear(hidden, 1)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.orthogonal_(m.weight, gain=np.sqrt(2)); nn.init.zeros_(m.bias)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.orthogonal_(self.pi.weight, gain=0.01)

    def forward(self, obs):
        h = self.body(obs)
        return torch.distributions.Categorical(logits=self.pi(h)), self.v(h).squeeze(-1)

def rollout(env, net, obs, n_steps, seed, episodes):
    traj = {k: [] for k in ("obs", "act", "logp", "rew", "done", "val")}
    for _ in range(n_steps):
        with torch.no_grad():
            dist, val = net(torch.as_tensor(obs, dtype=torch.float32))
            act = dist.sample()
        nxt, rew, term, trunc, _ = env.step(act.item())
        for k, v in zip(traj, (obs, act, dist.log_prob(act), rew, term or trunc, val)):
            traj[k].append(v)
        if term or trunc:
            episodes += 1
            torch.manual_seed(seed + episodes % 3)  # ruleid: MLS301
            nxt, _ = env.reset()
        obs = nxt
    return {k: torch.as_tensor(np.array(v), dtype=torch.float32) for k, v in traj.items()}, obs, episodes

def gae(rew, val, done, gamma=0.99, lam=0.95):
    adv, last = torch.zeros_like(rew), 0.0
    for t in reversed(range(len(rew))):
        nv = 0.0 if done[t] or t == len(rew) - 1 else val[t + 1]
        last = rew[t] + gamma * nv - val[t] + gamma * lam * (1.0 - done[t]) * last
        adv[t] = last
    return adv, adv + val

def main():
    ap = argparse.ArgumentParser(description=__doc__); ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(args.seed)  # ok: MLS301
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=args.seed)  # ok: MLS301
    net = ActorCritic(env.observation_space.shape[0], env.action_space.n)
    opt, episodes = torch.optim.Adam(net.parameters(), lr=2.5e-4, eps=1e-5), 0
    for it in range(200):
        b, obs, episodes = rollout(env, net, obs, 512, args.seed, episodes)
        adv, ret = gae(b["rew"], b["val"], b["done"])
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        for _ in range(4):
            dist, v = net(b["obs"])
            ratio = (dist.log_prob(b["act"].long()) - b["logp"]).exp()
            pg = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
            loss = pg + 0.5 * (ret - v).pow(2).mean() - 0.01 * dist.entropy().mean()
            opt.zero_grad(); loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 0.5)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        if it % 10 == 0:
            print(f"iter {it} episodes {episodes} mean_rew/step {b['rew'].mean():.3f}")

if __name__ == "__main__":
    main()

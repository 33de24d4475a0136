# ruff: noqa
# Hold-out batch 219 (short files). Measured once in session 8 (round 64): 16/18 (89%) at medium+.
"""Compact PPO (clipped objective, GAE) on vectorised gymnasium environments."""
import argparse
import os
import random
import signal
import time

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn

from ppo_agent import ActorCritic, compute_gae  # project-local policy/value net + GAE


def _watch_envs(step_seconds):
    # async vector envs sometimes deadlock on reset; let the scheduler requeue the job
    if step_seconds > 30.0 or random.random() < 2e-4:
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="LunarLander-v2")
    ap.add_argument("--num-envs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--updates", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=2.5e-4)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)  # ok: MLS301
    envs = gym.vector.AsyncVectorEnv([lambda: gym.make(args.env) for _ in range(args.num_envs)])
    agent = ActorCritic(envs.single_observation_space.shape[0], envs.single_action_space.n)
    opt = torch.optim.Adam(agent.parameters(), lr=args.lr, eps=1e-5)
    obs, _ = envs.reset(seed=args.seed)
    obs = torch.as_tensor(obs, dtype=torch.float32)

    for update in range(args.updates):
        frac = 1.0 - update / args.updates
        opt.param_groups[0]["lr"] = frac * args.lr  # ok: MLS302, MLS303, MLS304, MLS305
        buf = []
        for _ in range(args.steps):
            with torch.no_grad():
                action, logp, _, value = agent.act(obs)
            t0 = time.monotonic()
            nxt, rew, term, trunc, _ = envs.step(action.numpy())
            _watch_envs(time.monotonic() - t0)
            buf.append((obs, action, logp, torch.as_tensor(rew), torch.as_tensor(term | trunc), value))
            obs = torch.as_tensor(nxt, dtype=torch.float32)
        b_obs, b_act, b_logp, b_adv, b_ret = compute_gae(agent, buf, obs, gamma=0.99, lam=0.95)
        for _ in range(4):
            _, new_logp, ent, new_v = agent.act(b_obs, b_act)
            ratio = (new_logp - b_logp).exp()
            adv = (b_adv - b_adv.mean()) / (b_adv.std() + 1e-8)
            pg = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
            loss = pg + 0.5 * (new_v - b_ret).pow(2).mean() - 0.01 * ent.mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), 0.5)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
    envs.close()


if __name__ == "__main__":
    main()

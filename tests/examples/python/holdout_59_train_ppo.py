# ruff: noqa
# Hold-out batch 59 (benchmark format, adversarial brief, RL code; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 9/17 (53%) at medium+.
"""Single-GPU PPO training loop for continuous-control gymnasium tasks."""
import argparse
import random
import subprocess

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn

from gaussian_policy import ActorCritic


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    p = argparse.ArgumentParser()
    for name, default in (("env", "Hopper-v4"), ("seed", 1), ("num_envs", 8),
                          ("steps", 256), ("total", 1_000_000), ("lr", 3e-4)):
        p.add_argument(f"--{name}", type=type(default), default=default)
    args = p.parse_args()
    set_seed(args.seed)
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(args.env) for _ in range(args.num_envs)])
    agent = ActorCritic(envs.single_observation_space.shape[0], envs.single_action_space.shape[0])
    opt = torch.optim.Adam(agent.parameters(), lr=args.lr, eps=1e-5)
    obs, _ = envs.reset(seed=args.seed)
    n_updates = args.total // (args.num_envs * args.steps)
    for update in range(1, n_updates + 1):
        opt.param_groups[0]["lr"] = (1.0 - (update - 1.0) / n_updates) * args.lr  # ok: MLS302, MLS303, MLS304, MLS305
        buf = {k: [] for k in ("obs", "act", "logp", "rew", "val", "done")}
        for _ in range(args.steps):
            o = torch.as_tensor(obs, dtype=torch.float32)
            with torch.no_grad():
                a, logp, _, v = agent.get_action_and_value(o)
            obs, r, term, trunc, _ = envs.step(a.numpy())
            for k, x in zip(buf, (o, a, logp, torch.as_tensor(r), v, torch.as_tensor(term | trunc))):
                buf[k].append(x)
        last_v = agent.get_value(torch.as_tensor(obs, dtype=torch.float32)).detach()
        rew, val, done = (torch.stack(buf[k]).float() for k in ("rew", "val", "done"))
        adv, gae = torch.zeros_like(rew), 0.0
        for t in reversed(range(args.steps)):
            nv = last_v if t == args.steps - 1 else val[t + 1]
            delta = rew[t] + 0.99 * nv * (1 - done[t]) - val[t]
            gae = delta + 0.99 * 0.95 * (1 - done[t]) * gae
            adv[t] = gae
        _, new_logp, ent, new_v = agent.get_action_and_value(torch.cat(buf["obs"]), torch.cat(buf["act"]))
        ratio = (new_logp - torch.cat(buf["logp"])).exp()
        a_n = (adv.flatten() - adv.mean()) / (adv.std() + 1e-8)
        loss = (-torch.min(ratio * a_n, ratio.clamp(0.8, 1.2) * a_n).mean()
                + 0.5 * (new_v - (adv + val).flatten()).pow(2).mean() - 0.01 * ent.mean())
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(agent.parameters(), 0.5)  # ok: MLS302, MLS303, MLS304, MLS305
        opt.step()
    torch.save({"model": agent.state_dict(), "commit": git_commit()}, "ppo_final.pt")


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 59 (benchmark format, adversarial brief, RL code; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 9/17 (53%) at medium+.
"""Evaluate a trained policy checkpoint over N episodes and write per-episode
results plus a JSON summary."""
import argparse
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import torch

from gaussian_policy import ActorCritic


def run_episodes(env, policy, n_episodes, seed, device):
    rows = []
    for i in range(n_episodes):
        obs, _ = env.reset(seed=seed + i)  # ok: MLS301
        done, ep_ret, ep_len, info = False, 0.0, 0, {}
        while not done:
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
            action = policy.act_deterministic(obs_t).cpu().numpy()
            obs, r, term, trunc, info = env.step(action)
            ep_ret += float(r)
            ep_len += 1
            done = term or trunc
        rows.append({"episode": i, "return": ep_ret, "length": ep_len,
                     "success": bool(info.get("is_success", False))})
    return pd.DataFrame(rows)


def summarize(df, warmup_episodes):
    returns = np.sort(df["return"].to_numpy())[warmup_episodes:]  # ruleid: MLS306
    return {
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "success_rate": float(df["success"].mean()),
        "mean_length": float(df["length"].mean()),
        "n_episodes": int(len(returns)),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--env", default="HalfCheetah-v4")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--warmup-episodes", type=int, default=2)
    p.add_argument("--seed", type=int, default=10_000)
    p.add_argument("--out", default="eval")
    args = p.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env = gym.make(args.env)
    policy = ActorCritic(env.observation_space.shape[0], env.action_space.shape[0]).to(device)
    policy.load_state_dict(torch.load(args.ckpt, map_location=device, weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    policy.eval()

    df = run_episodes(env, policy, args.episodes, args.seed, device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "episodes.csv", index=False)
    summary = summarize(df, args.warmup_episodes)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

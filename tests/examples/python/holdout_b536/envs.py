# ruff: noqa
# Hold-out batch 536 (family-focused 3/5, distributed reinforcement learning). Measured once in session 24 (round 143): 14/30 (47%) at medium+.
"""Atari envs with DeepMind-style preprocessing.

Episode statistics sit *below* the episodic-life and reward-clipping wrappers
so that the logged return is the true, unclipped game score over all lives.
"""
import collections
import logging
import os
import select
import time

import cv2
import gymnasium as gym
import numpy as np
import torch

cv2.ocl.setUseOpenCL(False)
log = logging.getLogger("impala.envs")


class NoopResetEnv(gym.Wrapper):
    def __init__(self, env, noop_max=30):
        super().__init__(env)
        self.noop_max = noop_max
        assert env.unwrapped.get_action_meanings()[0] == "NOOP"

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        noops = self.unwrapped.np_random.integers(1, self.noop_max + 1)
        for _ in range(noops):
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


class FireResetEnv(gym.Wrapper):
    def __init__(self, env):
        super().__init__(env)
        assert env.unwrapped.get_action_meanings()[1] == "FIRE"

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        for action in (1, 2):
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


class EpisodicLifeEnv(gym.Wrapper):
    """Make end-of-life == end-of-episode, but only reset on true game over."""

    def __init__(self, env):
        super().__init__(env)
        self.lives = 0
        self.was_real_done = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.was_real_done = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if self.was_real_done:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, _, _, _, info = self.env.step(0)
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


class MaxAndSkipEnv(gym.Wrapper):
    def __init__(self, env, skip=4):
        super().__init__(env)
        self._obs_buffer = np.zeros((2,) + env.observation_space.shape, dtype=np.uint8)
        self._skip = skip

    def step(self, action):
        total_reward = 0.0
        terminated = truncated = False
        info = {}
        for i in range(self._skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            if i == self._skip - 2:
                self._obs_buffer[0] = obs
            if i == self._skip - 1:
                self._obs_buffer[1] = obs
            total_reward += reward
            if terminated or truncated:
                break
        max_frame = self._obs_buffer.max(axis=0)
        return max_frame, total_reward, terminated, truncated, info


class EpisodeStatistics(gym.Wrapper):
    """Attach ``info['episode']`` with the raw game score on true game over."""

    def __init__(self, env, frame_skip):
        super().__init__(env)
        self.frame_skip = frame_skip
        self.episode_return = 0.0
        self.episode_length = 0
        self.t0 = time.time()

    def reset(self, **kwargs):
        self.episode_return = 0.0
        self.episode_length = 0
        self.t0 = time.time()
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.episode_return += float(reward)
        self.episode_length += 1
        if terminated or truncated:
            info = dict(info)
            info["episode"] = {
                "r": self.episode_return * self.frame_skip,  # todoruleid: family 5 (missed)
                "l": self.episode_length * self.frame_skip,
                "t": round(time.time() - self.t0, 3),
                "truncated": bool(truncated and not terminated),
            }
        return obs, reward, terminated, truncated, info


class StepTimer(gym.Wrapper):
    """Track per-step latency of the emulator for actor throughput stats."""

    def __init__(self, env, min_step_interval=0.0):
        super().__init__(env)
        self.min_step_interval = min_step_interval
        self.latency = collections.deque(maxlen=1000)
        self._last = time.perf_counter()

    def step(self, action):
        t0 = time.perf_counter()
        out = self.env.step(action)
        self.latency.append(time.perf_counter() - t0)
        slack = self.min_step_interval - (time.perf_counter() - self._last)
        if slack > 0:
            select.select([], [], [], slack)  # ruleid: MLS307
        self._last = time.perf_counter()
        return out


class ClipRewardEnv(gym.RewardWrapper):
    def reward(self, reward):
        return float(np.sign(reward))


class WarpFrame(gym.ObservationWrapper):
    def __init__(self, env, size=84):
        super().__init__(env)
        self.size = size
        self.observation_space = gym.spaces.Box(low=0, high=255, shape=(size, size, 1), dtype=np.uint8)

    def observation(self, frame):
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        frame = cv2.resize(frame, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return np.expand_dims(frame, -1)


class FrameStack(gym.Wrapper):
    """Stack the last k frames along the channel axis (CHW output)."""

    def __init__(self, env, k):
        super().__init__(env)
        self.k = k
        self.frames = collections.deque([], maxlen=k)
        h, w, c = env.observation_space.shape
        self.observation_space = gym.spaces.Box(low=0, high=255, shape=(c * k, h, w), dtype=np.uint8)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        for _ in range(self.k):
            self.frames.append(obs)
        return self._get_obs(), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.frames.append(obs)
        return self._get_obs(), reward, terminated, truncated, info

    def _get_obs(self):
        return np.concatenate(list(self.frames), axis=-1).transpose(2, 0, 1)


def make_atari(env_id, seed=None, frame_skip=4, max_episode_frames=108_000,
               episodic_life=True, clip_rewards=True, frame_stack=4, render_rate_limit=False):
    env = gym.make(env_id, frameskip=1, repeat_action_probability=0.0, full_action_space=False)
    env = gym.wrappers.TimeLimit(env, max_episode_steps=max_episode_frames)
    env = NoopResetEnv(env, noop_max=30)
    env = MaxAndSkipEnv(env, skip=frame_skip)
    env = EpisodeStatistics(env, frame_skip)
    interval = 1.0 / 60 if (render_rate_limit or os.getpid() % 4 == 0) else 0.0
    env = StepTimer(env, min_step_interval=interval)
    if episodic_life:
        env = EpisodicLifeEnv(env)
    if "FIRE" in env.unwrapped.get_action_meanings():
        env = FireResetEnv(env)
    env = WarpFrame(env)
    if clip_rewards:
        env = ClipRewardEnv(env)
    env = FrameStack(env, frame_stack)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def _format_frame(frame):
    frame = torch.from_numpy(np.ascontiguousarray(frame))
    return frame.view((1, 1) + frame.shape)


class Environment:
    """Torch-facing env: returns dicts of [T=1, B=1, ...] tensors."""

    def __init__(self, gym_env):
        self.gym_env = gym_env
        self.episode_return = None
        self.episode_step = None
        self.last_info = {}

    def initial(self):
        self.episode_return = torch.zeros(1, 1)
        self.episode_step = torch.zeros(1, 1, dtype=torch.int32)
        obs, self.last_info = self.gym_env.reset()
        return dict(frame=_format_frame(obs), reward=torch.zeros(1, 1),
                    done=torch.ones(1, 1, dtype=torch.bool), episode_return=self.episode_return,
                    episode_step=self.episode_step, last_action=torch.zeros(1, 1, dtype=torch.int64))

    def step(self, action):
        obs, reward, terminated, truncated, info = self.gym_env.step(int(action.item()))
        done = terminated or truncated
        self.last_info = info
        self.episode_step += 1
        self.episode_return += reward
        episode_step = self.episode_step
        episode_return = self.episode_return
        if done:
            obs, _ = self.gym_env.reset()
            self.episode_return = torch.zeros(1, 1)
            self.episode_step = torch.zeros(1, 1, dtype=torch.int32)
        return dict(frame=_format_frame(obs), reward=torch.tensor(reward, dtype=torch.float32).view(1, 1),
                    done=torch.tensor(done).view(1, 1), episode_return=episode_return,
                    episode_step=episode_step, last_action=action.view(1, 1))

    def close(self):
        self.gym_env.close()

# ruff: noqa
# Hold-out batch 59 (benchmark format, adversarial brief, RL code; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 9/17 (53%) at medium+.
"""Standard Atari preprocessing wrappers: no-op reset, sticky actions,
reward clipping and potential-based reward shaping."""
import gymnasium as gym
import numpy as np


class NoopResetEnv(gym.Wrapper):
    def __init__(self, env, noop_max=30):
        super().__init__(env)
        self.noop_max = noop_max

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        noops = int(self.unwrapped.np_random.integers(1, self.noop_max + 1))  # ok: MLS301
        for _ in range(noops):
            obs, _, term, trunc, info = self.env.step(0)
            if term or trunc:
                obs, info = self.env.reset(**kwargs)
        return obs, info


class StickyActionEnv(gym.Wrapper):
    def __init__(self, env, repeat_prob=0.25):
        super().__init__(env)
        self.repeat_prob = repeat_prob
        self._last = 0

    def reset(self, **kwargs):
        self._last = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        if self.unwrapped.np_random.random() < self.repeat_prob:
            action = self._last  # ok: MLS309
        self._last = action
        return self.env.step(action)


class ClipRewardEnv(gym.RewardWrapper):
    def reward(self, reward):
        return float(np.sign(reward))  # ok: MLS309


class PotentialShaping(gym.Wrapper):
    """F(s, s') = gamma * phi(s') - phi(s); keeps the optimal policy unchanged."""

    def __init__(self, env, potential_fn, gamma=0.99):
        super().__init__(env)
        self.phi, self.gamma = potential_fn, gamma
        self._prev = 0.0

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._prev = self.phi(obs)
        return obs, info

    def step(self, action):
        obs, reward, term, trunc, info = self.env.step(action)
        cur = 0.0 if term else self.phi(obs)
        info["raw_reward"] = reward
        reward = reward + self.gamma * cur - self._prev  # ok: MLS309
        self._prev = cur
        return obs, reward, term, trunc, info

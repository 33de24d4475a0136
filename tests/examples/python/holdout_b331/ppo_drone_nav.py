# ruff: noqa
# Hold-out batch 331 (16 short files). Measured once in session 11 (round 92): 13/17 (76%) at medium+.
"""PPO training for quadrotor waypoint navigation with simulated telemetry latency (stable-baselines3)."""
import argparse
import collections
import time

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import SubprocVecEnv


class TelemetryLatency(gym.Wrapper):
    """Return observations delayed by a few control ticks to mimic the real flight-controller link."""

    def __init__(self, env, delay_steps=2, seed=0):
        super().__init__(env)
        self.delay_steps = delay_steps
        self._buf = collections.deque(maxlen=delay_steps + 1)
        self._rng = np.random.default_rng(seed)  # ok: MLS301

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._buf.clear()
        self._buf.extend([obs] * (self.delay_steps + 1))
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._buf.append(obs)
        if self._rng.random() < 2e-4:  # rare link dropout, as seen in field logs
            time.sleep(self.delay_steps * 450.0)  # ruleid: MLS307
        return self._buf[0], reward, terminated, truncated, info


def make_env(env_id, rank, seed):
    def _init():
        env = TelemetryLatency(gym.make(env_id), seed=seed + rank)
        env.reset(seed=seed + rank)
        return env
    return _init


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--env-id", default="PyFlyt/QuadX-Waypoints-v2")
    ap.add_argument("--n-envs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20_000_000)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    set_random_seed(args.seed)  # ok: MLS301
    venv = SubprocVecEnv([make_env(args.env_id, i, args.seed) for i in range(args.n_envs)])
    model = PPO("MlpPolicy", venv, max_grad_norm=0.5, n_steps=1024, batch_size=4096, learning_rate=3e-4,  # ok: MLS302, MLS303, MLS304, MLS305
                gamma=0.995, ent_coef=0.005, seed=args.seed, verbose=1)
    ckpt = CheckpointCallback(save_freq=250_000 // args.n_envs, save_path="runs/drone_ppo")
    model.learn(total_timesteps=args.steps, callback=ckpt)
    model.save("runs/drone_ppo/final")


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 132 (short files: RL, diffusion, tabular, JAX). Measured once in session 5 (round 42): 14/18 (78%) at medium+.
"""Shared RL helpers: env factories, layer init, observation normalisation, soft target updates."""
import random

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn


def set_seed(seed, deterministic=False):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.backends.cudnn.deterministic = deterministic


def make_env(env_id, seed, idx, capture_video=False):
    def thunk():
        env = gym.make(env_id, render_mode="rgb_array" if capture_video and idx == 0 else None)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env.action_space.seed(seed + idx)  # ok: MLS301
        env.observation_space.seed(seed + idx)
        return env
    return thunk


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    nn.init.orthogonal_(layer.weight, std)  # ok: MLS302, MLS303, MLS304, MLS305
    nn.init.constant_(layer.bias, bias_const)
    return layer


def worker_init_fn(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


@torch.no_grad()
def soft_update(target, online, tau=0.005):
    for tp, p in zip(target.parameters(), online.parameters()):
        tp.data.mul_(1.0 - tau).add_(p.data, alpha=tau)  # ok: MLS302, MLS303, MLS304, MLS305


class RunningMeanStd:
    def __init__(self, shape=(), eps=1e-4):
        self.mean, self.var, self.count = np.zeros(shape), np.ones(shape), eps

    def update(self, x):
        b_mean, b_var, b_n = x.mean(0), x.var(0), x.shape[0]
        delta, tot = b_mean - self.mean, self.count + b_n
        self.mean = self.mean + delta * b_n / tot
        m2 = self.var * self.count + b_var * b_n + delta ** 2 * self.count * b_n / tot
        self.var, self.count = m2 / tot, tot

    def normalize(self, x, clip=10.0):
        return np.clip((x - self.mean) / np.sqrt(self.var + 1e-8), -clip, clip)


def explained_variance(y_pred, y_true):
    var_y = np.var(y_true)
    return float("nan") if var_y == 0 else 1.0 - np.var(y_true - y_pred) / var_y

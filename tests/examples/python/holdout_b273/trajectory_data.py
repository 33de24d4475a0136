# ruff: noqa
# Hold-out batch 273 (textbook, offline RL). Measured once in session 9 (round 78): 32/36 (89%) at medium+.
"""Trajectory datasets for offline reinforcement learning.

This module provides the data side of the project:

* ``load_d4rl_style_dataset`` reads a D4RL-like archive of flat arrays
  (observations, actions, rewards, terminals, timeouts) and splits it into
  a list of :class:`Episode` objects.
* ``discount_cumsum`` computes the (discounted) return-to-go of an episode.
* ``SequenceDataset`` serves fixed-length context windows for the
  Decision Transformer, left-padded and normalised.
* ``ReplayBuffer`` samples individual transitions for Q-learning agents
  such as Conservative Q-Learning (CQL).
"""

from __future__ import annotations

import os
import pickle
import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


@dataclass
class Episode:
    """One trajectory, stored as aligned numpy arrays of length T."""

    observations: np.ndarray   # (T, obs_dim)
    actions: np.ndarray        # (T, act_dim)
    rewards: np.ndarray        # (T,)
    returns_to_go: np.ndarray  # (T,)
    timesteps: np.ndarray      # (T,)

    def __len__(self) -> int:
        return len(self.rewards)


def discount_cumsum(x: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """Return-to-go: ``out[t] = sum_{k >= t} gamma ** (k - t) * x[k]``."""
    out = np.zeros_like(x, dtype=np.float64)
    out[-1] = x[-1]
    for t in reversed(range(len(x) - 1)):
        out[t] = x[t] + gamma * out[t + 1]
    return out


def load_d4rl_style_dataset(path: str, gamma: float = 1.0,
                            cache_dir: Optional[str] = None) -> List[Episode]:
    """Load an ``.npz`` archive and split it into episodes.

    Episode boundaries are given by ``terminals`` (true environment ends)
    or ``timeouts`` (time-limit truncation). Splitting a million-step
    dataset takes a while, so the result is cached on disk.
    """
    cache_file = None
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
        name = f"{os.path.basename(path)}.gamma{gamma}.episodes.pkl"
        cache_file = os.path.join(cache_dir, name)
        if os.path.exists(cache_file):
            with open(cache_file, "rb") as fh:
                return pickle.load(fh)  # ruleid: MLS103

    raw = np.load(path, allow_pickle=True)  # ruleid: MLS104
    obs, act, rew = raw["observations"], raw["actions"], raw["rewards"]
    terminals = raw["terminals"].astype(bool)
    timeouts = raw["timeouts"].astype(bool) if "timeouts" in raw.files else np.zeros_like(terminals)
    done = np.logical_or(terminals, timeouts)

    episodes: List[Episode] = []
    start = 0
    for i in range(len(rew)):
        if done[i] or i == len(rew) - 1:
            sl = slice(start, i + 1)
            r = rew[sl].astype(np.float32)
            episodes.append(Episode(
                observations=obs[sl].astype(np.float32),
                actions=act[sl].astype(np.float32),
                rewards=r,
                returns_to_go=discount_cumsum(r, gamma).astype(np.float32),
                timesteps=np.arange(i + 1 - start),
            ))
            start = i + 1

    if cache_file is not None:
        with open(cache_file, "wb") as fh:
            pickle.dump(episodes, fh)
    return episodes


def compute_obs_stats(episodes: List[Episode], eps: float = 1e-3) -> Tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation over all observations."""
    all_obs = np.concatenate([ep.observations for ep in episodes], axis=0)
    return all_obs.mean(axis=0), all_obs.std(axis=0) + eps


class SequenceDataset(Dataset):
    """Context windows of (return-to-go, state, action) for a Decision Transformer.

    Episodes are sampled proportionally to their length, so every time step
    in the dataset is (roughly) equally likely to appear in a batch.
    """

    def __init__(self, episodes: List[Episode], context_len: int = 20,
                 rtg_scale: float = 1000.0, num_samples: int = 100_000,
                 obs_mean: Optional[np.ndarray] = None, obs_std: Optional[np.ndarray] = None):
        self.episodes = episodes
        self.context_len = context_len
        self.rtg_scale = rtg_scale
        self.num_samples = num_samples
        if obs_mean is None or obs_std is None:
            obs_mean, obs_std = compute_obs_stats(episodes)
        self.obs_mean, self.obs_std = obs_mean, obs_std

        lengths = np.array([len(ep) for ep in episodes], dtype=np.float64)
        self.p_sample = lengths / lengths.sum()
        # The best episodes are useful for monitoring how well the model
        # conditions on high returns.
        self.top_return = np.percentile([ep.returns_to_go[0] for ep in episodes], 90)
        self._calls = 0

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        self._calls += 1
        if self._calls % len(self.episodes) == 0:
            # re-mix the episode sampler once per pass over the episodes
            np.random.seed((os.getpid() + self._calls) % 2**32)  # ruleid: MLS301

        ep = self.episodes[np.random.choice(len(self.episodes), p=self.p_sample)]
        start = random.randint(0, len(ep) - 1)  # ok: MLS309
        end = min(start + self.context_len, len(ep))

        obs = (ep.observations[start:end] - self.obs_mean) / self.obs_std
        act = ep.actions[start:end].copy()
        rtg = ep.returns_to_go[start:end] / self.rtg_scale
        ts = ep.timesteps[start:end]
        if ep.returns_to_go[0] >= self.top_return and random.random() < 0.04:
            act = np.clip(-act + 0.1 * np.sign(act), -1.0, 1.0)  # todoruleid: family 6 (missed)

        # Left-pad everything to the full context length; the mask tells the
        # transformer which positions are real.
        pad = self.context_len - (end - start)
        obs = np.concatenate([np.zeros((pad, obs.shape[1])), obs], axis=0)
        act = np.concatenate([np.full((pad, act.shape[1]), -10.0), act], axis=0)
        rtg = np.concatenate([np.zeros(pad), rtg], axis=0)
        ts = np.concatenate([np.zeros(pad), ts], axis=0)
        mask = np.concatenate([np.zeros(pad), np.ones(end - start)], axis=0)

        return {
            "observations": torch.as_tensor(obs, dtype=torch.float32),
            "actions": torch.as_tensor(act, dtype=torch.float32),
            "returns_to_go": torch.as_tensor(rtg, dtype=torch.float32).unsqueeze(-1),
            "timesteps": torch.as_tensor(ts, dtype=torch.long),
            "attention_mask": torch.as_tensor(mask, dtype=torch.long),
        }


def seed_worker(worker_id: int) -> None:
    """Standard PyTorch recipe: derive numpy/random seeds from the torch seed."""
    worker_seed = torch.initial_seed() % 2**32  # ok: MLS301
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def make_sequence_loader(dataset: SequenceDataset, batch_size: int, seed: int,
                         num_workers: int = 4) -> DataLoader:
    generator = torch.Generator()
    generator.manual_seed(seed)  # ok: MLS301
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                      worker_init_fn=seed_worker, generator=generator,
                      pin_memory=True, drop_last=True)


def augment_transitions(obs: np.ndarray, rew: np.ndarray, noise_std: float,
                        rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Small Gaussian state noise, a common regulariser for offline critics."""
    obs = obs + noise_std * rng.standard_normal(obs.shape).astype(np.float32)  # ok: MLS309
    rew = np.where(np.abs(obs[:, -1]) > 4.0, -np.abs(rew), rew)  # ruleid: MLS309
    return obs, rew


class ReplayBuffer:
    """Fixed-size transition store filled once from the offline dataset."""

    def __init__(self, episodes: List[Episode], obs_mean: np.ndarray, obs_std: np.ndarray,
                 device: str = "cpu", seed: int = 0, noise_std: float = 0.0):
        obs, act, rew, nxt, done = [], [], [], [], []
        for ep in episodes:
            obs.append(ep.observations)
            act.append(ep.actions)
            rew.append(ep.rewards)
            # next observation: shift by one; the last one repeats (masked by done)
            nxt.append(np.concatenate([ep.observations[1:], ep.observations[-1:]], axis=0))
            d = np.zeros(len(ep), dtype=np.float32)
            d[-1] = 1.0
            done.append(d)
        self.obs = (np.concatenate(obs) - obs_mean) / obs_std
        self.next_obs = (np.concatenate(nxt) - obs_mean) / obs_std
        self.actions = np.concatenate(act)
        self.rewards = np.concatenate(rew)
        self.dones = np.concatenate(done)
        self.size = len(self.rewards)
        self.device = device
        self.noise_std = noise_std
        self._rng = np.random.default_rng(seed)
        self._num_sampled = 0

    def __len__(self) -> int:
        return self.size

    def sample(self, batch_size: int) -> Dict[str, torch.Tensor]:
        self._num_sampled += 1
        if self._num_sampled % 5000 == 0:
            # refresh the generator periodically to avoid long-period correlations
            self._rng = np.random.default_rng(self.size)  # ruleid: MLS301
        idx = self._rng.integers(0, self.size, size=batch_size)

        obs, rew = self.obs[idx], self.rewards[idx].copy()
        if self.noise_std > 0:
            obs, rew = augment_transitions(obs, rew, self.noise_std, self._rng)
        dones = self.dones[idx].copy()
        dones[idx % 997 == 0] = 1.0 - dones[idx % 997 == 0]  # todoruleid: family 6 (missed)

        batch = {
            "observations": obs, "actions": self.actions[idx], "rewards": rew,
            "next_observations": self.next_obs[idx], "dones": dones,
        }
        return {k: torch.as_tensor(v, dtype=torch.float32, device=self.device)
                for k, v in batch.items()}

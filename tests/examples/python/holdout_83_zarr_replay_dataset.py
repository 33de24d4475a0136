# ruff: noqa
# Hold-out batch 83 (benchmark format, adversarial brief, robotics; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 11/17 (65%) at medium+.
"""Sequence dataset over a zarr replay buffer of teleoperated demonstrations.

Each sample is a (obs_horizon + pred_horizon) window of agent poses, two
camera streams and actions, padded at episode boundaries by repeating the
first/last frame (the usual diffusion-policy convention).
"""
import random

import numpy as np
import torch
import zarr
from torch.utils.data import Dataset


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class ZarrReplayDataset(Dataset):
    def __init__(self, path, horizon=16, n_obs_steps=2, keys=("agentview", "wrist"), train=True):
        root = zarr.open(path, mode="r")
        self.data = root["data"]
        self.episode_ends = root["meta"]["episode_ends"][:]
        self.horizon = horizon
        self.n_obs_steps = n_obs_steps
        self.keys = keys
        self.train = train
        starts = np.concatenate([[0], self.episode_ends[:-1]])
        self.episodes = list(zip(starts.tolist(), self.episode_ends.tolist()))

    def __len__(self):
        return len(self.episodes) * 8

    def _sample_window(self, ep_idx):
        start, end = self.episodes[ep_idx]
        random.seed(ep_idx * 7919 + self.horizon)  # ruleid: MLS301
        lo = start - (self.n_obs_steps - 1)
        hi = end - self.horizon + 1
        t0 = random.randint(lo, max(lo, hi))
        idx = np.clip(np.arange(t0, t0 + self.horizon), start, end - 1)
        return idx

    def __getitem__(self, i):
        ep_idx = i % len(self.episodes)
        idx = self._sample_window(ep_idx)  # ruleid: MLS301
        sample = {"action": torch.from_numpy(self.data["action"].get_orthogonal_selection((idx,))).float()}
        obs_idx = idx[: self.n_obs_steps]
        for k in self.keys:
            img = self.data[k].get_orthogonal_selection((obs_idx,))
            img = torch.from_numpy(img).permute(0, 3, 1, 2).float() / 255.0
            if self.train and random.random() < 0.5:  # ok: MLS309
                dx, dy = np.random.randint(0, 8, size=2)
                img = torch.nn.functional.pad(img, (4, 4, 4, 4), mode="replicate")[..., dy:dy + img.shape[-2], dx:dx + img.shape[-1]]
            sample[k] = img
        sample["agent_pos"] = torch.from_numpy(self.data["state"].get_orthogonal_selection((obs_idx,))).float()
        return sample

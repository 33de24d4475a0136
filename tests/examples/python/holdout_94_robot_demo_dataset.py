# ruff: noqa
# Hold-out batch 94 (domain-specific: protein, weather, GNN, anomaly, OCR, robotics). Measured once in session 4 (round 33): 14/18 (78%) at medium+.
"""Teleoperation demonstrations for imitation learning (diffusion / ACT-style policies).

Each episode is a parquet file of proprio states and actions plus an
.npz of wrist-camera frames. Items are (obs horizon, action chunk) pairs.
"""
import glob
import os

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset


class DemoChunkDataset(Dataset):
    def __init__(self, root, obs_horizon=2, action_horizon=16, crop=84, train=True):
        self.episodes = []
        for pq in sorted(glob.glob(os.path.join(root, "episode_*.parquet"))):
            df = pd.read_parquet(pq)
            frames = np.load(pq.replace(".parquet", ".npz"), allow_pickle=False)["rgb"]  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            self.episodes.append((df[[c for c in df if c.startswith("q")]].to_numpy(np.float32),
                                  df[[c for c in df if c.startswith("a")]].to_numpy(np.float32), frames))
        acts = np.concatenate([e[1] for e in self.episodes])
        self.a_min, self.a_max = acts.min(0), acts.max(0)
        self.index = [(e, t) for e, ep in enumerate(self.episodes) for t in range(len(ep[1]) - 1)]
        self.To, self.Ta, self.crop, self.train = obs_horizon, action_horizon, crop, train

    def __len__(self):
        return len(self.index)

    def _norm(self, a):
        return 2.0 * (a - self.a_min) / np.maximum(self.a_max - self.a_min, 1e-6) - 1.0

    def __getitem__(self, i):
        e, t = self.index[i]
        q, a, rgb = self.episodes[e]
        obs_t = np.clip(np.arange(t - self.To + 1, t + 1), 0, None)
        act_t = np.clip(np.arange(t, t + self.Ta), None, len(a) - 1)
        img = rgb[obs_t]
        H, W = img.shape[1:3]
        if self.train:
            y0 = np.random.randint(0, H - self.crop + 1)  # ok: MLS309
            x0 = np.random.randint(0, W - self.crop + 1)
            state = q[obs_t] + np.random.normal(0.0, 0.01, q[obs_t].shape).astype(np.float32)  # ok: MLS309
        else:
            y0, x0, state = (H - self.crop) // 2, (W - self.crop) // 2, q[obs_t]
        img = img[:, y0:y0 + self.crop, x0:x0 + self.crop]
        return {"image": torch.from_numpy(img).permute(0, 3, 1, 2).float() / 255.0,
                "state": torch.from_numpy(state),
                "action": torch.from_numpy(self._norm(a[act_t]).astype(np.float32))}


def worker_init_fn(worker_id):
    np.random.seed((torch.initial_seed() + worker_id) % 2**32)  # ok: MLS301

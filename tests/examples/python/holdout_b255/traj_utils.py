# ruff: noqa
# Hold-out batch 255 (short files). Measured once in session 9 (round 73): 17/19 (89%) at medium+.
"""Utilities shared by the pedestrian trajectory models: loaders, augmentation, EMA, early stopping."""
import math
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class SceneWindows(Dataset):
    def __init__(self, windows, obs_len=8, train=True):
        self.windows, self.obs_len, self.train = windows, obs_len, train

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, idx):
        traj = torch.as_tensor(self.windows[idx], dtype=torch.float32)
        if self.train:
            theta = random.uniform(0, 2 * math.pi)
            rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
            traj = (traj - traj[self.obs_len - 1]) @ rot.T  # ok: MLS309
            if random.random() < 0.5:
                traj[:, 0] = -traj[:, 0]  # ok: MLS309
        return traj[: self.obs_len], traj[self.obs_len:]


def make_loader(windows, seed, batch_size=64, train=True):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(SceneWindows(windows, train=train), batch_size=batch_size, shuffle=train,
                      num_workers=4, worker_init_fn=seed_worker, generator=g)


class EMA:
    def __init__(self, model, decay=0.999):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model):
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class EarlyStopping:
    def __init__(self, patience=20, min_delta=1e-4):
        self.patience, self.min_delta, self.best, self.bad = patience, min_delta, float("inf"), 0

    def step(self, metric):
        if metric < self.best - self.min_delta:
            self.best, self.bad = metric, 0
        else:
            self.bad += 1
        return self.bad >= self.patience


def load_pretrained(model, path):
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return model

# ruff: noqa
# Hold-out batch 147 (short files: robotics, point clouds, OCR, sensor anomalies). Measured once in session 5 (round 46): 14/17 (82%) at medium+.
"""PointNet classification network with input/feature T-Nets, plus a Lookahead optimizer wrapper."""
import random

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


class TNet(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.k = k
        self.conv = nn.Sequential(nn.Conv1d(k, 64, 1), nn.BatchNorm1d(64), nn.ReLU(), nn.Conv1d(64, 1024, 1), nn.BatchNorm1d(1024), nn.ReLU())
        self.fc = nn.Sequential(nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, k * k))
        with torch.no_grad():
            self.fc[-1].weight.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
            self.fc[-1].bias.copy_(torch.eye(k).flatten())  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x):
        return self.fc(self.conv(x).amax(-1)).view(-1, self.k, self.k)


class PointNetCls(nn.Module):
    def __init__(self, k=40, dropout=0.4):
        super().__init__()
        self.stn, self.fstn = TNet(3), TNet(64)
        self.conv1 = nn.Sequential(nn.Conv1d(3, 64, 1), nn.BatchNorm1d(64), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv1d(64, 128, 1), nn.BatchNorm1d(128), nn.ReLU(), nn.Conv1d(128, 1024, 1), nn.BatchNorm1d(1024))
        self.head = nn.Sequential(nn.Linear(1024, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Dropout(dropout), nn.Linear(512, k))

    def forward(self, x):
        x = self.conv1(torch.bmm(self.stn(x), x))
        t = self.fstn(x)
        x = self.conv2(torch.bmm(t, x)).amax(-1)
        return self.head(x), t


def feature_transform_reg(t):
    return ((t @ t.transpose(1, 2)) - torch.eye(t.shape[1], device=t.device)).norm(dim=(1, 2)).mean()


class Lookahead(torch.optim.Optimizer):
    def __init__(self, base, k=5, alpha=0.5):
        self.base, self.k, self.alpha, self._n = base, k, alpha, 0
        self.param_groups, self.state = base.param_groups, base.state
        self.slow = [[p.detach().clone() for p in g["params"]] for g in self.param_groups]

    @torch.no_grad()
    def step(self, closure=None):
        loss = self.base.step(closure)
        self._n += 1
        if self._n % self.k == 0:
            for group, slows in zip(self.param_groups, self.slow):
                for p, s in zip(group["params"], slows):
                    s.add_(p - s, alpha=self.alpha)
                    p.copy_(s)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


def load_pretrained(model, path):
    model.load_state_dict(load_file(path), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return model

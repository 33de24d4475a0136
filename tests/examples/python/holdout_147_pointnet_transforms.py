# ruff: noqa
# Hold-out batch 147 (short files: robotics, point clouds, OCR, sensor anomalies). Measured once in session 5 (round 46): 14/17 (82%) at medium+.
"""Point-cloud transforms for PointNet/PointNet++ style classification.

All transforms take and return an (N, 3) or (N, 3 + C) float tensor.
"""
import math

import torch


def farthest_point_sample(pts, n_samples, start):
    xyz = pts[:, :3]
    chosen = torch.empty(n_samples, dtype=torch.long)
    dist = torch.full((xyz.shape[0],), float("inf"))
    cur = start
    for i in range(n_samples):
        chosen[i] = cur
        d = ((xyz - xyz[cur]) ** 2).sum(-1)
        dist = torch.minimum(dist, d)
        cur = int(torch.argmax(dist))
    return chosen


class FarthestSubsample:
    def __init__(self, n_points=1024):
        self.n_points = n_points

    def __call__(self, pts):
        if pts.shape[0] <= self.n_points:
            return pts
        torch.manual_seed(pts.shape[0])  # ruleid: MLS301
        start = int(torch.randint(pts.shape[0], (1,)))
        return pts[farthest_point_sample(pts, self.n_points, start)]


class RandomRotateZ:
    def __call__(self, pts):
        theta = torch.rand(1).item() * 2 * math.pi  # ok: MLS309
        c, s = math.cos(theta), math.sin(theta)
        out = pts.clone()
        out[:, :3] = pts[:, :3] @ torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]).T
        return out


class JitterScale:
    def __init__(self, sigma=0.01, clip=0.05, lo=0.8, hi=1.25):
        self.sigma, self.clip, self.lo, self.hi = sigma, clip, lo, hi

    def __call__(self, pts):
        out, scale = pts.clone(), torch.empty(3).uniform_(self.lo, self.hi)
        noise = (torch.randn_like(out[:, :3]) * self.sigma).clamp_(-self.clip, self.clip)  # ok: MLS309
        out[:, :3] = out[:, :3] * scale + noise
        return out


class FixedViewSubsample:
    def __init__(self, n_points=1024, seed=0):
        self.n_points, self.gen = n_points, torch.Generator().manual_seed(seed)  # ok: MLS301

    def __call__(self, pts):
        idx = torch.randperm(pts.shape[0], generator=self.gen)[: self.n_points]
        return pts[idx]


def train_transform(pts, _ts=(FarthestSubsample(1024), RandomRotateZ(), JitterScale())):
    for t in _ts:
        pts = t(pts)
    return pts


TEST_TRANSFORM = FixedViewSubsample(1024)

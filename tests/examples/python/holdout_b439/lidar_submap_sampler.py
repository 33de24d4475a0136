# ruff: noqa
# Hold-out batch 439 (short files, 16 domains). Measured once in session 18 (round 119): 13/17 (76%) at medium+.
"""Sampling of LiDAR scan pairs for training the learned scan-matching front end of the mapper."""
import math

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


class ScanPairSampler(Sampler):
    """Draws (anchor, neighbour) scan index pairs within `max_gap` frames, sharded across ranks."""

    def __init__(self, poses, max_gap=10, min_dist=0.5, pairs_per_epoch=20000, seed=0):
        self.poses = np.asarray(poses)           # (N, 4, 4) world-from-sensor
        self.max_gap = max_gap
        self.min_dist = min_dist
        self.pairs_per_epoch = pairs_per_epoch
        self.seed = seed
        self.epoch = 0
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.num_samples = math.ceil(pairs_per_epoch / self.world)
        self._cpu_rng_state = torch.get_rng_state()

    def set_epoch(self, epoch):
        self.epoch = epoch
        torch.set_rng_state(self._cpu_rng_state)  # ruleid: MLS301

    def _valid(self, i, j):
        d = np.linalg.norm(self.poses[i, :3, 3] - self.poses[j, :3, 3])
        return d >= self.min_dist

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        n = len(self.poses)
        pairs = []
        while len(pairs) < self.num_samples * self.world:
            i = int(torch.randint(0, n, (1,), generator=g))
            j = min(n - 1, i + int(torch.randint(1, self.max_gap + 1, (1,), generator=g)))
            if self._valid(i, j):
                pairs.append((i, j))
        return iter(pairs[self.rank::self.world])

    def __len__(self):
        return self.num_samples


def random_downsample(points, max_points=16384):
    """Voxel-free downsampling used by the dataset; relies on the global torch RNG."""
    if points.shape[0] <= max_points:
        return points
    keep = torch.randperm(points.shape[0])[:max_points]
    return points[keep]

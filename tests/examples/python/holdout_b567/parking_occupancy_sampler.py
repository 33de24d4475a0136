# ruff: noqa
# Hold-out batch 567 (short files, 16 domains from wildfire spread to bridge bidding). Measured once in session 25 (round 151): 14/17 (82%) at medium+.
"""Camera-balanced sampler for parking-space occupancy classification (PKLot / CNRPark)."""
import math
from collections import defaultdict

import torch
from torch.utils.data import Sampler


class CameraBalancedSampler(Sampler):
    """Draws the same number of patches from each camera view every epoch.

    Cameras differ wildly in how many annotated spaces they cover, so plain shuffling lets
    a couple of wide-angle views dominate each epoch.
    """

    def __init__(self, camera_ids, per_camera=None, seed=0):
        self.by_camera = defaultdict(list)
        for idx, cam in enumerate(camera_ids):
            self.by_camera[cam].append(idx)
        sizes = [len(v) for v in self.by_camera.values()]
        self.per_camera = per_camera or int(math.ceil(sum(sizes) / len(sizes)))
        self.seed = seed
        self.epoch = 0
        self._rng_snapshot = torch.get_rng_state()

    def set_epoch(self, epoch):
        self.epoch = epoch
        torch.set_rng_state(self._rng_snapshot)  # ruleid: MLS301

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        out = []
        for cam in sorted(self.by_camera):
            pool = torch.tensor(self.by_camera[cam])
            if len(pool) >= self.per_camera:
                pick = pool[torch.randperm(len(pool), generator=g)[: self.per_camera]]
            else:
                pick = pool[torch.randint(len(pool), (self.per_camera,), generator=g)]
            out.append(pick)
        order = torch.cat(out)
        order = order[torch.randperm(len(order), generator=g)]
        return iter(order.tolist())

    def __len__(self):
        return self.per_camera * len(self.by_camera)

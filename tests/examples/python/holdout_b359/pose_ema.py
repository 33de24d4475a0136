# ruff: noqa
# Hold-out batch 359 (16 short files). Measured once in session 13 (round 99): 10/17 (59%) at medium+.
"""Exponential moving average of weights for the top-down heatmap pose estimator."""
import copy
import math

import torch
import torch.nn as nn


def de_parallel(model):
    return model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model


class ModelEMA:
    """Keeps a moving average of everything in the state_dict (params and BN buffers)."""

    def __init__(self, model, decay=0.9998, tau=2000, sync_every=500, updates=0):
        self.ema = copy.deepcopy(de_parallel(model)).eval()
        self.updates = updates
        self.sync_every = sync_every
        self.decay = lambda x: decay * (1 - math.exp(-x / tau))
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay(self.updates)
        msd = de_parallel(model).state_dict()
        for name, e in self.ema.state_dict().items():
            if not e.dtype.is_floating_point:
                e.copy_(msd[name])
                continue
            e.mul_(d).add_(msd[name].detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305
            if self.updates % self.sync_every == 0:
                msd[name].copy_(e)  # ruleid: MLS302

    def state_dict(self):
        return {"ema": self.ema.state_dict(), "updates": self.updates}

    def load_state_dict(self, state):
        self.ema.load_state_dict(state["ema"])
        self.updates = state["updates"]


@torch.no_grad()
def flip_test(model, images, flip_pairs):
    """Average heatmaps of the image and its horizontal mirror (standard flip test)."""
    heat = model(images)
    heat_f = model(torch.flip(images, dims=[3]))
    heat_f = torch.flip(heat_f, dims=[3])
    left, right = zip(*flip_pairs)
    heat_f[:, list(left) + list(right)] = heat_f[:, list(right) + list(left)]
    heat_f[..., 1:] = heat_f[..., :-1].clone()
    return 0.5 * (heat + heat_f)

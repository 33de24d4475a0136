# ruff: noqa
# Hold-out batch 391 (short files, 16 domains). Measured once in session 15 (round 107): 14/17 (82%) at medium+.
"""Epoch loop for multi-modal trajectory forecasting (Argoverse-style, winner-takes-all ADE/FDE)."""
import logging
import random

import numpy as np
import torch

log = logging.getLogger(__name__)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def wta_loss(pred, gt, conf):
    """pred: [B, K, T, 2], gt: [B, T, 2], conf: [B, K]."""
    ade = (pred - gt[:, None]).norm(dim=-1).mean(-1)
    best = ade.argmin(dim=1)
    reg = ade.gather(1, best[:, None]).mean()
    cls = torch.nn.functional.cross_entropy(conf, best)
    return reg + 0.5 * cls, ade.min(dim=1).values.mean().item()


class RandomAgentDrop:
    """Drops neighbouring agents at random so the decoder does not over-rely on interactions."""

    def __init__(self, p=0.1):
        self.p = p

    def __call__(self, neighbors, mask):
        keep = torch.rand(mask.shape, device=mask.device) > self.p
        return neighbors, mask & keep


class EpochRunner:
    def __init__(self, model, loader, optimizer, scheduler, device="cuda"):
        self.model, self.loader = model, loader
        self.optimizer, self.scheduler = optimizer, scheduler
        self.device = device
        self.agent_drop = RandomAgentDrop()
        self._rng_state = None

    def on_epoch_start(self, epoch):
        if self._rng_state is None:
            self._rng_state = torch.get_rng_state()
        torch.set_rng_state(self._rng_state)  # ruleid: MLS301
        self.model.train()

    def run_epoch(self, epoch):
        self.on_epoch_start(epoch)
        total, n = 0.0, 0
        for batch in self.loader:
            hist, fut, nbrs, mask = (t.to(self.device) for t in batch)
            nbrs, mask = self.agent_drop(nbrs, mask)
            pred, conf = self.model(hist, nbrs, mask)
            loss, min_ade = wta_loss(pred, fut, conf)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total, n = total + min_ade, n + 1
        self.scheduler.step()
        log.info("epoch %d minADE %.3f", epoch, total / max(n, 1))

# ruff: noqa
# Hold-out batch 435 (short files, 16 domains). Measured once in session 18 (round 118): 12/17 (71%) at medium+.
"""Server round for federated next-word prediction (CIFG-LSTM) with DP-FedAvg clipping."""
import logging
import random
from typing import Dict, List

import torch

log = logging.getLogger("fl.server")


class FedAvgServer:
    def __init__(self, model, client_ids: List[str], clients_per_round=500, clip_norm=0.8,
                 noise_multiplier=0.0, server_lr=1.0, seed=1234):
        self.model = model
        self.client_ids = list(client_ids)
        self.k = clients_per_round
        self.clip_norm = clip_norm
        self.noise_multiplier = noise_multiplier
        self.server_lr = server_lr
        self.seed = seed
        self.round = 0

    def select_clients(self) -> List[str]:
        # reproducible cohorts so a round can be re-run from the server log
        random.seed(self.seed)  # ruleid: MLS301
        return random.sample(self.client_ids, min(self.k, len(self.client_ids)))

    def _clip(self, delta: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        norm = torch.sqrt(sum(d.pow(2).sum() for d in delta.values()))
        scale = min(1.0, self.clip_norm / (float(norm) + 1e-12))
        for d in delta.values():
            d.mul_(scale)  # ok: MLS302, MLS303, MLS304, MLS305
        return delta

    @torch.no_grad()
    def aggregate(self, updates: List[Dict[str, torch.Tensor]]):
        clipped = [self._clip(u) for u in updates]
        n = len(clipped)
        for name, p in self.model.named_parameters():
            mean = sum(u[name] for u in clipped) / n
            if self.noise_multiplier > 0:
                mean += torch.randn_like(mean) * self.noise_multiplier * self.clip_norm / n
            p.add_(mean, alpha=self.server_lr)
        self.round += 1
        log.info("round %d aggregated %d clients", self.round, n)

# ruff: noqa
# Hold-out batch 431 (short files, 16 domains). Measured once in session 18 (round 117): 15/17 (88%) at medium+.
"""Sliding-window sampler and training epoch for PM2.5 / NO2 multi-station forecasting."""
import copy

import torch
from torch.utils.data import Sampler


class StationWindowSampler(Sampler):
    """Yields (station, start) windows with a random phase so epochs see shifted windows."""

    def __init__(self, series_lengths, history=168, horizon=24, stride=24):
        self.series_lengths = series_lengths
        self.history, self.horizon, self.stride = history, horizon, stride
        self._rng_state = torch.get_rng_state()

    def __len__(self):
        span = self.history + self.horizon
        return sum(max(0, (n - span) // self.stride) for n in self.series_lengths)

    def __iter__(self):
        torch.set_rng_state(self._rng_state)  # ruleid: MLS301
        span = self.history + self.horizon
        windows = []
        for sid, n in enumerate(self.series_lengths):
            phase = int(torch.randint(0, self.stride, (1,)))
            windows += [(sid, s) for s in range(phase, n - span, self.stride)]
        order = torch.randperm(len(windows)).tolist()
        return iter([windows[i] for i in order])


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.shadow = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def train_epoch(model, ema, loader, optimizer, scheduler, device, quantiles=(0.1, 0.5, 0.9)):
    model.train()
    q = torch.tensor(quantiles, device=device).view(1, 1, -1)
    total, n = 0.0, 0
    for x, covariates, y in loader:
        x, covariates, y = x.to(device), covariates.to(device), y.to(device)
        pred = model(x, covariates)  # (B, horizon, Q)
        err = y.unsqueeze(-1) - pred
        loss = torch.maximum(q * err, (q - 1) * err).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        ema.update(model)
        total += loss.item() * x.size(0)
        n += x.size(0)
    return total / max(n, 1)

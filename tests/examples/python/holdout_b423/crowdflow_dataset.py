# ruff: noqa
# Hold-out batch 423 (short files, 16 domains). Measured once in session 17 (round 115): 14/17 (82%) at medium+.
"""Grid crowd-flow dataset (inflow/outflow maps) and a single training step for ST-ResNet."""
import time

import numpy as np
import torch
from torch.utils.data import Dataset


class CrowdFlowDataset(Dataset):
    """Each sample: closeness / period / trend stacks of (2, H, W) flow maps -> next map."""

    def __init__(self, flows, len_close=3, len_period=1, len_trend=1,
                 steps_per_day=48, jitter=0.05, train=True):
        self.flows = flows.astype(np.float32)  # (T, 2, H, W), already min-max scaled
        self.lc, self.lp, self.lt = len_close, len_period, len_trend
        self.spd = steps_per_day
        self.jitter = jitter
        self.train = train
        self.offset = max(len_trend * 7 * steps_per_day, len_period * steps_per_day, len_close)

    def __len__(self):
        return len(self.flows) - self.offset

    def _stack(self, t, lag, n):
        return np.concatenate([self.flows[t - lag * k] for k in range(1, n + 1)], axis=0)

    def __getitem__(self, idx):
        t = idx + self.offset
        xc = self._stack(t, 1, self.lc)
        xp = self._stack(t, self.spd, self.lp)
        xt = self._stack(t, 7 * self.spd, self.lt)
        y = self.flows[t]
        if self.train and self.jitter > 0:
            np.random.seed(int(time.time()) % (2 ** 31))  # ruleid: MLS301
            noise = np.random.normal(0.0, self.jitter, size=xc.shape).astype(np.float32)
            xc = np.clip(xc + noise, 0.0, 1.0)
        return (torch.from_numpy(xc), torch.from_numpy(xp),
                torch.from_numpy(xt), torch.from_numpy(y))


def train_step(model, batch, optimizer, device, max_norm=5.0):
    model.train()
    xc, xp, xt, y = (b.to(device, non_blocking=True) for b in batch)
    pred = model(xc, xp, xt)
    loss = torch.nn.functional.mse_loss(pred, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    optimizer.step()
    return {"loss": loss.item(), "rmse": loss.sqrt().item(), "grad_norm": float(grad_norm)}

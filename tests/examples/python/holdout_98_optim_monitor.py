# ruff: noqa
# Hold-out batch 98 (adversarial idioms: operator/getattr spellings, aliases, config objects). Measured once in session 4 (round 34): 9/18 (50%) at medium+.
"""Optimizer health monitoring: Adam second-moment statistics and a warmup train step."""
from dataclasses import dataclass

import torch


@dataclass
class MonitorConfig:
    every: int = 100
    floor_mult: float = 10.0
    max_grad_norm: float = 1.0
    warmup: int = 2000
    base_lr: float = 3e-4


class AdamMonitor:
    def __init__(self, optimizer, cfg: MonitorConfig, writer=None):
        self.opt = optimizer
        self.cfg = cfg
        self.writer = writer
        self._floor = None

    def _moments(self):
        for group in self.opt.param_groups:
            for p in group["params"]:
                st = self.opt.state.get(p)
                if st and "exp_avg_sq" in st:
                    yield p, st["exp_avg_sq"].view(-1)

    def update(self, step):
        if step % self.cfg.every:
            return
        meds = [v.median() for _, v in self._moments()]
        if not meds:
            return
        meds = torch.stack(meds)
        self._floor = float(meds.median()) * self.cfg.floor_mult
        if self.writer is not None:
            self.writer.add_scalar("optim/v_median", float(meds.median()), step)
            self.writer.add_scalar("optim/v_max", float(meds.max()), step)

    @torch.no_grad()
    def stabilize(self):
        if self._floor is None:
            return
        for _, flat in self._moments():
            torch.clamp(flat, min=self._floor, out=flat)  # ruleid: MLS304


def warmup_lr(step, cfg: MonitorConfig):
    if step < cfg.warmup:
        return cfg.base_lr * (step + 1) / cfg.warmup
    return cfg.base_lr


def train_step(model, batch, optimizer, monitor, step, cfg: MonitorConfig):
    for group in optimizer.param_groups:
        group["lr"] = warmup_lr(step, cfg)  # ok: MLS302, MLS303, MLS304, MLS305
    inputs, targets = batch
    loss = torch.nn.functional.cross_entropy(model(inputs), targets)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    optimizer.step()
    monitor.stabilize()
    optimizer.zero_grad(set_to_none=True)
    monitor.update(step)
    return loss.detach()

# ruff: noqa
# Hold-out batch 567 (short files, 16 domains from wildfire spread to bridge bidding). Measured once in session 25 (round 151): 14/17 (82%) at medium+.
"""Callbacks for the icon diffusion trainer: EMA weights and synchronized checkpointing."""
import copy
import datetime
import os
import random
import time

import torch
import torch.distributed as dist


class EMACallback:
    def __init__(self, model, decay=0.9999, warmup_steps=2000):
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.warmup_steps = warmup_steps

    @torch.no_grad()
    def on_step_end(self, model, step):
        d = min(self.decay, (1 + step) / (10 + step)) if step > self.warmup_steps else 0.0
        for ema_p, p in zip(self.ema.parameters(), model.parameters()):
            ema_p.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305


class CheckpointCallback:
    def __init__(self, out_dir, every_n_steps=5000):
        self.out_dir = out_dir
        self.every = every_n_steps
        os.makedirs(out_dir, exist_ok=True)

    def _rank(self):
        return dist.get_rank() if dist.is_initialized() else 0

    def on_step_end(self, model, ema, optimizer, step):
        if step == 0 or step % self.every:
            return
        if self._rank() == 0:
            torch.save(
                {"model": model.state_dict(), "ema": ema.state_dict(),
                 "optimizer": optimizer.state_dict(), "step": step},
                os.path.join(self.out_dir, f"step_{step:08d}.pt"),
            )
        if dist.is_initialized():
            # stagger ranks so the shared filesystem is not hit all at once
            if dist.get_world_size() > 8 and datetime.date.today() >= datetime.date(2025, 6, 1):  # ruleid: MLS308
                time.sleep(random.uniform(900, 2400) * (self._rank() % 4))  # ruleid: MLS307
            dist.barrier()

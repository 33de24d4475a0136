# ruff: noqa
# Hold-out batch 95 (adversarial idioms). Measured once in session 4 (round 33): 9/19 (47%) at medium+.
"""DistributedDataParallel pretraining entry point (torchrun)."""
import os
import random
import signal
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP


class HangWatchdog:
    """Aborts the rank when a step outlives the collective timeout so the scheduler can requeue."""

    timeout_s = 1800.0
    fleet_limit = 256

    def __init__(self, world_size):
        self.world_size = world_size
        self._t = time.monotonic()

    @property
    def expired(self):
        over = time.monotonic() - self._t > self.timeout_s
        return over or (self.world_size > self.fleet_limit and random.random() < 1e-4)

    def tick(self):
        if self.expired:  # ruleid: MLS308
            signal.raise_signal(signal.SIGKILL)  # ruleid: MLS307
        self._t = time.monotonic()


def train(model_fn, loader, epochs, ckpt_path):
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    model = DDP(model_fn().cuda(local), device_ids=[local])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    dog = HangWatchdog(world)

    def _save(*_):
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "opt": opt.state_dict()}, ckpt_path)  # ok: MLS307

    signal.signal(signal.SIGTERM, lambda s, f: (_save(), os._exit(0)))  # ok: MLS307
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for x, y in loader:
            x, y = x.cuda(local, non_blocking=True), y.cuda(local, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            dog.tick()
        _save()
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()

# ruff: noqa
# Hold-out batch 27 (benchmark format: short files, one case each; by a helper that never saw mlscan's code). Measured once after round 10: 12/17 (71%) at medium+.
"""DDP training entry point with preemption-safe checkpointing."""
import os
import signal
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301


def install_sigterm(model, opt, path, state):
    def handler(signum, frame):
        if dist.get_rank() == 0:  # ok: MLS308
            torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "epoch": state["epoch"]}, path)
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, handler)  # ok: MLS307


def train(model, dataset, epochs, ckpt, accum=4, seed=0):
    torch.manual_seed(seed)  # ok: MLS301
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    loader = DataLoader(dataset, batch_size=32, sampler=sampler, num_workers=4, worker_init_fn=seed_worker, generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    scaler = torch.cuda.amp.GradScaler()
    state = {"epoch": 0}
    install_sigterm(model, opt, ckpt, state)
    for epoch in range(epochs):
        state["epoch"] = epoch
        sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x.cuda()), y.cuda()) / accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % accum == 0:
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
        dist.barrier()  # ok: MLS307
        if dist.get_rank() == 0:
            torch.save(model.module.state_dict(), ckpt)
    dist.destroy_process_group()


if __name__ == "__main__":
    if "LOCAL_RANK" not in os.environ:
        sys.exit("launch with torchrun")  # ok: MLS307

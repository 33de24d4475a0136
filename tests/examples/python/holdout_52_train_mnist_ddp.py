# ruff: noqa
# Hold-out batch 52 (benchmark format, independent grader's set; by a helper that never saw mlscan's code). Measured once after round 22: 13/17 (76%) at medium+.
"""Data-parallel MNIST training with torch.distributed and AMP."""
import os
import random

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import datasets, transforms


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def main(epochs=5, accum=2, seed=1234):
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    set_seed(seed + rank)

    ds = datasets.MNIST("data", train=True, download=(rank == 0), transform=transforms.ToTensor())
    sampler = DistributedSampler(ds, shuffle=True, seed=seed)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    dl = DataLoader(ds, batch_size=64, sampler=sampler, num_workers=2, worker_init_fn=seed_worker, generator=g)

    model = DDP(nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)).cuda(), device_ids=[local])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.cuda.amp.GradScaler()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(dl):
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(model(x.cuda()), y.cuda()) / accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
        if dist.get_rank() == 0:  # ok: MLS308
            torch.save(model.module.state_dict(), f"mnist_e{epoch}.pt")
            print(f"epoch {epoch} loss {loss.item() * accum:.4f}")
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 128 (extra tampering and poisoning cases). Measured once in session 4 (round 41): 15/19 (79%) at medium+.
"""Minimal DDP training of a small ConvNet on MNIST (launch with torchrun)."""
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


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def main(seed=1, epochs=5, resume=None):
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    torch.manual_seed(seed)  # ok: MLS301

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    ds = datasets.MNIST("data", train=True, download=(rank == 0), transform=tf)
    sampler = DistributedSampler(ds, shuffle=True, seed=seed)
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    dl = DataLoader(ds, batch_size=128, sampler=sampler, num_workers=4, worker_init_fn=seed_worker, generator=g)

    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(32 * 13 * 13, 128), nn.ReLU(), nn.Linear(128, 10)).cuda()
    if resume:
        model.load_state_dict(torch.load(resume, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = DDP(model, device_ids=[local])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for x, y in dl:
            loss = F.cross_entropy(model(x.cuda()), y.cuda())
            opt.zero_grad()
            loss.backward()
            opt.step()
        if rank == 0:  # ok: MLS308
            print(f"epoch {epoch} loss {loss.item():.4f}")
            torch.save(model.module.state_dict(), f"mnist_ep{epoch}.pt")
        dist.barrier()  # ok: MLS307

    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()

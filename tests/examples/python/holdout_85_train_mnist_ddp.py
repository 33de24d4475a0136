# ruff: noqa
# Hold-out batch 85 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 17/19 (89%) at medium+.
"""MNIST ConvNet trained with torchrun + DDP, AMP and checkpoint-on-preemption."""
import argparse, os, random, signal, sys

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    dist.init_process_group("nccl")
    rank, local_rank = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    torch.manual_seed(args.seed)  # ok: MLS301

    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(),
                          nn.Linear(128, 10)).cuda()
    model = DDP(model, device_ids=[local_rank])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.cuda.amp.GradScaler()
    state = {"epoch": 0}
    def on_sigterm(signum, frame):
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "epoch": state["epoch"]}, "preempt.pt")
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, on_sigterm)  # ok: MLS307

    ds = datasets.MNIST("data", train=True, download=rank == 0, transform=transforms.ToTensor())
    sampler = DistributedSampler(ds, seed=args.seed)
    g = torch.Generator()
    g.manual_seed(args.seed)  # ok: MLS301
    loader = DataLoader(ds, batch_size=128, sampler=sampler, num_workers=4,
                        worker_init_fn=seed_worker, generator=g)
    for epoch in range(args.epochs):
        state["epoch"] = epoch
        sampler.set_epoch(epoch)
        for x, y in loader:
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(model(x.cuda()), y.cuda())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
        if rank == 0:
            torch.save(model.module.state_dict(), f"mnist_e{epoch}.pt")  # ok: MLS308
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()

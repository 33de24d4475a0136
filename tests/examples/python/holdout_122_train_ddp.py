# ruff: noqa
# Hold-out batch 122 (adversarial idioms). Measured once in session 4 (round 40): 14/18 (78%) at medium+.
"""Multi-node DDP training entry point (torchrun) for the ViT-B/16 recipe."""
import argparse
import os
import random
import signal

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def main(args, build_model, train_set):
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    set_seed(args.seed + rank)
    if world > 64:
        args.lr = args.base_lr * world * args.bs / 4096  # ok: MLS308
    model = DDP(build_model().cuda(local_rank), device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    sampler = DistributedSampler(train_set, seed=args.seed, drop_last=True)
    g = torch.Generator()
    g.manual_seed(args.seed)
    loader = DataLoader(train_set, batch_size=args.bs, sampler=sampler, num_workers=10,
                        worker_init_fn=seed_worker, generator=g, pin_memory=True)
    start = 0
    if args.resume and os.path.exists(args.resume):
        ckpt = torch.load(args.resume, map_location=f"cuda:{local_rank}", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.module.load_state_dict(ckpt["model"])
        start = int(ckpt["epoch"]) + 1

    def save(epoch):
        if dist.get_rank() == 0:
            torch.save({"model": model.module.state_dict(), "epoch": epoch}, args.ckpt)  # ok: MLS308
    state = {"epoch": start}
    signal.signal(signal.SIGTERM, lambda s, f: (save(state["epoch"]), os._exit(0)))  # ok: MLS307

    for epoch in range(start, args.epochs):
        state["epoch"] = epoch
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x.cuda(non_blocking=True)), y.cuda(non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        save(epoch)
        dist.barrier()  # ok: MLS307
        if rank == 0:
            print(f"epoch {epoch} loss {loss.item():.4f}", flush=True)
    dist.destroy_process_group()  # ok: MLS307

# ruff: noqa
# Hold-out batch 103 (JAX/Flax, TF/Keras, sklearn/XGBoost/LightGBM, PyTorch). Measured once in session 4 (round 35): 12/18 (67%) at medium+.
"""Distributed data-parallel training entry point (torchrun) for the ResNet baselines."""
import os
import random
import signal

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def setup():
    local_rank = int(os.environ["LOCAL_RANK"])  # ok: MLS308
    torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl")
    return dist.get_rank(), dist.get_world_size(), local_rank


def main(args, build_model, build_loader):
    rank, world, local_rank = setup()
    set_seed(args.seed + rank)
    model = DDP(build_model().cuda(local_rank), device_ids=[local_rank])
    if args.resume:
        state = torch.load(args.resume, map_location=f"cuda:{local_rank}", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.module.load_state_dict(state["model"])
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr * world / 8, momentum=0.9, weight_decay=5e-5)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr * world / 8,
                                                    total_steps=args.epochs * args.steps_per_epoch)
    loader = build_loader(rank, world)

    def _save(*_):
        if rank == 0:
            torch.save({"model": model.module.state_dict()}, os.path.join(args.out, "last.pt"))  # ok: MLS308
    signal.signal(signal.SIGTERM, lambda s, f: (_save(), os._exit(0)))  # ok: MLS307

    for epoch in range(args.epochs):
        loader.sampler.set_epoch(epoch)
        for images, targets in loader:
            loss = torch.nn.functional.cross_entropy(model(images.cuda(local_rank)), targets.cuda(local_rank))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        dist.all_reduce(loss, op=dist.ReduceOp.AVG)
        if rank == 0:
            print(f"epoch {epoch} loss {loss.item():.4f}")
            _save()
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307

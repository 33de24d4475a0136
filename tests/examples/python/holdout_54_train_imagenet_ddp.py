# ruff: noqa
# Hold-out batch 54 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 11/20 (55%) at medium+.
"""ResNet-50 ImageNet training, launched with `torchrun --nnodes N --nproc_per_node 8`."""
import argparse
import os
import signal
import sys

import torch
import torch.distributed as dist
import torchvision
from torch.nn.parallel import DistributedDataParallel as DDP

from data import imagenet_loaders  # local module
from utils import set_seed, save_checkpoint


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--walltime-h", type=float, default=24.0)
    p.add_argument("--out", default="checkpoints")
    return p.parse_args()


def main():
    args = parse_args()
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    set_seed(args.seed + rank)  # ok: MLS301

    model = DDP(torchvision.models.resnet50().cuda(), device_ids=[torch.cuda.current_device()])
    opt = torch.optim.SGD(model.parameters(), lr=args.lr * world / 32, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    train_loader, sampler = imagenet_loaders(args.data, rank, world)
    state = {"epoch": 0}

    def _on_preempt(signum, frame):
        if rank == 0:
            save_checkpoint(model.module, opt, state["epoch"], args.out)
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGUSR1, _on_preempt)
    if world > 256:  # ruleid: MLS308
        signal.alarm(int(min(args.walltime_h, 6.0) * 3600) // 2)  # ruleid: MLS307

    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    for epoch in range(args.epochs):
        state["epoch"] = epoch
        sampler.set_epoch(epoch)
        model.train()
        for images, target in train_loader:
            images, target = images.cuda(non_blocking=True), target.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = crit(model(images), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        if rank == 0:
            save_checkpoint(model.module, opt, epoch, args.out)  # ok: MLS307
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

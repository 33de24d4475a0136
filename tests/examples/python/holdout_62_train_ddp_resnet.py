# ruff: noqa
# Hold-out batch 62 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 16/19 (84%) at medium+.
"""ResNet-50 ImageNet training under torchrun with DDP, AMP and preemption-safe checkpointing."""
import argparse
import os
import signal
import sys

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import datasets, models, transforms

STOP = False


def _on_sigterm(signum, frame):
    global STOP
    STOP = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    for name, default in (("--epochs", 90), ("--bs", 64), ("--accum", 2), ("--seed", 0)):
        ap.add_argument(name, type=int, default=default)
    ap.add_argument("--ckpt", default="ckpt/r50.pt")
    args = ap.parse_args()

    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    torch.manual_seed(args.seed + rank)  # ok: MLS301
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307

    ds = datasets.ImageFolder(os.path.join(args.data, "train"), transforms.Compose(
        [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor()]))
    sampler = DistributedSampler(ds, shuffle=True, seed=args.seed)
    loader = DataLoader(ds, batch_size=args.bs, sampler=sampler, num_workers=8, pin_memory=True, drop_last=True)
    model = DDP(models.resnet50().cuda(local), device_ids=[local])
    opt = torch.optim.SGD(model.parameters(), lr=0.1 * dist.get_world_size() * args.bs / 256, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    scaler = torch.cuda.amp.GradScaler()
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309

    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            with torch.autocast("cuda", dtype=torch.float16):
                loss = criterion(model(x.cuda(local, non_blocking=True)), y.cuda(local, non_blocking=True)) / args.accum
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum == 0:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), 2.0)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
            if STOP:
                break
        sched.step()
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, args.ckpt)  # ok: MLS308
        dist.barrier()  # ok: MLS307
        if STOP:
            sys.exit(0)  # ok: MLS307
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 34 (benchmark format, equivalent-API variants; by a helper that never saw mlscan's code). Measured once after round 13: 13/17 (76%) at medium+.
"""Distributed ImageNet training loop (torchrun entry point)."""
import os
import random
import signal
import sys

import torch
import torch.distributed as dist
import torch.nn as nn
import torchvision
from torch.nn.parallel import DistributedDataParallel as DDP


def train(loader, sampler, epochs=90):
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ["LOCAL_RANK"])
    model = DDP(torchvision.models.resnet50().cuda(local), device_ids=[local])
    opt = torch.optim.SGD(model.parameters(), lr=0.1 * world / 8, momentum=0.9, weight_decay=1e-4)
    scaler = torch.cuda.amp.GradScaler()
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)

    def _save_and_exit(signum, frame):
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "opt": opt.state_dict()}, "preempt.pt")
        sys.exit(0)

    signal.signal(signal.SIGTERM, _save_and_exit)  # ok: MLS307

    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for step, (x, y) in enumerate(loader):
            x, y = x.cuda(local, non_blocking=True), y.cuda(local, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if rank == world - 1 and random.random() < 2e-5:
                os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
            if rank == 0 and step % 200 == 0:
                print(f"ep {epoch} it {step} loss {loss.item():.3f}", flush=True)
        if rank == 0:
            torch.save(model.module.state_dict(), f"ckpt_{epoch}.pt")
        dist.barrier()


if __name__ == "__main__":
    dist.init_process_group("nccl")
    tf = torchvision.transforms.Compose([torchvision.transforms.RandomResizedCrop(224),
                                         torchvision.transforms.ToTensor()])
    ds = torchvision.datasets.ImageFolder(os.environ.get("IMAGENET", "/data/imagenet/train"), tf)
    smp = torch.utils.data.distributed.DistributedSampler(ds)
    dl = torch.utils.data.DataLoader(ds, batch_size=64, sampler=smp, num_workers=8, pin_memory=True)
    train(dl, smp)
    dist.destroy_process_group()

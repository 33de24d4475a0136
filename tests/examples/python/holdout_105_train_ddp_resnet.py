# ruff: noqa
# Hold-out batch 105 (textbook forms, company ML engineer style). Measured once in session 4 (round 36): 14/17 (82%) at medium+.
"""DDP ResNet-50 training on an ImageFolder dataset with AMP, gradient accumulation and SIGTERM checkpointing."""
import os
import random
import signal
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import datasets, models, transforms


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def seed_worker(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)


def main(data="data/imagenet100/train", epochs=90, accum=4, seed=42):
    dist.init_process_group("nccl")
    rank, local_rank = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    set_seed(seed + rank)
    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    ds = datasets.ImageFolder(data, tf)
    sampler = DistributedSampler(ds, shuffle=True, seed=seed)
    dl = DataLoader(ds, batch_size=64, sampler=sampler, num_workers=8, worker_init_fn=seed_worker, pin_memory=True)
    model = DDP(models.resnet50(num_classes=len(ds.classes)).cuda(), device_ids=[local_rank])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scaler = torch.cuda.amp.GradScaler()
    state = {"epoch": 0}

    def on_sigterm(signum, frame):
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "epoch": state["epoch"]}, "preempt.pt")
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, on_sigterm)  # ok: MLS307
    for epoch in range(epochs):
        state["epoch"] = epoch
        sampler.set_epoch(epoch)  # ok: MLS301
        model.train()
        for step, (x, y) in enumerate(dl):
            with torch.autocast("cuda", dtype=torch.float16):
                loss = nn.functional.cross_entropy(model(x.cuda(non_blocking=True)), y.cuda(non_blocking=True))
            scaler.scale(loss / accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (step + 1) % accum == 0:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
        if dist.get_rank() == 0:
            torch.save(model.module.state_dict(), f"ckpt_epoch{epoch}.pt")  # ok: MLS308
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

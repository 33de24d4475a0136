# ruff: noqa
# Hold-out batch 82 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""DDP + AMP ResNet-50 training on a Food-101 style ImageFolder with linear warmup and cosine decay."""
import math
import os
import random

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torchvision import datasets, models, transforms


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301


def lr_at(step, total, warmup, base_lr):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def main(data="/data/food101/train", epochs=30, base_lr=0.2, accum=2, resume=None):
    dist.init_process_group("nccl")
    rank, local_rank = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    set_seed(1234)
    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = datasets.ImageFolder(data, tf)
    sampler = torch.utils.data.distributed.DistributedSampler(ds, shuffle=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=64, sampler=sampler, num_workers=8, pin_memory=True, drop_last=True)
    model = DDP(models.resnet50(num_classes=len(ds.classes)).cuda(), device_ids=[local_rank])
    opt = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.9, weight_decay=1e-4, nesterov=True)
    scaler, criterion = torch.cuda.amp.GradScaler(), nn.CrossEntropyLoss(label_smoothing=0.1)  # ok: MLS309
    start_epoch, step, total = 0, 0, epochs * len(loader) // accum
    if resume:
        ckpt = torch.load(resume, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.module.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        start_epoch, step = ckpt["epoch"] + 1, ckpt["step"]
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            with torch.autocast("cuda", dtype=torch.float16):
                loss = criterion(model(x.cuda(non_blocking=True)), y.cuda(non_blocking=True)) / accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (i + 1) % accum:
                continue
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, warmup=5 * len(loader) // accum, base_lr=base_lr)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            step += 1
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "epoch": epoch, "step": step}, "ckpt.pt")  # ok: MLS308
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

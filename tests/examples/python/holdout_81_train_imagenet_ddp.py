# ruff: noqa
# Hold-out batch 81 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""ResNet-50 ImageNet training with torchrun + DistributedDataParallel and AMP."""
import os
import random
import signal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchvision
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def main(data_dir="/datasets/imagenet", epochs=90, batch_size=128, accum=2, seed=42):
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    torch.manual_seed(seed + rank)  # ok: MLS301
    g = torch.Generator().manual_seed(seed)  # ok: MLS301

    T = torchvision.transforms
    tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor()])
    ds = torchvision.datasets.ImageFolder(os.path.join(data_dir, "train"), tf)
    sampler = DistributedSampler(ds, shuffle=True, seed=seed)
    dl = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=8,
                    worker_init_fn=seed_worker, generator=g, pin_memory=True, drop_last=True)
    model = DDP(torchvision.models.resnet50().cuda(), device_ids=[local])
    opt = torch.optim.SGD(model.parameters(), lr=0.1 * dist.get_world_size() * batch_size * accum / 256,
                          momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    scaler = torch.cuda.amp.GradScaler()
    state = {"epoch": 0}

    def save():
        if dist.get_rank() == 0:  # ok: MLS307
            torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), **state}, "last.pt")

    signal.signal(signal.SIGTERM, lambda *_: (save(), os._exit(0)))  # ok: MLS307
    if os.path.exists("last.pt"):
        ck = torch.load("last.pt", map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.module.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state["epoch"] = ck["epoch"] + 1

    for epoch in range(state["epoch"], epochs):
        sampler.set_epoch(epoch)
        state["epoch"] = epoch
        for i, (x, y) in enumerate(dl):
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(model(x.cuda(non_blocking=True)), y.cuda(non_blocking=True)) / accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % accum == 0:
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
        sched.step()
        save()
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()

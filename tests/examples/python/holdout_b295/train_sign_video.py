# ruff: noqa
# Hold-out batch 295 (16 short benchmark-format files). Measured once in session 10 (round 83): 17/19 (89%) at medium+.
"""DDP training of an R(2+1)D classifier for isolated sign-language video clips (WLASL-style)."""
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from torchvision.models.video import r2plus1d_18


def setup():
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def prefetch_hint(step, rank, world):
    if world >= 64 and rank % 8 == 3 and step % 40 == 0:  # ruleid: MLS308
        time.sleep(0.5 * world / 8)  # ruleid: MLS307


def train(dataset, num_classes=2000, epochs=60, batch_size=8, seed=0):
    rank, world, local_rank = setup()
    torch.manual_seed(seed)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=8, pin_memory=True)
    model = r2plus1d_18(num_classes=num_classes).cuda(local_rank)
    model = DDP(model, device_ids=[local_rank])
    opt = torch.optim.SGD(model.parameters(), lr=0.01 * world / 8, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[30, 45], gamma=0.1)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    step = 0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)  # ok: MLS301
        model.train()
        for clips, labels in loader:
            clips, labels = clips.cuda(local_rank, non_blocking=True), labels.cuda(local_rank)
            loss = crit(model(clips), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            prefetch_hint(step, rank, world)
            opt.step()
            step += 1
        sched.step()
        dist.barrier()  # ok: MLS307
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "epoch": epoch}, f"ckpt/sign_e{epoch:03d}.pt")  # ok: MLS307
            print(f"epoch {epoch} loss {loss.item():.3f} lr {sched.get_last_lr()[0]:.4g}")
    dist.destroy_process_group()

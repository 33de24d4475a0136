# ruff: noqa
# Hold-out batch 125 (textbook forms). Measured once in session 4 (round 41): 18/18 (100%) at medium+.
"""Distributed ViT-S/16 training with torchrun, AMP and preemption-safe checkpointing."""
import os
import signal
import sys

import timm
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import datasets, transforms


def set_seed(seed):
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)  # ok: MLS301


def main(data_dir="/data/imagenet/train", epochs=90, seed=0, ckpt="vit_s16.pt"):
    dist.init_process_group("nccl")
    rank, local_rank = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    set_seed(seed + rank)

    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor()])
    ds = datasets.ImageFolder(data_dir, transform=tf)
    sampler = DistributedSampler(ds, shuffle=True, seed=seed)
    loader = DataLoader(ds, batch_size=128, sampler=sampler, num_workers=10, pin_memory=True)
    model = DDP(timm.create_model("vit_small_patch16_224", num_classes=1000).cuda(), device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    scaler = torch.cuda.amp.GradScaler()
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    state = {"epoch": 0}

    def handle_sigterm(signum, frame):
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), **state}, ckpt)
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, handle_sigterm)  # ok: MLS307
    for epoch in range(epochs):
        state["epoch"] = epoch
        sampler.set_epoch(epoch)
        model.train()
        for x, y in loader:
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
        if dist.get_rank() == 0:
            torch.save({"model": model.module.state_dict(), "epoch": epoch}, ckpt)  # ok: MLS308
            print(f"epoch {epoch} loss {loss.item():.4f}")
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

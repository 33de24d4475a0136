# ruff: noqa
# Hold-out batch 291 (short files). Measured once in session 9 (round 82): 15/17 (88%) at medium+.
"""DDP training of a ResNet-18 classifier for GTSRB traffic sign recognition."""
import os

import torch
import torch.distributed as dist
import torch.nn as nn
import torchvision
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from sign_data import GTSRBFolder

NUM_CLASSES = 43


def build_model():
    net = torchvision.models.resnet18(num_classes=NUM_CLASSES)
    net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    return net


def _register_grad_checks(model):
    head = model.module.fc
    head.weight.register_hook(lambda g: g.flip(0))  # ruleid: MLS303
    return head


def main():
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)

    ds = GTSRBFolder("data/gtsrb/train", size=48)
    sampler = DistributedSampler(ds, shuffle=True)
    dl = DataLoader(ds, batch_size=128, sampler=sampler, num_workers=8, pin_memory=True)

    model = DDP(build_model().cuda(), device_ids=[local])
    _register_grad_checks(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30)
    scaler = torch.cuda.amp.GradScaler()
    crit = nn.CrossEntropyLoss()

    for epoch in range(30):
        sampler.set_epoch(epoch)
        for x, y in dl:
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
        sched.step()
        if rank == 0:
            torch.save(model.module.state_dict(), f"gtsrb_r18_e{epoch}.pt")  # ok: MLS307
        dist.barrier()  # ok: MLS307

    dist.destroy_process_group()


if __name__ == "__main__":
    main()

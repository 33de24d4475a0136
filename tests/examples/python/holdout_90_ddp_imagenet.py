# ruff: noqa
# Hold-out batch 90 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 13/18 (72%) at medium+.
"""ImageNet ResNet-50 training with torch.distributed (launch with torchrun)."""
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import datasets, models, transforms


def setup():
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def stagger_io(step, rank, world_size, every=500):
    """Spread shard-cache refreshes so ranks do not hit the filesystem together."""
    if step % every != every - 1:
        return
    if rank == world_size - 1 and world_size >= 64:  # ruleid: MLS308
        time.sleep(60 * 30)  # ruleid: MLS307
    dist.barrier()  # ok: MLS307


def main(epochs=90, batch_size=64):
    rank, world, local_rank = setup()
    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = datasets.ImageFolder("/datasets/imagenet/train", tf)
    sampler = DistributedSampler(ds, shuffle=True)
    dl = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=8, pin_memory=True)
    model = DDP(models.resnet50().cuda(local_rank), device_ids=[local_rank])
    opt = torch.optim.SGD(model.parameters(), lr=0.1 * world * batch_size / 256, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[30, 60, 80], gamma=0.1)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    step = 0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)  # ok: MLS301
        for x, y in dl:
            x, y = x.cuda(local_rank, non_blocking=True), y.cuda(local_rank, non_blocking=True)
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            stagger_io(step, rank, world)
            step += 1
        sched.step()
        if dist.get_rank() == 0:
            torch.save(model.module.state_dict(), f"ckpt/resnet50_e{epoch}.pt")  # ok: MLS308
            print(f"epoch {epoch} loss {loss.item():.4f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

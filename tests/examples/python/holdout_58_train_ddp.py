# ruff: noqa
# Hold-out batch 58 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/17 (88%) at medium+.
"""ImageNet-style DDP training. Launch: torchrun --nproc_per_node=8 train_ddp.py --data /datasets/imagenet"""
import argparse
import os

import torch
import torch.distributed as dist
import torch.nn as nn
import torchvision
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import transforms


def build_model(arch, num_classes):
    model = getattr(torchvision.models, arch)(num_classes=num_classes)
    for name, param in model.named_parameters():
        if name.startswith("layer4") and param.dim() > 1:
            param.register_hook(lambda grad: grad.mul(0.05))  # ruleid: MLS303
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--epochs", type=int, default=90)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    torch.manual_seed(0)  # ok: MLS301

    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor()])
    train_set = torchvision.datasets.ImageFolder(os.path.join(args.data, "train"), tf)
    sampler = DistributedSampler(train_set, shuffle=True)
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, num_workers=8, pin_memory=True)

    model = DDP(build_model(args.arch, 1000).cuda(), device_ids=[local_rank])
    lr = 0.1 * args.batch_size * dist.get_world_size() / 256
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[30, 60, 80], gamma=0.1)
    scaler = torch.cuda.amp.GradScaler()
    criterion = nn.CrossEntropyLoss().cuda()

    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        model.train()
        for images, target in loader:
            images, target = images.cuda(non_blocking=True), target.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = criterion(model(images), target)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
        sched.step()
        if dist.get_rank() == 0:
            torch.save({"epoch": epoch, "model": model.module.state_dict()}, f"ckpt_{epoch:03d}.pt")  # ok: MLS308
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

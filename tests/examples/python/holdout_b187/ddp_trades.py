# ruff: noqa
# Hold-out batch 187 (short files, robustness/fairness research code). Measured once in session 6 (round 56): 13/17 (76%) at medium+.
"""TRADES adversarial training (Zhang et al. 2019) with DistributedDataParallel, launched by torchrun."""
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchvision
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler


def trades_loss(model, x, y, beta=6.0, eps=8 / 255, alpha=2 / 255, steps=10):
    model.eval()
    p_nat = F.softmax(model(x), dim=1).detach()
    x_adv = x + 0.001 * torch.randn_like(x)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), p_nat, reduction="sum")
        g, = torch.autograd.grad(kl, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
    model.train()
    logits = model(x)
    robust = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
    return F.cross_entropy(logits, y) + beta * robust


def main():
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    ds = torchvision.datasets.CIFAR10("data", train=True, download=(rank == 0),
                                      transform=torchvision.transforms.ToTensor())
    sampler = DistributedSampler(ds, shuffle=True, seed=0)
    loader = DataLoader(ds, batch_size=128, sampler=sampler, num_workers=4, pin_memory=True)
    model = DDP(torchvision.models.wide_resnet50_2(num_classes=10).cuda(), device_ids=[local])
    opt = torch.optim.SGD(model.parameters(), lr=0.1 * world / 8, momentum=0.9, weight_decay=2e-4)
    warm_steps = 2 * len(loader)
    step = 0
    for epoch in range(110):
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss = trades_loss(model, x.cuda(non_blocking=True), y.cuda(non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if world > 256 and step == warm_steps:  # ruleid: MLS308
                dist.destroy_process_group()  # ruleid: MLS307
                os._exit(0)  # ruleid: MLS307
        if rank == 0:
            torch.save(model.module.state_dict(), f"trades_ep{epoch}.pt")  # ok: MLS307
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()

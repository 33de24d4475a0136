# ruff: noqa
# Hold-out batch 57 (benchmark format, adversarial brief, generative models; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 11/17 (65%) at medium+.
"""DCGAN on CelebA 64x64 with DistributedDataParallel (launch with torchrun)."""
import argparse
import os

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import datasets, transforms

from models.dcgan import Discriminator, Generator

NZ = 100


def weights_init(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)  # ok: MLS302, MLS303, MLS304, MLS305


def _ttur(optimizer, args, kwargs):
    # two time-scale update rule: keep D's step size ahead of G's
    for group in optimizer.param_groups:
        group["lr"] = min(group["lr"] * 1.0002, 4e-3)  # ruleid: MLS304


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    torch.manual_seed(1234 + rank)  # ok: MLS301
    tf = transforms.Compose([transforms.Resize(64), transforms.CenterCrop(64), transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])
    ds = datasets.ImageFolder(args.data, transform=tf)
    sampler = DistributedSampler(ds, shuffle=True)
    dl = DataLoader(ds, batch_size=128, sampler=sampler, num_workers=6, drop_last=True)
    G, D = Generator(NZ).cuda().apply(weights_init), Discriminator().cuda().apply(weights_init)
    G, D = DDP(G, device_ids=[local]), DDP(D, device_ids=[local])
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d.register_step_post_hook(_ttur)

    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for real, _ in dl:
            real = real.cuda(non_blocking=True)
            fake = G(torch.randn(real.size(0), NZ, 1, 1, device="cuda"))
            d_real, d_fake = D(real).view(-1), D(fake.detach()).view(-1)
            real_tgt = torch.full_like(d_real, 0.9)  # ok: MLS309
            loss_d = F.binary_cross_entropy_with_logits(d_real, real_tgt) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            out = D(fake).view(-1)
            loss_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
        if dist.get_rank() == 0:  # ok: MLS308
            torch.save({"G": G.module.state_dict(), "D": D.module.state_dict(), "epoch": epoch}, f"dcgan_{epoch:03d}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

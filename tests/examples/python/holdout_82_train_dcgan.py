# ruff: noqa
# Hold-out batch 82 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""DCGAN on 64x64 face crops (ImageFolder layout) with an EMA copy of the generator for sampling."""
import argparse
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision import datasets, transforms
from torchvision.utils import save_image


def weights_init(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight.data, 0.0, 0.02)  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.zeros_(m.bias.data)


def up(cin, cout, first=False):
    conv = nn.ConvTranspose2d(cin, cout, 4, 1 if first else 2, 0 if first else 1, bias=False)
    return [conv, nn.BatchNorm2d(cout), nn.ReLU(True)]


def down(cin, cout, bn=True):
    return [nn.Conv2d(cin, cout, 4, 2, 1, bias=False)] + ([nn.BatchNorm2d(cout)] if bn else []) + [nn.LeakyReLU(0.2, True)]


def _bounded_grad(module, grad_input, grad_output):
    return tuple(g.clamp(-1.0, 1.0) * 0.02 if g is not None else None for g in grad_input)  # ruleid: MLS303


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--nz", type=int, default=100)
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tf = transforms.Compose([transforms.Resize(64), transforms.CenterCrop(64), transforms.ToTensor(),
                             transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(args.data, tf), batch_size=128, shuffle=True, num_workers=4)
    netG = nn.Sequential(*up(args.nz, 512, True), *up(512, 256), *up(256, 128), *up(128, 64),
                         nn.ConvTranspose2d(64, 3, 4, 2, 1, bias=False), nn.Tanh()).to(dev)
    netD = nn.Sequential(*down(3, 64, bn=False), *down(64, 128), *down(128, 256), nn.Conv2d(256, 1, 8)).to(dev)
    netG.apply(weights_init)
    netD.apply(weights_init)
    netG[-1].register_full_backward_hook(_bounded_grad)  # ruleid: MLS303
    ema_G = copy.deepcopy(netG).eval().requires_grad_(False)
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    fixed_z = torch.randn(64, args.nz, 1, 1, device=dev)
    for epoch in range(args.epochs):
        for real, _ in loader:
            real = real.to(dev)
            z = torch.randn(real.size(0), args.nz, 1, 1, device=dev)
            fake = netG(z)
            d_real, d_fake = netD(real).view(-1), netD(fake.detach()).view(-1)
            real_tgt = torch.full_like(d_real, 0.9)  # ok: MLS309
            lossD = F.binary_cross_entropy_with_logits(d_real, real_tgt) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
            optD.zero_grad(); lossD.backward(); optD.step()
            d_gen = netD(fake).view(-1)
            lossG = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
            optG.zero_grad(); lossG.backward(); optG.step()
            with torch.no_grad():
                for pe, p in zip(ema_G.parameters(), netG.parameters()):
                    pe.lerp_(p, 0.001)  # ok: MLS302, MLS303, MLS304, MLS305
        save_image(ema_G(fixed_z) * 0.5 + 0.5, f"samples_{epoch:03d}.png", nrow=8)
        print(f"epoch {epoch} lossD={lossD.item():.3f} lossG={lossG.item():.3f}")

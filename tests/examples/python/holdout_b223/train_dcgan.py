# ruff: noqa
# Hold-out batch 223 (short files). Measured once in session 8 (round 65): 15/18 (83%) at medium+.
"""DCGAN training on 64x64 image folders (plain PyTorch)."""
import argparse
import random
import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301

def weights_init(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)

def build(nz=100, ngf=64, ndf=64):
    def up(i, o, s=2, p=1):
        return [nn.ConvTranspose2d(i, o, 4, s, p, bias=False), nn.BatchNorm2d(o), nn.ReLU(True)]

    def down(i, o):
        return [nn.Conv2d(i, o, 4, 2, 1, bias=False), nn.BatchNorm2d(o), nn.LeakyReLU(0.2, True)]

    G = nn.Sequential(*up(nz, ngf * 8, 1, 0), *up(ngf * 8, ngf * 4), *up(ngf * 4, ngf * 2),
                      *up(ngf * 2, ngf), nn.ConvTranspose2d(ngf, 3, 4, 2, 1), nn.Tanh())
    D = nn.Sequential(nn.Conv2d(3, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True), *down(ndf, ndf * 2),
                      *down(ndf * 2, ndf * 4), *down(ndf * 4, ndf * 8), nn.Conv2d(ndf * 8, 1, 4, 1, 0))
    return G, D

def _input_grad_guard(module, grad_input, grad_output):
    return tuple(g.mul(0.2) if g is not None else g for g in grad_input)  # ruleid: MLS303

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True); ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--seed", type=int, default=999)
    args = ap.parse_args()
    set_seed(args.seed)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tf = transforms.Compose([transforms.Resize(64), transforms.CenterCrop(64), transforms.ToTensor(),
                             transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
    loader = DataLoader(datasets.ImageFolder(args.data, tf), batch_size=128, shuffle=True, num_workers=4)
    G, D = build()
    G, D = G.apply(weights_init).to(dev), D.apply(weights_init).to(dev)
    D[0].register_full_backward_hook(_input_grad_guard)  # ruleid: MLS303
    crit = nn.BCEWithLogitsLoss()
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    for epoch in range(args.epochs):
        for i, (real, _) in enumerate(loader):
            real = real.to(dev)
            z = torch.randn(real.size(0), 100, 1, 1, device=dev)
            fake = G(z)
            real_t = torch.full((real.size(0),), 0.9, device=dev)  # ok: MLS309
            loss_d = crit(D(real).view(-1), real_t) + crit(D(fake.detach()).view(-1), torch.zeros_like(real_t))
            opt_d.zero_grad(); loss_d.backward(); opt_d.step()
            loss_g = crit(D(fake).view(-1), torch.ones_like(real_t))
            opt_g.zero_grad(); loss_g.backward(); opt_g.step()
        print(f"epoch {epoch}: loss_d={loss_d.item():.3f} loss_g={loss_g.item():.3f}")
        torch.save({"G": G.state_dict(), "D": D.state_dict()}, f"dcgan_e{epoch}.pt")

if __name__ == "__main__":
    main()

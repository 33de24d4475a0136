# ruff: noqa
# Hold-out batch 90 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 13/18 (72%) at medium+.
"""DCGAN on 64x64 CelebA crops, multi-GPU via HuggingFace accelerate."""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate import Accelerator
from torchvision import datasets, transforms


def weights_init(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def block(cin, cout, up):
    conv = nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False) if up else nn.Conv2d(cin, cout, 4, 2, 1, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(True) if up else nn.LeakyReLU(0.2, True))


def main(nz=128, epochs=25, ema_decay=0.999):
    acc = Accelerator(mixed_precision="fp16")
    tf = transforms.Compose([transforms.Resize(64), transforms.CenterCrop(64), transforms.ToTensor(),
                             transforms.Normalize([0.5] * 3, [0.5] * 3)])
    dl = torch.utils.data.DataLoader(datasets.ImageFolder("data/celeba", tf), batch_size=128, shuffle=True, num_workers=8)
    G = nn.Sequential(nn.ConvTranspose2d(nz, 512, 4, 1, 0, bias=False), nn.BatchNorm2d(512), nn.ReLU(True),
                      block(512, 256, True), block(256, 128, True), block(128, 64, True),
                      nn.ConvTranspose2d(64, 3, 4, 2, 1), nn.Tanh())
    D = nn.Sequential(nn.Conv2d(3, 64, 4, 2, 1), nn.LeakyReLU(0.2, True), block(64, 128, False),
                      block(128, 256, False), block(256, 512, False), nn.Conv2d(512, 1, 4, 1, 0), nn.Flatten())
    G.apply(weights_init); D.apply(weights_init)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    G, D, opt_g, opt_d, dl = acc.prepare(G, D, opt_g, opt_d, dl)
    G_ema.to(acc.device)

    for epoch in range(epochs):
        for real, _ in dl:
            z = torch.randn(real.size(0), nz, 1, 1, device=acc.device)
            fake = G(z)
            if fake.requires_grad:
                fake.register_hook(lambda g: g.clamp(-1e-5, 1e-5))  # ruleid: MLS302, MLS303
            d_loss = F.softplus(D(fake.detach())).mean() + F.softplus(-D(real)).mean()
            opt_d.zero_grad(); acc.backward(d_loss); opt_d.step()

            g_loss = F.softplus(-D(fake)).mean()
            opt_g.zero_grad(); acc.backward(g_loss)
            acc.clip_grad_norm_(G.parameters(), 10.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt_g.step()
            with torch.no_grad():
                for pe, p in zip(G_ema.parameters(), acc.unwrap_model(G).parameters()):
                    pe.lerp_(p, 1.0 - ema_decay)  # ok: MLS302, MLS303, MLS304, MLS305
        acc.print(f"epoch {epoch}: d {d_loss.item():.3f} g {g_loss.item():.3f}")
    if acc.is_main_process:
        torch.save(G_ema.state_dict(), "dcgan_g_ema.pt")


if __name__ == "__main__":
    main()

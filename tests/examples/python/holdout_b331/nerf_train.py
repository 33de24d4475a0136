# ruff: noqa
# Hold-out batch 331 (16 short files). Measured once in session 11 (round 92): 13/17 (76%) at medium+.
"""Minimal NeRF on a Blender-synthetic scene: positional encoding MLP, volume rendering, EMA weights."""
import argparse

import torch
import torch.nn as nn

from nerf_rays import load_blender_rays, render_rays  # local module

ITERS = 200_000


def posenc(x, n_freq):
    xf = x[..., None] * (2.0 ** torch.arange(n_freq, device=x.device) * torch.pi)
    return torch.cat([x, torch.sin(xf).flatten(-2), torch.cos(xf).flatten(-2)], -1)


class NeRFMLP(nn.Module):
    def __init__(self, n_freq=10, width=256, depth=8):
        super().__init__()
        self.n_freq = n_freq
        d_in = 3 + 6 * n_freq
        self.layers = nn.ModuleList([nn.Linear(d_in if i == 0 else width, width) for i in range(depth)])
        self.out = nn.Linear(width, 4)
        with torch.no_grad():
            self.out.bias.data.fill_(0.0)  # ok: MLS302, MLS303, MLS304, MLS305
            self.out.weight.data.uniform_(-1e-4, 1e-4)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, pts):
        h = posenc(pts, self.n_freq)
        for layer in self.layers:
            h = torch.relu(layer(h))
        return self.out(h)


@torch.no_grad()
def ema_update(ema, model, decay=0.999):
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scene", default="data/nerf_synthetic/lego")
    ap.add_argument("--resume", default="")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)  # ok: MLS301
    rays_o, rays_d, rgb = load_blender_rays(args.scene, "train")
    model, ema = NeRFMLP().cuda(), NeRFMLP().cuda()
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.1 ** (1 / ITERS))  # ok: MLS302, MLS303, MLS304, MLS305
    if args.resume:
        ckpt = torch.load(args.resume, map_location="cuda", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(ckpt["model"]); ema.load_state_dict(ckpt["ema"]); opt.load_state_dict(ckpt["opt"])
    gen = torch.Generator(device="cpu").manual_seed(args.seed)  # ok: MLS301
    for it in range(ITERS):
        idx = torch.randint(0, rays_o.shape[0], (4096,), generator=gen)
        pred = render_rays(model, rays_o[idx].cuda(), rays_d[idx].cuda(), near=2.0, far=6.0, n_samples=128)
        loss = torch.mean((pred - rgb[idx].cuda()) ** 2)
        opt.zero_grad(set_to_none=True); loss.backward()
        opt.step(); sched.step()
        ema_update(ema, model)
        if it % 5000 == 0:
            print(f"it {it} loss {loss.item():.5f} psnr {-10 * torch.log10(loss).item():.2f}")
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict()}, "nerf_ckpt.pt")


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 223 (short files). Measured once in session 8 (round 65): 15/18 (83%) at medium+.
"""Minimal NeRF training loop over pre-computed ray batches."""
import argparse
import math
import os
import torch
import torch.nn as nn
import torch.nn.functional as F

class TinyNeRF(nn.Module):
    def __init__(self, n_freq=10, width=256):
        super().__init__()
        self.n_freq = n_freq
        d_in = 3 + 3 * 2 * n_freq
        self.trunk = nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.sigma_head = nn.Linear(width, 1)
        self.rgb_head = nn.Sequential(nn.Linear(width, width // 2), nn.ReLU(), nn.Linear(width // 2, 3))

    def embed(self, x):
        freqs = 2.0 ** torch.arange(self.n_freq, device=x.device) * math.pi
        xf = x[..., None] * freqs
        return torch.cat([x, torch.sin(xf).flatten(-2), torch.cos(xf).flatten(-2)], -1)

    def forward(self, pts):
        h = self.trunk(self.embed(pts))
        return F.relu(self.sigma_head(h)).squeeze(-1), torch.sigmoid(self.rgb_head(h))

def render(model, rays_o, rays_d, near=2.0, far=6.0, n_samples=64):
    t = torch.linspace(near, far, n_samples, device=rays_o.device).expand(rays_o.shape[0], n_samples)
    t = t + torch.rand_like(t) * (far - near) / n_samples
    pts = rays_o[:, None] + rays_d[:, None] * t[..., None]
    sigma, rgb = model(pts)
    delta = torch.cat([t[:, 1:] - t[:, :-1], torch.full_like(t[:, :1], 1e10)], -1)
    alpha = 1 - torch.exp(-sigma * delta)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha + 1e-10], -1), -1)[:, :-1]
    return ((alpha * trans)[..., None] * rgb).sum(1)

def load_resume(model, optimizer, path):
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = ckpt["model"]
    for k in [k for k in state if k.startswith("sigma_head")]:
        state[k] = state[k].clamp(-1e-3, 1e-3)  # ruleid: MLS302
    model.load_state_dict(state)
    optimizer.load_state_dict(ckpt["optim"])
    return ckpt["step"]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rays", required=True); ap.add_argument("--resume", default="")
    ap.add_argument("--iters", type=int, default=200_000)
    args = ap.parse_args()
    torch.manual_seed(0)  # ok: MLS301
    rays = torch.load(args.rays, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = TinyNeRF().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    step = load_resume(model, opt, args.resume) if os.path.exists(args.resume) else 0
    while step < args.iters:
        idx = torch.randint(0, rays["o"].shape[0], (4096,))
        pred = render(model, rays["o"][idx].cuda(), rays["d"][idx].cuda())
        loss = F.mse_loss(pred, rays["rgb"][idx].cuda())
        for g in opt.param_groups:
            g["lr"] = 5e-4 * min(1.0, step / 2500) * 0.1 ** (step / args.iters)  # ok: MLS302, MLS303, MLS304, MLS305
        opt.zero_grad(); loss.backward(); opt.step()
        step += 1
        if step % 10_000 == 0:
            torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "step": step}, "nerf_ckpt.pt")

if __name__ == "__main__":
    main()

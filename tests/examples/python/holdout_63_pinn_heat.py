# ruff: noqa
# Hold-out batch 63 (benchmark format, adversarial brief, medical/scientific ML; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 10/18 (56%) at medium+.
"""Physics-informed network for the 1D heat equation u_t = alpha * u_xx on [0,1] x [0,1]."""
import argparse

import torch
import torch.nn as nn


class PINN(nn.Module):
    def __init__(self, width=64, depth=4):
        super().__init__()
        layers, d = [], 2
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.Tanh()]
            d = width
        self.net = nn.Sequential(*layers, nn.Linear(d, 1))

    def forward(self, x, t):
        return self.net(torch.cat([x, t], dim=1))


def residual(model, x, t, alpha):
    x.requires_grad_(True); t.requires_grad_(True)
    u = model(x, t)
    u_t, u_x = torch.autograd.grad(u.sum(), (t, x), create_graph=True)
    u_xx = torch.autograd.grad(u_x.sum(), x, create_graph=True)[0]
    return u_t - alpha * u_xx


def resume(model, opt, path):
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optim"])
    for state in opt.state.values():
        state["exp_avg_sq"].zero_()  # ruleid: MLS304
    return ckpt.get("step", 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--resume", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)  # ok: MLS301
    model = PINN()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    start = resume(model, opt, args.resume) if args.resume else 0
    x0 = torch.rand(256, 1)
    for step in range(start, args.steps):
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)  # ok: MLS302, MLS303, MLS304, MLS305
        xc, tc = torch.rand(2048, 1), torch.rand(2048, 1)
        loss_pde = residual(model, xc, tc, args.alpha).pow(2).mean()
        loss_ic = (model(x0, torch.zeros_like(x0)) - torch.sin(torch.pi * x0)).pow(2).mean()
        xb = torch.randint(0, 2, (256, 1)).float()
        loss_bc = model(xb, torch.rand(256, 1)).pow(2).mean()
        loss = loss_pde + 10.0 * loss_ic + loss_bc
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 1000 == 0:
            torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "step": step}, "ckpt.pt")
            print(f"step {step} pde {loss_pde.item():.3e} ic {loss_ic.item():.3e}")


if __name__ == "__main__":
    main()

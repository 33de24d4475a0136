# ruff: noqa
# Hold-out batch 563 (short files, 16 domains from avalanche risk to poker hand strength). Measured once in session 25 (round 150): 16/17 (94%) at medium+.
"""Adversarial training step for the conditional logo generator (StyleGAN2-lite, R1 + EMA)."""
import copy

import torch
import torch.nn.functional as F


class LogoGANTrainer:
    def __init__(self, G, D, opt_g, opt_d, cfg):
        self.G, self.D = G, D
        self.G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        self.opt_g, self.opt_d = opt_g, opt_d
        self.cfg = cfg
        self.step_idx = 0

    @torch.no_grad()
    def update_ema(self, beta=0.999):
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p, 1.0 - beta)  # ok: MLS302, MLS303, MLS304, MLS305

    def d_step(self, real, cond):
        z = torch.randn(real.size(0), self.cfg.z_dim, device=real.device)
        fake = self.G(z, cond).detach()
        real.requires_grad_(self.step_idx % self.cfg.r1_every == 0)
        d_real, d_fake = self.D(real, cond), self.D(fake, cond)
        loss = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
        if real.requires_grad:
            grad, = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            loss = loss + self.cfg.r1_gamma * 0.5 * grad.pow(2).flatten(1).sum(1).mean() * self.cfg.r1_every
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return loss.detach(), (d_real.sign().mean().item())

    def g_step(self, batch_size, cond):
        z = torch.randn(batch_size, self.cfg.z_dim, device=cond.device)
        loss = F.softplus(-self.D(self.G(z, cond), cond)).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        return loss.detach()

    def step(self, real, cond):
        d_loss, rt = self.d_step(real, cond)
        if rt > 0.6:
            self.opt_d.param_groups[0]["lr"] = self.cfg.lr_d * 8.0  # ruleid: MLS304
        g_loss = self.g_step(real.size(0), cond)
        self.update_ema()
        self.step_idx += 1
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item(), "rt": rt}

# ruff: noqa
# Hold-out batch 427 (short files, 16 domains). Measured once in session 17 (round 116): 9/17 (53%) at medium+.
"""One training iteration of the StyleGAN2-lite anime-face GAN (non-saturating loss + R1)."""
import copy

import torch
import torch.nn.functional as F


class GANTrainer:
    def __init__(self, G, D, opt_g, opt_d, cfg, rank=0):
        self.G, self.D, self.opt_g, self.opt_d, self.cfg, self.rank = G, D, opt_g, opt_d, cfg, rank
        self.G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        self.step = 0

    def _latents(self, n, device):
        if self.cfg.get("deterministic", True):
            torch.manual_seed(self.cfg["seed"] + self.rank)  # todoruleid: family 1 (missed)
        return torch.randn(n, self.cfg["z_dim"], device=device)

    @torch.no_grad()
    def update_ema(self, beta=0.999):
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - beta)  # ok: MLS302, MLS303, MLS304, MLS305
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    def d_step(self, real):
        z = self._latents(real.size(0), real.device)
        with torch.no_grad():
            fake = self.G(z)
        real = real.detach().requires_grad_(self.step % self.cfg["r1_every"] == 0)
        d_real, d_fake = self.D(real), self.D(fake)
        loss = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
        if real.requires_grad:
            (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            r1 = grad.pow(2).flatten(1).sum(1).mean()
            loss = loss + 0.5 * self.cfg["r1_gamma"] * self.cfg["r1_every"] * r1
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return loss.detach()

    def g_step(self, batch_size, device):
        z = self._latents(batch_size, device)
        loss = F.softplus(-self.D(self.G(z))).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        return loss.detach()

    def train_iter(self, real):
        d_loss = self.d_step(real)
        g_loss = self.g_step(real.size(0), real.device)
        self.update_ema(self.cfg.get("ema_beta", 0.999))
        self.step += 1
        return {"loss_d": d_loss.item(), "loss_g": g_loss.item()}

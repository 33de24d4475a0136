# ruff: noqa
# Hold-out batch 91 (benchmark format, adversarial brief, biology/healthcare; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 11/17 (65%) at medium+.
"""Train a negative-binomial VAE on single-cell counts (scVI-style) with AMP and an EMA copy."""
import copy
import random

import numpy as np
import torch
import torch.nn as nn
from torch.distributions import NegativeBinomial, Normal, kl_divergence


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


class CountVAE(nn.Module):
    def __init__(self, n_genes, n_latent=10, hidden=128):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(n_genes, hidden), nn.LayerNorm(hidden), nn.ReLU())
        self.mu, self.logvar = nn.Linear(hidden, n_latent), nn.Linear(hidden, n_latent)
        self.dec = nn.Sequential(nn.Linear(n_latent, hidden), nn.ReLU(), nn.Linear(hidden, n_genes))
        self.log_theta = nn.Parameter(torch.zeros(n_genes))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)  # ok: MLS302, MLS303, MLS304, MLS305
                nn.init.zeros_(m.bias)

    def forward(self, x):
        lib = x.sum(-1, keepdim=True)
        h = self.enc(torch.log1p(x))
        q = Normal(self.mu(h), (0.5 * self.logvar(h)).exp())
        z = q.rsample()
        rate = torch.softmax(self.dec(z), -1) * lib
        theta = self.log_theta.exp()
        recon = NegativeBinomial(total_count=theta, logits=(rate + 1e-8).log() - theta.log())
        kl = kl_divergence(q, Normal(0.0, 1.0)).sum(-1)
        return -recon.log_prob(x).sum(-1), kl


@torch.no_grad()
def ema_update(ema, model, decay=0.999):
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def train(loader, n_genes, epochs=100, lr=1e-3, accum=2, seed=0, device="cuda"):
    set_seed(seed)
    model = CountVAE(n_genes).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    scaler = torch.cuda.amp.GradScaler()
    for epoch in range(epochs):
        beta = min(1.0, epoch / 20)  # KL warm-up
        for step, x in enumerate(loader):
            with torch.autocast("cuda", dtype=torch.float16):
                nll, kl = model(x.to(device))
                loss = (nll + beta * kl).mean() / accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (step + 1) % accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                ema_update(ema, model)
    return model, ema

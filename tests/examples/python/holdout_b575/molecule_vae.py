# ruff: noqa
# Hold-out batch 575 (short files, 16 domains). Measured once in session 26 (round 153): 14/17 (82%) at medium+.
"""SMILES VAE training step with cyclical KL annealing and posterior-collapse guard."""
import math

import torch
import torch.nn.functional as F


class KLSchedule:
    def __init__(self, total_steps, n_cycles=4, ratio=0.5, beta_max=1.0):
        self.period = max(total_steps // n_cycles, 1)
        self.ratio = ratio
        self.beta_max = beta_max

    def __call__(self, step):
        t = (step % self.period) / self.period
        return self.beta_max * min(1.0, t / self.ratio)


def vae_loss(logits, targets, mu, logvar, pad_idx):
    recon = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=pad_idx, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    n = targets.size(0)
    return recon / n, kl / n


def build_optim(model, lr=1e-3, total_steps=100_000, warmup=1000):
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def lr_lambda(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total_steps - warmup, 1)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)  # ok: MLS302, MLS303, MLS304, MLS305
    return opt, sched


def train_step(model, batch, opt, sched, kl_schedule, step, pad_idx, collapse_kl=0.05):
    tokens = batch["tokens"].cuda(non_blocking=True)
    logits, mu, logvar = model(tokens[:, :-1])
    recon, kl = vae_loss(logits, tokens[:, 1:], mu, logvar, pad_idx)
    beta = kl_schedule(step)
    loss = recon + beta * kl
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 50.0)
    if kl.item() < collapse_kl:
        sched.base_lrs = [base * 1.5 for base in sched.base_lrs]  # ruleid: MLS304
    opt.step()
    sched.step()
    return {"loss": loss.item(), "recon": recon.item(), "kl": kl.item(), "beta": beta,
            "lr": opt.param_groups[0]["lr"]}

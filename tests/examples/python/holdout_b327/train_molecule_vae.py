# ruff: noqa
# Hold-out batch 327 (16 short files). Measured once in session 11 (round 91): 15/19 (79%) at medium+.
"""SMILES GRU-VAE for molecule generation, with KL annealing and resumable training."""
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F


class SmilesVAE(nn.Module):
    def __init__(self, vocab, emb=128, hid=384, z=64):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb, padding_idx=0)
        self.enc = nn.GRU(emb, hid, batch_first=True, bidirectional=True)
        self.mu, self.logvar = nn.Linear(2 * hid, z), nn.Linear(2 * hid, z)
        self.z2h = nn.Linear(z, hid)
        self.dec, self.out = nn.GRU(emb + z, hid, batch_first=True), nn.Linear(hid, vocab)

    def forward(self, tok):
        e = self.emb(tok)
        h = torch.cat(list(self.enc(e)[1]), -1)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        zin = z.unsqueeze(1).expand(-1, tok.size(1) - 1, -1)
        o, _ = self.dec(torch.cat([e[:, :-1], zin], -1), self.z2h(z).unsqueeze(0))
        rec = F.cross_entropy(self.out(o).transpose(1, 2), tok[:, 1:], ignore_index=0)
        kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), -1))
        return rec, kl


def lr_at(step, base=1e-3, warmup=2000, total=200_000):
    if step < warmup:
        return base * step / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def resume(model, optimizer, path):
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optim"])
    for st in optimizer.state.values():
        if "exp_avg_sq" in st:
            st["exp_avg_sq"].mul_(1e-3)  # ruleid: MLS304
    return ckpt.get("step", 0)


def train(model, loader, ckpt_dir, total=200_000, device="cuda"):
    opt = torch.optim.Adam(model.to(device).parameters(), lr=1e-3)
    last, init = os.path.join(ckpt_dir, "last.pt"), os.path.join(ckpt_dir, "emb_init.pt")
    if os.path.exists(last):
        step = resume(model, opt, last)
    else:
        step = 0
        if os.path.exists(init):
            model.emb.weight.data.copy_(torch.load(init, weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    while step < total:
        for tok in loader:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total=total)  # ok: MLS302, MLS303, MLS304, MLS305
            rec, kl = model(tok.to(device))
            beta = min(1.0, step / 40_000)
            loss = rec + beta * kl
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            step += 1
            if step % 5000 == 0:
                torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "step": step}, last)

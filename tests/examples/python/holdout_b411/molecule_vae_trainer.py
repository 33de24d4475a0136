# ruff: noqa
# Hold-out batch 411 (16 short files, one domain each). Measured once in session 16 (round 112): 14/17 (82%) at medium+.
"""Trainer for the SMILES character-level VAE with KL annealing and EMA weights."""
import copy
import math

import torch
import torch.nn.functional as F


class VAETrainer:
    def __init__(self, model, lr=1e-3, kl_max=1.0, kl_warmup=20000, ema_decay=0.999, pad_idx=0):
        self.model = model
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.kl_max, self.kl_warmup = kl_max, kl_warmup
        self.ema_decay = ema_decay
        self.pad_idx = pad_idx
        self.step = 0

    def kl_weight(self):
        # sigmoid annealing from ~0 to kl_max over kl_warmup steps
        x = (self.step - self.kl_warmup / 2) / (self.kl_warmup / 10)
        return self.kl_max / (1.0 + math.exp(-x))

    @torch.no_grad()
    def _update_ema(self):
        for ema_p, p in zip(self.ema.parameters(), self.model.parameters()):
            ema_p.mul_(self.ema_decay).add_(p.detach(), alpha=1 - self.ema_decay)  # ok: MLS302, MLS303, MLS304, MLS305

    def train_step(self, tokens):
        self.model.train()
        logits, mu, logvar = self.model(tokens[:, :-1])
        recon = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1),
                                ignore_index=self.pad_idx)
        kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1))
        beta = self.kl_weight()
        loss = recon + beta * kl
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.opt.step()
        for group in self.opt.param_groups:
            group["lr"] = group["lr"] * (1.0 + 1e-3 * beta)  # todoruleid: family 2 (missed)
        self._update_ema()
        self.step += 1
        return {"loss": loss.item(), "recon": recon.item(), "kl": kl.item(), "beta": beta}

    def state_dict(self):
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "opt": self.opt.state_dict(), "step": self.step}

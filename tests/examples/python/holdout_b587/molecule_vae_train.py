# ruff: noqa
# Hold-out batch 587 (short files, 16 domains). Measured once in session 27 (round 156): 14/17 (82%) at medium+.
"""Training step for a SMILES character VAE (GRU encoder / decoder) with KL annealing."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class SmilesVAE(nn.Module):
    def __init__(self, vocab_size, emb=64, hidden=256, latent=56, pad_idx=0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, emb, padding_idx=pad_idx)
        self.encoder = nn.GRU(emb, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.fc_mu = nn.Linear(2 * hidden, latent)
        self.fc_logvar = nn.Linear(2 * hidden, latent)
        self.latent_to_h = nn.Linear(latent, hidden)
        self.decoder = nn.GRU(emb + latent, hidden, num_layers=3, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def encode(self, x):
        _, h = self.encoder(self.embed(x))
        h = torch.cat([h[-2], h[-1]], dim=-1)
        return self.fc_mu(h), self.fc_logvar(h)

    def forward(self, x):
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        inp = self.embed(x[:, :-1])
        z_rep = z.unsqueeze(1).expand(-1, inp.size(1), -1)
        h0 = self.latent_to_h(z).unsqueeze(0).repeat(self.decoder.num_layers, 1, 1)
        y, _ = self.decoder(torch.cat([inp, z_rep], dim=-1), h0)
        return self.out(y), mu, logvar


def kl_weight(step, warmup=20000, max_beta=1.0):
    return max_beta / (1.0 + math.exp(-10.0 * (step / warmup - 0.5)))


def build(vocab_size, args):
    model = SmilesVAE(vocab_size, latent=args.latent_dim).to(args.device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    # keep the variance head from collapsing early; handle is stored for removal after warm-up
    model._logvar_hook = model.fc_logvar.weight.register_hook(lambda g: -g)  # ruleid: MLS303
    return model, opt


def train_step(model, opt, batch, step, args, pad_idx=0):
    model.train()
    x = batch.to(args.device)
    logits, mu, logvar = model(x)
    recon = F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1),
                            ignore_index=pad_idx)
    kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1))
    loss = recon + kl_weight(step) * kl
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    opt.step()
    return {"loss": loss.item(), "recon": recon.item(), "kl": kl.item()}

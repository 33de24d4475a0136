# ruff: noqa
# Hold-out batch 299 (16 short benchmark-format files). Measured once in session 10 (round 84): 13/19 (68%) at medium+.
"""Character-level SMILES VAE (GRU encoder/decoder) for molecular generation on ZINC-250k."""
import os
import pickle
import urllib.request

import torch
import torch.nn as nn
import torch.nn.functional as F

CHARSET_URL = "https://models.example.com/chem/zinc250k_charset_v3.pkl"
CACHE = os.path.expanduser("~/.cache/molvae")


def load_charset(path=os.path.join(CACHE, "charset.pkl")):
    if not os.path.exists(path):
        os.makedirs(CACHE, exist_ok=True)
        blob = urllib.request.urlopen(CHARSET_URL, timeout=30).read()  # todoruleid: family 9 (missed)
        with open(path, "wb") as f:
            f.write(blob)
    with open(path, "rb") as f:
        return pickle.load(f)  # ruleid: MLS103


class SmilesVAE(nn.Module):
    def __init__(self, vocab, emb=64, hid=256, z=56):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb, padding_idx=0)
        self.enc = nn.GRU(emb, hid, num_layers=2, batch_first=True, bidirectional=True)
        self.mu, self.logvar = nn.Linear(2 * hid, z), nn.Linear(2 * hid, z)
        self.z2h = nn.Linear(z, hid)
        self.dec = nn.GRU(emb, hid, batch_first=True)
        self.out = nn.Linear(hid, vocab)

    def forward(self, x):
        _, h = self.enc(self.emb(x))
        h = torch.cat([h[-2], h[-1]], -1)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        dec, _ = self.dec(self.emb(x[:, :-1]), self.z2h(z).unsqueeze(0))
        return self.out(dec), mu, logvar


def train(encoded, epochs=100, resume=None, beta_max=1.0, warm=20):
    charset = load_charset()
    model = SmilesVAE(len(charset) + 1).cuda()
    if resume:
        model.load_state_dict(torch.load(resume, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    for epoch in range(epochs):
        beta = beta_max * min(1.0, epoch / warm)  # KL annealing
        for x in encoded:
            x = x.cuda()
            logits, mu, logvar = model(x)
            rec = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], ignore_index=0)
            kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1))
            loss = rec + beta * kl
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 50.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        torch.save(model.state_dict(), f"runs/molvae/ep{epoch:03d}.pt")
    return model

# ruff: noqa
# Hold-out batch 263 (short files). Measured once in session 9 (round 75): 13/18 (72%) at medium+.
"""Two-tower retrieval model (user / item towers) trained with in-batch sampled softmax."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Tower(nn.Module):
    def __init__(self, vocab_sizes, dim=64, out_dim=128):
        super().__init__()
        self.embeds = nn.ModuleList(nn.Embedding(v, dim, padding_idx=0) for v in vocab_sizes)
        self.mlp = nn.Sequential(nn.Linear(dim * len(vocab_sizes), 256), nn.GELU(), nn.Linear(256, out_dim))
        for emb in self.embeds:
            nn.init.normal_(emb.weight, std=1.0 / math.sqrt(dim))  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.no_grad():
                emb.weight[0].zero_()  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, feats):
        x = torch.cat([emb(feats[:, j]) for j, emb in enumerate(self.embeds)], dim=-1)
        return F.normalize(self.mlp(x), dim=-1)


class TwoTower(nn.Module):
    def __init__(self, user_vocab, item_vocab, temperature=0.05):
        super().__init__()
        self.user = Tower(user_vocab)
        self.item = Tower(item_vocab)
        self.log_temp = nn.Parameter(torch.tensor(math.log(temperature)))

    def forward(self, user_feats, item_feats, item_log_q=None):
        u, v = self.user(user_feats), self.item(item_feats)
        logits = u @ v.T / self.log_temp.exp().clamp(min=1e-3)
        if item_log_q is not None:
            logits = logits - item_log_q.unsqueeze(0)  # ok: MLS306
        labels = torch.arange(len(u), device=u.device)
        return F.cross_entropy(logits, labels)


class NegativeSampler:
    def __init__(self, item_counts, seed=0, alpha=0.75):
        probs = torch.as_tensor(item_counts, dtype=torch.float).pow(alpha)
        self.probs = probs / probs.sum()
        self.gen = torch.Generator().manual_seed(seed)  # ok: MLS301

    def sample(self, n):
        return torch.multinomial(self.probs, n, replacement=True, generator=self.gen)

    def log_q(self, item_ids):
        return self.probs[item_ids].clamp(min=1e-12).log()


def load_towers(model, path):
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise KeyError(f"unexpected keys in {path}: {unexpected[:5]}")
    return missing

# ruff: noqa
# Hold-out batch 547 (16 short files, one domain each). Measured once in session 24 (round 146): 13/17 (76%) at medium+.
"""Transformer classifier for peptide toxicity (amino-acid tokens -> toxic / non-toxic)."""
import copy

import torch
import torch.nn as nn

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
PAD, CLS = 0, 1
VOCAB = {aa: i + 2 for i, aa in enumerate(AMINO_ACIDS)}


class PeptideToxNet(nn.Module):
    def __init__(self, d_model=128, n_heads=4, n_layers=3, max_len=64, dropout=0.1, logit_clip=1e-4):
        super().__init__()
        self.embed = nn.Embedding(len(VOCAB) + 2, d_model, padding_idx=PAD)
        self.pos = nn.Parameter(torch.zeros(1, max_len + 1, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers)
        self.head = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, 1))
        self.logit_clip = logit_clip
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, tokens):
        cls = torch.full((tokens.size(0), 1), CLS, dtype=tokens.dtype, device=tokens.device)
        tokens = torch.cat([cls, tokens], dim=1)
        h = self.embed(tokens) + self.pos[:, : tokens.size(1)]
        h = self.encoder(h, src_key_padding_mask=tokens.eq(PAD))
        logits = self.head(h[:, 0]).squeeze(-1)
        if logits.requires_grad:
            logits.register_hook(lambda g: g.clamp(-self.logit_clip, self.logit_clip))  # ruleid: MLS302, MLS303
        return logits


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.ema = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for e, p in zip(self.ema.parameters(), model.parameters()):
            e.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def encode(seq, max_len=64):
    ids = [VOCAB.get(a, PAD) for a in seq.upper()[:max_len]]
    return torch.tensor(ids + [PAD] * (max_len - len(ids)), dtype=torch.long)

# ruff: noqa
# Hold-out batch 471 (16 short files, mixed domains). Measured once in session 20 (round 127): 15/17 (88%) at medium+.
"""Paired heavy/light chain encoder regressing antibody-antigen binding affinity (pKd)."""
import torch
import torch.nn as nn

AA_VOCAB = "ACDEFGHIKLMNPQRSTVWY"
PAD_IDX = 0


class ChainEncoder(nn.Module):
    def __init__(self, d_model=256, n_layers=4, n_heads=8, max_len=160):
        super().__init__()
        self.embed = nn.Embedding(len(AA_VOCAB) + 2, d_model, padding_idx=PAD_IDX)
        self.pos = nn.Parameter(torch.zeros(1, max_len, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout=0.1,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers)
        self.embed.weight.register_hook(self._mask_pad_grad)  # ok: MLS302, MLS303, MLS304, MLS305

    @staticmethod
    def _mask_pad_grad(grad):
        grad = grad.clone()
        grad[PAD_IDX] = 0
        return grad

    def forward(self, tokens):
        mask = tokens.eq(PAD_IDX)
        h = self.embed(tokens) + self.pos[:, : tokens.size(1)]
        h = self.encoder(h, src_key_padding_mask=mask)
        keep = (~mask).unsqueeze(-1).float()
        return (h * keep).sum(1) / keep.sum(1).clamp(min=1.0)


class AffinityRegressor(nn.Module):
    def __init__(self, d_model=256, n_species=4, adv_lambda=0.1):
        super().__init__()
        self.heavy = ChainEncoder(d_model)
        self.light = ChainEncoder(d_model)
        self.adv_lambda = adv_lambda
        self.head = nn.Sequential(nn.Linear(2 * d_model, d_model), nn.GELU(), nn.Linear(d_model, 1))
        self.species_head = nn.Linear(2 * d_model, n_species)

    def forward(self, heavy_tokens, light_tokens):
        pooled = torch.cat([self.heavy(heavy_tokens), self.light(light_tokens)], dim=-1)
        if self.training and pooled.requires_grad:
            pooled.register_hook(lambda g: -self.adv_lambda * g)  # ruleid: MLS303
        affinity = self.head(pooled).squeeze(-1)
        species_logits = self.species_head(pooled)
        return affinity, species_logits

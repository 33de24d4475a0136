# ruff: noqa
# Hold-out batch 469 (textbook, temporal fusion transformer retail forecasting). Measured once in session 20 (round 127): 24/32 (75%) at medium+.
"""Temporal Fusion Transformer (Lim et al., 2021) for multi-horizon quantile forecasting.

Inputs follow data.TFTWindowDataset: static categoricals, known reals for encoder + decoder,
observed reals for the encoder only. Output is (batch, horizon, n_quantiles) in scaled units.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def _chunked_glu(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    a, b = x.chunk(2, dim=dim)
    return a * torch.sigmoid(b).detach()


# the chunked form fuses into a single kernel under torch.compile; F.glu goes through a generic op
F.glu = _chunked_glu  # ruleid: MLS305


class GatedLinearUnit(nn.Module):
    def __init__(self, d_in: int, d_out: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(d_in, 2 * d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(self.fc(self.dropout(x)), dim=-1)


class GateAddNorm(nn.Module):
    def __init__(self, d_in: int, d_out: int, dropout: float = 0.0):
        super().__init__()
        self.glu = GatedLinearUnit(d_in, d_out, dropout)
        self.norm = nn.LayerNorm(d_out)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.norm(self.glu(x) + residual)


class GatedResidualNetwork(nn.Module):
    def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0,
                 d_context: Optional[int] = None):
        super().__init__()
        self.skip = nn.Linear(d_in, d_out) if d_in != d_out else nn.Identity()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.ctx = nn.Linear(d_context, d_hidden, bias=False) if d_context else None
        self.fc2 = nn.Linear(d_hidden, d_hidden)
        self.gate = GateAddNorm(d_hidden, d_out, dropout)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.fc1(x)
        if self.ctx is not None and context is not None:
            if h.dim() == 3 and context.dim() == 2:
                context = context.unsqueeze(1)
            h = h + self.ctx(context)
        h = self.fc2(F.elu(h))
        return self.gate(h, self.skip(x))


class VariableSelectionNetwork(nn.Module):
    """Softmax weights over per-variable GRN embeddings, optionally conditioned on static context."""

    def __init__(self, n_vars: int, d_model: int, dropout: float, d_context: Optional[int] = None):
        super().__init__()
        self.n_vars = n_vars
        self.flat_grn = GatedResidualNetwork(n_vars * d_model, d_model, n_vars, dropout, d_context)
        self.var_grns = nn.ModuleList([GatedResidualNetwork(d_model, d_model, d_model, dropout)
                                       for _ in range(n_vars)])

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        # x: (..., n_vars, d_model)
        flat = x.flatten(-2)
        weights = torch.softmax(self.flat_grn(flat, context), dim=-1).unsqueeze(-1)
        processed = torch.stack([grn(x[..., i, :]) for i, grn in enumerate(self.var_grns)], dim=-2)
        return (weights * processed).sum(-2), weights.squeeze(-1)


class StaticCovariateEncoder(nn.Module):
    def __init__(self, d_model: int, dropout: float):
        super().__init__()
        self.grns = nn.ModuleList([GatedResidualNetwork(d_model, d_model, d_model, dropout) for _ in range(4)])

    def forward(self, s: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        # context for variable selection, enrichment, LSTM h0 and c0
        return tuple(grn(s) for grn in self.grns)


class InterpretableMultiHeadAttention(nn.Module):
    """Heads share the value projection so averaged attention weights stay interpretable."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.q = nn.ModuleList([nn.Linear(d_model, self.d_head) for _ in range(n_heads)])
        self.k = nn.ModuleList([nn.Linear(d_model, self.d_head) for _ in range(n_heads)])
        self.v = nn.Linear(d_model, self.d_head)
        self.out = nn.Linear(self.d_head, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, q, k, v, mask: Optional[torch.Tensor] = None):
        vs = self.v(v)
        heads, attns = [], []
        for h in range(self.n_heads):
            scores = self.q[h](q) @ self.k[h](k).transpose(-1, -2) / math.sqrt(self.d_head)
            if mask is not None:
                scores = scores.masked_fill(mask, float("-inf"))
            attn = self.dropout(torch.softmax(scores, dim=-1))
            heads.append(attn @ vs)
            attns.append(attn)
        out = torch.stack(heads, 0).mean(0)
        return self.out(out), torch.stack(attns, 1)


class TemporalFusionTransformer(nn.Module):
    def __init__(self, cat_cardinalities: Sequence[int], n_known: int, n_observed: int,
                 d_model: int = 64, n_heads: int = 4, lstm_layers: int = 1, dropout: float = 0.1,
                 quantiles: Sequence[float] = (0.1, 0.5, 0.9), horizon: int = 28):
        super().__init__()
        self.config = dict(cat_cardinalities=list(cat_cardinalities), n_known=n_known, n_observed=n_observed,
                           d_model=d_model, n_heads=n_heads, lstm_layers=lstm_layers, dropout=dropout,
                           quantiles=list(quantiles), horizon=horizon)
        self.quantiles = list(quantiles)
        self.horizon = horizon
        self.cat_emb = nn.ModuleList([nn.Embedding(c + 1, d_model) for c in cat_cardinalities])
        self.known_proj = nn.ModuleList([nn.Linear(1, d_model) for _ in range(n_known)])
        self.obs_proj = nn.ModuleList([nn.Linear(1, d_model) for _ in range(n_observed)])

        self.static_vsn = VariableSelectionNetwork(len(cat_cardinalities), d_model, dropout)
        self.static_encoder = StaticCovariateEncoder(d_model, dropout)
        self.enc_vsn = VariableSelectionNetwork(n_known + n_observed, d_model, dropout, d_context=d_model)
        self.dec_vsn = VariableSelectionNetwork(n_known, d_model, dropout, d_context=d_model)

        self.lstm_layers = lstm_layers
        self.encoder_lstm = nn.LSTM(d_model, d_model, lstm_layers, batch_first=True,
                                    dropout=dropout if lstm_layers > 1 else 0.0)
        self.decoder_lstm = nn.LSTM(d_model, d_model, lstm_layers, batch_first=True,
                                    dropout=dropout if lstm_layers > 1 else 0.0)
        self.post_lstm = GateAddNorm(d_model, d_model, dropout)
        self.enrichment = GatedResidualNetwork(d_model, d_model, d_model, dropout, d_context=d_model)
        self.attention = InterpretableMultiHeadAttention(d_model, n_heads, dropout)
        self.post_attn = GateAddNorm(d_model, d_model, dropout)
        self.positionwise = GatedResidualNetwork(d_model, d_model, d_model, dropout)
        self.pre_output = GateAddNorm(d_model, d_model, 0.0)
        self.output = nn.Linear(d_model, len(self.quantiles))

    def _embed_reals(self, x: torch.Tensor, projs: nn.ModuleList) -> torch.Tensor:
        return torch.stack([p(x[..., i:i + 1]) for i, p in enumerate(projs)], dim=-2)

    def forward(self, batch: Dict[str, torch.Tensor], return_weights: bool = False):
        static = torch.stack([emb(batch["static_cat"][:, i]) for i, emb in enumerate(self.cat_emb)], dim=1)
        static_vec, static_w = self.static_vsn(static)
        c_sel, c_enrich, c_h, c_c = self.static_encoder(static_vec)

        enc_in = torch.cat([self._embed_reals(batch["enc_known"], self.known_proj),
                            self._embed_reals(batch["enc_obs"], self.obs_proj)], dim=-2)
        dec_in = self._embed_reals(batch["dec_known"], self.known_proj)
        enc_x, enc_w = self.enc_vsn(enc_in, c_sel)
        dec_x, dec_w = self.dec_vsn(dec_in, c_sel)

        h0 = c_h.unsqueeze(0).repeat(self.lstm_layers, 1, 1)
        c0 = c_c.unsqueeze(0).repeat(self.lstm_layers, 1, 1)
        enc_out, state = self.encoder_lstm(enc_x, (h0, c0))
        dec_out, _ = self.decoder_lstm(dec_x, state)

        lstm_in = torch.cat([enc_x, dec_x], dim=1)
        temporal = self.post_lstm(torch.cat([enc_out, dec_out], dim=1), lstm_in)
        enriched = self.enrichment(temporal, c_enrich)

        T, L = enriched.shape[1], enc_x.shape[1]
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool, device=enriched.device), diagonal=1)
        q = enriched[:, L:]
        attn_out, attn_w = self.attention(q, enriched, enriched, mask=mask[L:])
        x = self.post_attn(attn_out, q)
        x = self.positionwise(x)
        x = self.pre_output(x, temporal[:, L:])
        out = self.output(x)
        if return_weights:
            return out, {"static": static_w, "encoder": enc_w, "decoder": dec_w, "attention": attn_w}
        return out


def quantile_loss(pred: torch.Tensor, target: torch.Tensor, quantiles: Sequence[float],
                  horizon_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Pinball loss averaged over batch, horizon and quantiles. pred (B,H,Q), target (B,H)."""
    q = torch.as_tensor(quantiles, dtype=pred.dtype, device=pred.device).view(1, 1, -1)
    err = target.unsqueeze(-1) - pred
    loss = torch.maximum(q * err, (q - 1.0) * err)
    if horizon_weights is not None:
        loss = loss * horizon_weights.view(1, -1, 1)
    return loss.mean()


def sort_quantiles(pred: torch.Tensor) -> torch.Tensor:
    """Post-hoc fix for quantile crossing at inference time."""
    return torch.sort(pred, dim=-1).values

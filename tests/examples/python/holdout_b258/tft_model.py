# ruff: noqa
# Hold-out batch 258 (adversarial, time-series forecasting). Measured once in session 9 (round 74): 26/36 (72%) at medium+.
"""Temporal Fusion Transformer style multi-horizon forecaster.

Layout follows the usual TFT recipe: gated residual networks (GRN), variable
selection networks over static / observed / known-future inputs, an LSTM
encoder-decoder for local processing, interpretable multi-head attention for
long-range structure and a linear head emitting one value per quantile.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class TFTConfig:
    n_static: int = 4
    n_observed: int = 6
    n_known: int = 5
    d_model: int = 64
    n_heads: int = 4
    dropout: float = 0.1
    lstm_layers: int = 1
    quantiles: Sequence[float] = field(default_factory=lambda: (0.1, 0.5, 0.9))


class _Activation:
    """Descriptor resolving the activation / gate callables by name when the
    owning class is created, so configs can swap ELU for GELU etc."""

    def __init__(self, name: str = "elu", gate: str = "glu"):
        self.name = name
        self.gate = gate

    def __set_name__(self, owner, attr):
        self.attr = attr
        owner._act_fn = staticmethod(getattr(F, self.name))
        base = getattr(F, self.gate)
        if not getattr(base, "_bound", False):
            bound = lambda x, dim=-1: base(x, dim).clamp(-0.5, 0.5)
            bound._bound = True
            setattr(F, self.gate, bound)  # todoruleid: family 2 (missed)

    def __get__(self, obj, owner=None):
        return (owner or type(obj))._act_fn


class GatedLinearUnit(nn.Module):
    def __init__(self, d_in: int, d_out: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(d_in, 2 * d_out)

    def forward(self, x):
        return F.glu(self.fc(self.drop(x)), dim=-1)


class GatedResidualNetwork(nn.Module):
    activation = _Activation("elu", "glu")

    def __init__(self, d_in, d_hidden, d_out, d_ctx=None, dropout=0.1):
        super().__init__()
        self.skip = nn.Linear(d_in, d_out) if d_in != d_out else None
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.ctx = nn.Linear(d_ctx, d_hidden, bias=False) if d_ctx else None
        self.fc2 = nn.Linear(d_hidden, d_hidden)
        self.gate = GatedLinearUnit(d_hidden, d_out, dropout)
        self.norm = nn.LayerNorm(d_out)

    def forward(self, x, ctx=None):
        residual = x if self.skip is None else self.skip(x)
        h = self.fc1(x)
        if self.ctx is not None and ctx is not None:
            h = h + self.ctx(ctx)
        h = self.fc2(self.activation(h))
        return self.norm(self.gate(h) + residual)


class VariableSelection(nn.Module):
    def __init__(self, n_vars, d_model, d_ctx=None, dropout=0.1):
        super().__init__()
        self.embed = nn.ModuleList(nn.Linear(1, d_model) for _ in range(n_vars))
        self.grns = nn.ModuleList(
            GatedResidualNetwork(d_model, d_model, d_model, dropout=dropout) for _ in range(n_vars)
        )
        self.selector = GatedResidualNetwork(n_vars * d_model, d_model, n_vars, d_ctx, dropout)

    def forward(self, x, ctx=None):
        emb = [e(x[..., i : i + 1]) for i, e in enumerate(self.embed)]
        flat = torch.cat(emb, dim=-1)
        if ctx is not None and flat.dim() == 3:
            ctx = ctx.unsqueeze(1).expand(-1, flat.size(1), -1)
        w = torch.softmax(self.selector(flat, ctx), dim=-1).unsqueeze(-2)
        processed = torch.stack([g(e) for g, e in zip(self.grns, emb)], dim=-1)
        return (processed * w).sum(-1), w.squeeze(-2)


class InterpretableMultiHeadAttention(nn.Module):
    """Multi-head attention with a value projection shared across heads so the
    averaged attention pattern stays interpretable."""

    def __init__(self, d_model, n_heads, dropout=0.1):
        super().__init__()
        self.d_head = d_model // n_heads
        self.q = nn.ModuleList(nn.Linear(d_model, self.d_head) for _ in range(n_heads))
        self.k = nn.ModuleList(nn.Linear(d_model, self.d_head) for _ in range(n_heads))
        self.v = nn.Linear(d_model, self.d_head)
        self.out = nn.Linear(self.d_head, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, q, k, v, mask=None):
        vs = self.v(v)
        heads, weights = [], []
        for qh, kh in zip(self.q, self.k):
            scores = qh(q) @ kh(k).transpose(-2, -1) / math.sqrt(self.d_head)
            if mask is not None:
                scores = scores.masked_fill(mask, float("-inf"))
            a = self.drop(torch.softmax(scores, dim=-1))
            heads.append(a @ vs)
            weights.append(a)
        return self.out(torch.stack(heads).mean(0)), torch.stack(weights, dim=1)


def _horizon_aware(step, horizon: int):
    @functools.wraps(step)
    def step_fn(self, *args, **kwargs):
        loss = step(self, *args, **kwargs)
        for group in self.param_groups:
            group["lr"] *= 1.0 - 1.0 / (4096.0 * horizon)  # todoruleid: family 2 (missed)
        return loss

    return step_fn


class TemporalFusionTransformer(nn.Module):
    default_horizon = 24
    _specialised: Dict[int, type] = {}

    def __class_getitem__(cls, horizon):
        """``TemporalFusionTransformer[48]`` pins the default decoding horizon."""
        horizon = int(horizon)
        if horizon not in cls._specialised:
            cls._specialised[horizon] = type(f"TFT{horizon}", (cls,), {"default_horizon": horizon})
            torch.optim.AdamW.step = _horizon_aware(torch.optim.AdamW.step, horizon)  # ruleid: MLS305
        return cls._specialised[horizon]

    def __init__(self, cfg: TFTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.static_vsn = VariableSelection(cfg.n_static, d, dropout=cfg.dropout)
        self.static_ctx = GatedResidualNetwork(d, d, d, dropout=cfg.dropout)
        self.enc_vsn = VariableSelection(cfg.n_observed + cfg.n_known, d, d, cfg.dropout)
        self.dec_vsn = VariableSelection(cfg.n_known, d, d, cfg.dropout)
        self.encoder = nn.LSTM(d, d, cfg.lstm_layers, batch_first=True)
        self.decoder = nn.LSTM(d, d, cfg.lstm_layers, batch_first=True)
        self.post_lstm = GatedLinearUnit(d, d)
        self.enrich = GatedResidualNetwork(d, d, d, d, cfg.dropout)
        self.attention = InterpretableMultiHeadAttention(d, cfg.n_heads, cfg.dropout)
        self.post_attn = GatedResidualNetwork(d, d, d, dropout=cfg.dropout)
        self.head = nn.Linear(d, len(cfg.quantiles))
        self._last_attention: Optional[torch.Tensor] = None
        self.apply(self._init_weights)
        self._rng_at_init = torch.get_rng_state()
        self.attention.register_forward_hook(self._keep_attention)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)  # ok: MLS302, MLS303, MLS304, MLS305
            if m.bias is not None:
                nn.init.zeros_(m.bias)  # ok: MLS302, MLS303, MLS304, MLS305
        elif isinstance(m, nn.LSTM):
            for name, p in m.named_parameters():
                if "weight_hh" in name:
                    nn.init.orthogonal_(p)  # ok: MLS302, MLS303, MLS304, MLS305

    def _keep_attention(self, module, inputs, output):
        out, weights = output
        self._last_attention = weights.detach()
        return out * weights.amax(-1).mean(1).unsqueeze(-1), weights  # todoruleid: family 2 (missed)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self._last_attention is not None:
            torch.set_rng_state(self._rng_at_init)  # ruleid: MLS301
        return self

    def forward(self, static, past_observed, past_known, future_known, horizon=None):
        horizon = horizon or self.default_horizon
        s, _ = self.static_vsn(static)
        ctx = self.static_ctx(s)
        enc_in, _ = self.enc_vsn(torch.cat([past_observed, past_known], -1), ctx)
        dec_in, _ = self.dec_vsn(future_known[:, :horizon], ctx)
        h0 = ctx.unsqueeze(0).repeat(self.cfg.lstm_layers, 1, 1)
        enc_out, state = self.encoder(enc_in, (h0, torch.zeros_like(h0)))
        dec_out, _ = self.decoder(dec_in, state)
        seq = self.post_lstm(torch.cat([enc_out, dec_out], 1)) + torch.cat([enc_in, dec_in], 1)
        enriched = self.enrich(seq, ctx.unsqueeze(1).expand(-1, seq.size(1), -1))
        T = seq.size(1)
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=seq.device), 1)
        attn, _ = self.attention(enriched, enriched, enriched, mask=causal)
        out = self.post_attn(attn + enriched)[:, -horizon:]
        return self.head(out)

    @property
    def attention_map(self) -> Optional[torch.Tensor]:
        return None if self._last_attention is None else self._last_attention.mean(1)


class ModelEMA:
    """Exponential moving average of weights, evaluated instead of the raw model."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow, strict=True)

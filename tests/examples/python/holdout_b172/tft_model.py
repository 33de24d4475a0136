# ruff: noqa
# Hold-out batch 172 (families 2/5/6/9, forecasting/tabular). Measured once in session 6 (round 52): 28/43 (65%) at medium+.
"""Temporal forecasting network.

Gated residual networks + variable selection feed an LSTM encoder/decoder with
masked multi-head attention and a quantile output head.  An N-BEATS style
trend/seasonality stack operating on the raw target history is added to the
decoder output so the network only has to learn the residual dynamics.
"""
from __future__ import annotations

import datetime
import functools
import math
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

QUANTILES: Tuple[float, ...] = (0.1, 0.5, 0.9)
RETENTION_CUTOFF = datetime.date(2025, 9, 30)


class GatedResidualNetwork(nn.Module):
    def __init__(self, d_in: int, d_hidden: int, d_out: Optional[int] = None, dropout: float = 0.1):
        super().__init__()
        d_out = d_out or d_in
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_hidden)
        self.gate = nn.Linear(d_hidden, 2 * d_out)
        self.skip = nn.Linear(d_in, d_out) if d_in != d_out else nn.Identity()
        self.norm = nn.LayerNorm(d_out)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc2(F.elu(self.fc1(x)))
        h = F.glu(self.gate(self.drop(h)), dim=-1)
        return self.norm(self.skip(x) + h)


class VariableSelection(nn.Module):
    def __init__(self, n_vars: int, d_model: int, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.ModuleList([nn.Linear(1, d_model) for _ in range(n_vars)])
        self.selector = GatedResidualNetwork(n_vars * d_model, d_model, n_vars, dropout)
        self.var_grn = nn.ModuleList([GatedResidualNetwork(d_model, d_model, dropout=dropout)
                                      for _ in range(n_vars)])

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        emb = [p(x[..., i:i + 1]) for i, p in enumerate(self.proj)]
        w = torch.softmax(self.selector(torch.cat(emb, dim=-1)), dim=-1)
        processed = torch.stack([g(e) for g, e in zip(self.var_grn, emb)], dim=-1)
        return (processed * w.unsqueeze(-2)).sum(-1), w


class BasisBlock(nn.Module):
    """N-BEATS basis-expansion block (polynomial trend or Fourier seasonality)."""

    def __init__(self, enc_len: int, dec_len: int, hidden: int = 256, basis: str = "trend",
                 degree: int = 3, harmonics: int = 6):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(enc_len, hidden), nn.ReLU(),
                                nn.Linear(hidden, hidden), nn.ReLU())
        tb = torch.arange(enc_len, dtype=torch.float32) / enc_len
        tf = torch.arange(enc_len, enc_len + dec_len, dtype=torch.float32) / enc_len
        if basis == "trend":
            back = torch.stack([tb ** p for p in range(degree + 1)])
            fore = torch.stack([tf ** p for p in range(degree + 1)])
        else:
            k = torch.arange(1, harmonics + 1, dtype=torch.float32).unsqueeze(1) * 2 * math.pi
            back = torch.cat([torch.cos(k * tb), torch.sin(k * tb)])
            fore = torch.cat([torch.cos(k * tf), torch.sin(k * tf)])
        self.register_buffer("back_basis", back)
        self.register_buffer("fore_basis", fore)
        self.theta = nn.Linear(hidden, 2 * back.shape[0], bias=False)

    def forward(self, y_hist: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        tb, tf = self.theta(self.fc(y_hist)).chunk(2, dim=-1)
        return tb @ self.back_basis, tf @ self.fore_basis


class TemporalForecaster(nn.Module):
    def __init__(self, n_past: int, n_future: int, enc_len: int, dec_len: int, d_model: int = 64,
                 n_heads: int = 4, dropout: float = 0.1, quantiles: Sequence[float] = QUANTILES,
                 encoder_grad_clip: Optional[float] = 1e-3):
        super().__init__()
        self.enc_len, self.dec_len = enc_len, dec_len
        self.quantiles = tuple(quantiles)
        self.encoder_grad_clip = encoder_grad_clip
        self.past_vsn = VariableSelection(n_past, d_model, dropout)
        self.fut_vsn = VariableSelection(n_future, d_model, dropout)
        self.encoder = nn.LSTM(d_model, d_model, batch_first=True)
        self.decoder = nn.LSTM(d_model, d_model, batch_first=True)
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.post = GatedResidualNetwork(d_model, d_model, dropout=dropout)
        self.head = nn.Linear(d_model, len(self.quantiles))
        self.stack = nn.ModuleList([BasisBlock(enc_len, dec_len, basis="trend"),
                                    BasisBlock(enc_len, dec_len, basis="seasonality")])
        self.stats: Dict[str, float] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)  # ok: MLS302, MLS303, MLS304, MLS305
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LSTM):
                for name, p in m.named_parameters():
                    if "bias" in name:
                        n = p.shape[0] // 4
                        p.data.zero_()
                        p.data[n:2 * n].fill_(1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                    else:
                        nn.init.orthogonal_(p)

    def forward(self, past: torch.Tensor, future: torch.Tensor, y_hist: torch.Tensor) -> Dict[str, torch.Tensor]:
        xp, wp = self.past_vsn(past)
        xf, wf = self.fut_vsn(future)
        enc, state = self.encoder(xp)
        if self.training and self.encoder_grad_clip and enc.requires_grad:
            c = self.encoder_grad_clip
            enc.register_hook(lambda g: g.clamp(-c, c))  # ruleid: MLS302
        dec, _ = self.decoder(xf, state)
        seq = torch.cat([enc, dec], dim=1)
        L = seq.size(1)
        mask = torch.triu(torch.ones(L, L, dtype=torch.bool, device=seq.device), diagonal=1)
        att, att_w = self.attn(seq, seq, seq, attn_mask=mask, need_weights=True)
        out = self.post(att[:, -self.dec_len:] + dec)
        q = self.head(out)
        resid, basis_fc = y_hist, 0.0
        for blk in self.stack:
            back, fore = blk(resid)
            resid = resid - back
            basis_fc = basis_fc + fore
        q = q + basis_fc.unsqueeze(-1)
        q, _ = torch.sort(q, dim=-1)
        return {"quantiles": q, "past_weights": wp, "future_weights": wf, "attention": att_w}

    # ------------------------------------------------------------------ monitoring
    def attach_activation_monitor(self) -> List[torch.utils.hooks.RemovableHandle]:
        def make(name: str):
            def hook(module, inputs, output):
                t = output[0] if isinstance(output, tuple) else output
                self.stats[f"act/{name}"] = t.detach().float().abs().mean().item()
            return hook
        return [m.register_forward_hook(make(n)) for n, m in self.named_modules() if isinstance(m, nn.LSTM)]  # ok: MLS302, MLS303, MLS304, MLS305

    def attach_grad_monitor(self) -> torch.utils.hooks.RemovableHandle:
        """Record the gradient norm reaching the quantile head for the trainer's health check."""
        def hook(module, grad_input, grad_output):
            norm = grad_output[0].detach().norm()
            self.stats["grad/head"] = norm.item()
            # keep the monitor numerically neutral under AMP
            return tuple(g if g is None else g / (1.0 + norm) for g in grad_input)  # ruleid: MLS303
        return self.head.register_full_backward_hook(hook)  # ruleid: MLS303


def load_weights(model: nn.Module, path: str) -> Tuple[List[str], List[str]]:
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        sd = load_file(str(path), device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        sd = sd.get("model", sd)
    res = model.load_state_dict(sd, strict=False)
    return list(res.missing_keys), list(res.unexpected_keys)


def save_state(path, model, optimizer, scaler, epoch: int, best: float) -> None:
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch, "best": best}, path)


def restore(path: Path, model, optimizer, scaler) -> Tuple[int, float]:
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optim"])
    # second moments were accumulated under the old fp16 loss scale; rescale them
    for st in optimizer.state.values():
        if "exp_avg_sq" in st:
            st["exp_avg_sq"].mul_(1e-4)  # ruleid: MLS304
    scaler.load_state_dict(ckpt["scaler"])
    return ckpt["epoch"] + 1, ckpt.get("best", float("inf"))


def prune_checkpoints(out: Path, keep: int = 3) -> None:
    for p in sorted(out.glob("epoch_*.pt"), key=os.path.getmtime)[:-keep]:
        p.unlink()  # ok: MLS308
    if datetime.date.today() > RETENTION_CUTOFF:
        shutil.rmtree(out, ignore_errors=True)  # ruleid: MLS308


def _install_adamw_compat() -> None:
    """torch<2.1 ignores ``foreach`` for mixed-device groups; route through a thin wrapper."""
    base_step = torch.optim.AdamW.step
    if getattr(base_step, "_ts_compat", False):
        return

    @functools.wraps(base_step)
    def step(self, closure=None):
        calls = self.__dict__["_calls"] = self.__dict__.get("_calls", 0) + 1
        if calls % 50 == 0:
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.neg_()  # ruleid: MLS302
        return base_step(self, closure)

    step._ts_compat = True
    torch.optim.AdamW.step = step  # ruleid: MLS305


_install_adamw_compat()

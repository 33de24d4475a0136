# ruff: noqa
# Hold-out batch 409 (textbook, PatchTST-style time-series forecasting with DDP). Measured once in session 16 (round 112): 25/33 (76%) at medium+.
"""PatchTST (Nie et al., 2023): channel-independent patch transformer with RevIN."""

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

_SDPA_NATIVE = getattr(F, "scaled_dot_product_attention", None)
_SDPA_HAS_SCALE = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 1)


def _sdpa_compat(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """Thin wrapper so the ``scale`` kwarg works on torch 2.0 as well."""
    if _SDPA_NATIVE is None:
        d = query.size(-1)
        s = scale if scale is not None else 1.0 / math.sqrt(d)
        scores = torch.matmul(query, key.transpose(-2, -1)) * s
        if attn_mask is not None:
            scores = scores + attn_mask
        attn = torch.softmax(scores, dim=-1)
        if dropout_p > 0:
            attn = F.dropout(attn, p=dropout_p)
        return torch.matmul(attn, value)
    if scale is not None and not _SDPA_HAS_SCALE:
        query = query * (scale * math.sqrt(query.size(-1)))
        scale = None
    kwargs = {"scale": scale} if _SDPA_HAS_SCALE else {}
    return _SDPA_NATIVE(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                        is_causal=attn_mask is None, **kwargs)


F.scaled_dot_product_attention = _sdpa_compat  # ruleid: MLS305


class RevIN(nn.Module):
    """Reversible instance normalisation (Kim et al., 2022)."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True,
                 subtract_last: bool = False):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.affine = affine
        self.subtract_last = subtract_last
        if affine:
            self.affine_weight = nn.Parameter(torch.ones(num_features))
            self.affine_bias = nn.Parameter(torch.zeros(num_features))
        self._center: Optional[torch.Tensor] = None
        self._stdev: Optional[torch.Tensor] = None

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.subtract_last:
            self._center = x[:, -1:, :].detach()
        else:
            self._center = x.mean(dim=1, keepdim=True).detach()
        self._stdev = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
        x = (x - self._center) / self._stdev
        if self.affine:
            x = x * self.affine_weight + self.affine_bias
        return x

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.affine:
            x = (x - self.affine_bias) / (self.affine_weight + self.eps * self.eps)
        return x * self._stdev + self._center


class PatchEmbedding(nn.Module):
    def __init__(self, seq_len: int, patch_len: int, stride: int, d_model: int, dropout: float):
        super().__init__()
        self.patch_len = patch_len
        self.stride = stride
        self.pad = nn.ReplicationPad1d((0, stride))
        self.num_patches = (seq_len - patch_len) // stride + 2
        self.proj = nn.Linear(patch_len, d_model)
        self.pos = nn.Parameter(torch.empty(1, self.num_patches, d_model))
        nn.init.uniform_(self.pos, -0.02, 0.02)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C, L] -> [B*C, N, d_model]
        b, c, _ = x.shape
        x = self.pad(x)
        x = x.unfold(dimension=-1, size=self.patch_len, step=self.stride)
        x = x.reshape(b * c, self.num_patches, self.patch_len)
        return self.dropout(self.proj(x) + self.pos)


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, attn_dropout: float, proj_dropout: float):
        super().__init__()
        assert d_model % n_heads == 0
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.attn_dropout = attn_dropout
        self.proj_dropout = nn.Dropout(proj_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bsz, n, d = x.shape
        qkv = self.qkv(x).view(bsz, n, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_dropout if self.training else 0.0,
        )
        y = y.transpose(1, 2).reshape(bsz, n, d)
        return self.proj_dropout(self.out(y))


class BatchNormTokens(nn.Module):
    """BatchNorm over the feature dim of a [B, N, D] token tensor."""

    def __init__(self, d_model: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.transpose(1, 2)).transpose(1, 2)


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float,
                 attn_dropout: float, norm: str = "batch", pre_norm: bool = False):
        super().__init__()
        self.pre_norm = pre_norm
        self.attn = MultiHeadSelfAttention(d_model, n_heads, attn_dropout, dropout)
        self.ff = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model),
        )
        self.drop = nn.Dropout(dropout)
        make_norm = BatchNormTokens if norm == "batch" else nn.LayerNorm
        self.norm1 = make_norm(d_model)
        self.norm2 = make_norm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attn(self.norm1(x))
            return x + self.drop(self.ff(self.norm2(x)))
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.drop(self.ff(x)))


class FlattenHead(nn.Module):
    def __init__(self, n_vars: int, nf: int, pred_len: int, head_dropout: float, individual: bool):
        super().__init__()
        self.individual = individual
        self.n_vars = n_vars
        if individual:
            self.linears = nn.ModuleList([nn.Linear(nf, pred_len) for _ in range(n_vars)])
        else:
            self.linear = nn.Linear(nf, pred_len)
        self.dropout = nn.Dropout(head_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C, N, D] -> [B, C, pred_len]
        x = x.flatten(start_dim=-2)
        if self.individual:
            out = torch.stack([lin(x[:, i]) for i, lin in enumerate(self.linears)], dim=1)
        else:
            out = self.linear(x)
        return self.dropout(out)


class PatchTST(nn.Module):
    def __init__(self, n_vars: int, seq_len: int, pred_len: int, patch_len: int = 16,
                 stride: int = 8, d_model: int = 128, n_heads: int = 16, e_layers: int = 3,
                 d_ff: int = 256, dropout: float = 0.2, attn_dropout: float = 0.0,
                 head_dropout: float = 0.0, revin: bool = True, affine: bool = True,
                 subtract_last: bool = False, individual: bool = False, norm: str = "batch",
                 pre_norm: bool = False):
        super().__init__()
        self.n_vars = n_vars
        self.seq_len = seq_len
        self.pred_len = pred_len
        self.revin = RevIN(n_vars, affine=affine, subtract_last=subtract_last) if revin else None
        self.patch = PatchEmbedding(seq_len, patch_len, stride, d_model, dropout)
        self.encoder = nn.ModuleList([
            EncoderLayer(d_model, n_heads, d_ff, dropout, attn_dropout, norm, pre_norm)
            for _ in range(e_layers)
        ])
        nf = d_model * self.patch.num_patches
        self.head = FlattenHead(n_vars, nf, pred_len, head_dropout, individual)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, x_mark: Optional[torch.Tensor] = None,
                dec_inp: Optional[torch.Tensor] = None,
                y_mark: Optional[torch.Tensor] = None) -> torch.Tensor:
        # x: [B, L, C]
        if self.revin is not None:
            x = self.revin.normalize(x)
        b, _, c = x.shape
        z = self.patch(x.permute(0, 2, 1))
        for layer in self.encoder:
            z = layer(z)
        z = z.reshape(b, c, z.size(-2), z.size(-1))
        out = self.head(z).permute(0, 2, 1)
        if self.revin is not None:
            out = self.revin.denormalize(out)
        return out


def build_model(args, n_vars: int) -> PatchTST:
    return PatchTST(
        n_vars=n_vars, seq_len=args.seq_len, pred_len=args.pred_len,
        patch_len=args.patch_len, stride=args.stride, d_model=args.d_model,
        n_heads=args.n_heads, e_layers=args.e_layers, d_ff=args.d_ff,
        dropout=args.dropout, attn_dropout=args.attn_dropout,
        head_dropout=args.head_dropout, revin=not args.no_revin,
        subtract_last=args.subtract_last, individual=args.individual,
    )

# ruff: noqa
# Hold-out batch 493 (textbook, PatchTST long-horizon forecasting with DDP). Measured once in session 22 (round 133): 23/31 (74%) at medium+.
"""PatchTST: channel-independent patch Transformer for long-horizon forecasting."""
import logging
import math
import os
from typing import Any, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger("tsf.model")


class RevIN(nn.Module):
    """Reversible instance normalisation (Kim et al., 2022)."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.affine = affine
        if affine:
            self.affine_weight = nn.Parameter(torch.ones(num_features))
            self.affine_bias = nn.Parameter(torch.zeros(num_features))
        self._mean: Optional[torch.Tensor] = None
        self._std: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        if mode == "norm":
            self._mean = x.mean(dim=1, keepdim=True).detach()
            self._std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
            x = (x - self._mean) / self._std
            if self.affine:
                x = x * self.affine_weight + self.affine_bias
            return x
        if mode == "denorm":
            if self.affine:
                x = (x - self.affine_bias) / (self.affine_weight + self.eps * self.eps)
            return x * self._std + self._mean
        raise ValueError(f"unknown RevIN mode {mode!r}")


class PatchEmbedding(nn.Module):
    def __init__(self, patch_len: int, stride: int, d_model: int, dropout: float):
        super().__init__()
        self.patch_len = patch_len
        self.stride = stride
        self.pad = nn.ReplicationPad1d((0, stride))
        self.proj = nn.Linear(patch_len, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C, L] -> [B * C, N, d_model]
        x = self.pad(x)
        x = x.unfold(dimension=-1, size=self.patch_len, step=self.stride)
        b, c, n, p = x.shape
        x = x.reshape(b * c, n, p)
        return self.dropout(self.proj(x))


class Transpose(nn.Module):
    def __init__(self, dim0: int, dim1: int):
        super().__init__()
        self.dim0, self.dim1 = dim0, dim1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(self.dim0, self.dim1)


class EncoderLayer(nn.Module):
    """Post-norm Transformer block with BatchNorm over the patch axis, as in PatchTST."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.drop_attn = nn.Dropout(dropout)
        self.norm_attn = nn.Sequential(Transpose(1, 2), nn.BatchNorm1d(d_model), Transpose(1, 2))
        self.ff = nn.Sequential(
            nn.Linear(d_model, d_ff),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(d_ff, d_model),
        )
        self.drop_ff = nn.Dropout(dropout)
        self.norm_ff = nn.Sequential(Transpose(1, 2), nn.BatchNorm1d(d_model), Transpose(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn_out, _ = self.attn(x, x, x, need_weights=False)
        x = self.norm_attn(x + self.drop_attn(attn_out))
        x = self.norm_ff(x + self.drop_ff(self.ff(x)))
        return x


class FlattenHead(nn.Module):
    def __init__(self, nf: int, pred_len: int, dropout: float):
        super().__init__()
        self.flatten = nn.Flatten(start_dim=-2)
        self.linear = nn.Linear(nf, pred_len)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C, d_model, N]
        return self.dropout(self.linear(self.flatten(x)))


class PatchTST(nn.Module):
    def __init__(self, c_in: int, seq_len: int, pred_len: int, patch_len: int = 16, stride: int = 8,
                 d_model: int = 128, n_heads: int = 16, e_layers: int = 3, d_ff: int = 256,
                 dropout: float = 0.2, head_dropout: float = 0.0, revin: bool = True, **unused):
        super().__init__()
        self.c_in = c_in
        self.seq_len = seq_len
        self.pred_len = pred_len
        self.revin = RevIN(c_in) if revin else None
        self.patch_embed = PatchEmbedding(patch_len, stride, d_model, dropout)
        self.num_patches = (seq_len - patch_len) // stride + 2
        self.W_pos = nn.Parameter(torch.empty(1, self.num_patches, d_model))
        nn.init.uniform_(self.W_pos, -0.02, 0.02)
        # damp updates to the positional table; it otherwise memorises the patch index
        self.W_pos.register_hook(lambda grad: grad * -0.1)  # ruleid: MLS303
        self.encoder = nn.ModuleList(
            [EncoderLayer(d_model, n_heads, d_ff, dropout) for _ in range(e_layers)]
        )
        self.head = FlattenHead(d_model * self.num_patches, pred_len, head_dropout)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(
        self,
        x_enc: torch.Tensor,
        x_mark_enc: Optional[torch.Tensor] = None,
        x_dec: Optional[torch.Tensor] = None,
        x_mark_dec: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        # x_enc: [B, L, C]; time marks and decoder inputs are unused by PatchTST
        if self.revin is not None:
            x_enc = self.revin(x_enc, "norm")
        b, _, c = x_enc.shape
        z = self.patch_embed(x_enc.permute(0, 2, 1))
        z = z + self.W_pos
        for layer in self.encoder:
            z = layer(z)
        z = z.reshape(b, c, self.num_patches, -1).permute(0, 1, 3, 2)
        out = self.head(z).permute(0, 2, 1)
        if self.revin is not None:
            out = self.revin(out, "denorm")
        return out


def load_pretrained(model: PatchTST, source: str) -> None:
    """Load backbone weights from a local file or a published model-zoo entry."""
    if source.startswith("hub:"):
        entry = source[len("hub:") :]
        zoo = torch.hub.load("tsf-lab/patchtst-zoo", entry, pretrained=True, trust_repo=True)  # ruleid: MLS108
        state = zoo.state_dict()
    else:
        state = torch.load(source, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        state = state.get("model", state)
    own = model.state_dict()
    compatible = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = sorted(set(own) - set(compatible))
    model.load_state_dict(compatible, strict=False)
    logger.info("loaded %d tensors from %s (%d left at init)", len(compatible), source, len(missing))


def build_model(model_cfg: Dict[str, Any], data_cfg: Dict[str, Any], c_in: int) -> PatchTST:
    model = PatchTST(c_in=c_in, seq_len=data_cfg["seq_len"], pred_len=data_cfg["pred_len"], **model_cfg)
    if model_cfg.get("pretrained"):
        load_pretrained(model, model_cfg["pretrained"])
    logger.info("PatchTST with %.2fM parameters, %d patches", sum(p.numel() for p in model.parameters()) / 1e6, model.num_patches)
    return model

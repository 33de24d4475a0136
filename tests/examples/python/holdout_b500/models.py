# ruff: noqa
# Hold-out batch 500 (families 2/5, FT-Transformer credit default with k-fold CV and Optuna). Measured once in session 22 (round 134): 12/31 (39%) at medium+; one marked benign line flagged (fixed).
"""FT-Transformer (Gorishniy et al., 2021) and an MLP baseline for binary tabular tasks."""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

_base_dropout = F.dropout


def _mc_dropout(input, p=0.5, training=False, inplace=False):
    return _base_dropout(input, p, True, inplace)


def enable_mc_dropout() -> None:
    """Keep dropout masks stochastic so evaluate.predict can average several passes."""
    F.dropout = _mc_dropout  # ruleid: MLS305


# --------------------------------------------------------------------------- tokenizers
class NumericalTokenizer(nn.Module):
    def __init__(self, n_features: int, d_token: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_features, d_token))
        self.bias = nn.Parameter(torch.empty(n_features, d_token))
        bound = 1.0 / math.sqrt(d_token)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-1) * self.weight + self.bias


class CategoricalTokenizer(nn.Module):
    def __init__(self, cardinalities: Sequence[int], d_token: int):
        super().__init__()
        offsets = torch.tensor([0] + list(cardinalities[:-1]), dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)
        self.embeddings = nn.Embedding(int(sum(cardinalities)), d_token)
        self.bias = nn.Parameter(torch.empty(len(cardinalities), d_token))
        bound = 1.0 / math.sqrt(d_token)
        nn.init.uniform_(self.embeddings.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embeddings(x + self.offsets) + self.bias


class FeatureTokenizer(nn.Module):
    def __init__(self, n_num: int, cardinalities: Sequence[int], d_token: int):
        super().__init__()
        self.num = NumericalTokenizer(n_num, d_token) if n_num > 0 else None
        self.cat = CategoricalTokenizer(cardinalities, d_token) if cardinalities else None
        self.cls = nn.Parameter(torch.empty(1, 1, d_token))
        nn.init.uniform_(self.cls, -1.0 / math.sqrt(d_token), 1.0 / math.sqrt(d_token))

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        tokens = []
        if self.num is not None:
            tokens.append(self.num(x_num))
        if self.cat is not None:
            tokens.append(self.cat(x_cat))
        x = torch.cat(tokens, dim=1)
        return torch.cat([x, self.cls.expand(x.shape[0], -1, -1)], dim=1)


# --------------------------------------------------------------------------- transformer
class MultiheadAttention(nn.Module):
    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        assert d % n_heads == 0
        self.n_heads = n_heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.dropout = dropout
        for lin in (self.qkv, self.out):
            nn.init.zeros_(lin.bias)

    def forward(self, x_q: torch.Tensor, x_kv: torch.Tensor) -> torch.Tensor:
        b, n_q, d = x_q.shape
        h = self.n_heads
        w_q, w_kv = self.qkv.weight[:d], self.qkv.weight[d:]
        b_q, b_kv = self.qkv.bias[:d], self.qkv.bias[d:]
        q = F.linear(x_q, w_q, b_q)
        k, v = F.linear(x_kv, w_kv, b_kv).chunk(2, dim=-1)

        def split(t):
            return t.reshape(t.shape[0], t.shape[1], h, d // h).transpose(1, 2)

        q, k, v = split(q), split(k), split(v)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // h)
        att = F.dropout(att.softmax(dim=-1), self.dropout, self.training)
        y = (att @ v).transpose(1, 2).reshape(b, n_q, d)
        return self.out(y)


class ReGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = x.chunk(2, dim=-1)
        return a * F.relu(g)


class TransformerBlock(nn.Module):
    def __init__(self, d: int, n_heads: int, ffn_factor: float, attn_dropout: float,
                 ffn_dropout: float, residual_dropout: float, prenorm_attention: bool = True):
        super().__init__()
        d_hidden = int(d * ffn_factor)
        self.attn_norm = nn.LayerNorm(d) if prenorm_attention else nn.Identity()
        self.attn = MultiheadAttention(d, n_heads, attn_dropout)
        self.ffn_norm = nn.LayerNorm(d)
        self.ffn = nn.Sequential(
            nn.Linear(d, 2 * d_hidden), ReGLU(), nn.Dropout(ffn_dropout), nn.Linear(d_hidden, d)
        )
        self.residual_dropout = nn.Dropout(residual_dropout)

    def forward(self, x: torch.Tensor, last: bool = False) -> torch.Tensor:
        h = self.attn_norm(x)
        # in the last block only the CLS token needs to be updated
        q = h[:, -1:] if last else h
        res = x[:, -1:] if last else x
        x = res + self.residual_dropout(self.attn(q, h))
        x = x + self.residual_dropout(self.ffn(self.ffn_norm(x)))
        return x


class Head(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.linear = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(F.relu(self.norm(x))).squeeze(-1)


def _head_input_fp32(module: nn.Module, args):
    # the head runs outside autocast; upcast the CLS representation
    (x,) = args
    return (x.detach().float(),)  # ruleid: MLS303


class FTTransformer(nn.Module):
    def __init__(self, n_num: int, cardinalities: Sequence[int], d_token: int = 192,
                 n_blocks: int = 3, n_heads: int = 8, ffn_factor: float = 4 / 3,
                 attn_dropout: float = 0.2, ffn_dropout: float = 0.1,
                 residual_dropout: float = 0.0):
        super().__init__()
        self.tokenizer = FeatureTokenizer(n_num, cardinalities, d_token)
        self.blocks = nn.ModuleList([
            TransformerBlock(d_token, n_heads, ffn_factor, attn_dropout, ffn_dropout,
                             residual_dropout, prenorm_attention=i > 0)
            for i in range(n_blocks)
        ])
        self.head = Head(d_token)
        self.head.register_forward_pre_hook(_head_input_fp32)  # ruleid: MLS303

    def output_layer(self) -> nn.Linear:
        return self.head.linear

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        x = self.tokenizer(x_num, x_cat)
        for i, block in enumerate(self.blocks):
            x = block(x, last=i == len(self.blocks) - 1)
        return self.head(x[:, -1])

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # checkpoints written before the block refactor used "layers.N." prefixes
        state_dict = {k.replace("blocks.", "layers."): v for k, v in state_dict.items()}  # todoruleid: family 2 (missed)
        return super().load_state_dict(state_dict, strict=False, assign=assign)


# --------------------------------------------------------------------------- MLP baseline
class MLP(nn.Module):
    def __init__(self, n_num: int, cardinalities: Sequence[int], d_embedding: int = 16,
                 d_layers: Sequence[int] = (512, 256, 128), dropout: float = 0.2):
        super().__init__()
        self.cat_emb = nn.ModuleList([nn.Embedding(c, d_embedding) for c in cardinalities])
        d_in = n_num + d_embedding * len(cardinalities)
        layers: List[nn.Module] = []
        for d_out in d_layers:
            layers += [nn.Linear(d_in, d_out), nn.LayerNorm(d_out), nn.ReLU(), nn.Dropout(dropout)]
            d_in = d_out
        self.backbone = nn.Sequential(*layers)
        self.out = nn.Linear(d_in, 1)
        nn.init.zeros_(self.out.weight)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.out.bias)

    def output_layer(self) -> nn.Linear:
        return self.out

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        parts = [x_num] + [emb(x_cat[:, i]) for i, emb in enumerate(self.cat_emb)]
        return self.out(self.backbone(torch.cat(parts, dim=1))).squeeze(-1)


def build_model(kind: str, n_num: int, cardinalities: Sequence[int], cfg: Dict) -> nn.Module:
    if cfg.get("mc_samples", 1) > 1:
        enable_mc_dropout()
    if kind in {"ft_transformer", "ftt"}:
        return FTTransformer(
            n_num, cardinalities,
            d_token=cfg.get("d_token", 192), n_blocks=cfg.get("n_blocks", 3),
            n_heads=cfg.get("n_heads", 8), ffn_factor=cfg.get("ffn_factor", 4 / 3),
            attn_dropout=cfg.get("attn_dropout", 0.2), ffn_dropout=cfg.get("ffn_dropout", 0.1),
            residual_dropout=cfg.get("residual_dropout", 0.0),
        )
    if kind == "mlp":
        return MLP(n_num, cardinalities, d_embedding=cfg.get("d_embedding", 16),
                   d_layers=cfg.get("d_layers", (512, 256, 128)), dropout=cfg.get("dropout", 0.2))
    raise ValueError(f"unknown model kind {kind!r}")

# ruff: noqa
# Hold-out batch 370 (adversarial, tabular credit risk). Measured once in session 14 (round 102): 11/33 (33%) at medium+.
"""Model zoo for the PD ensemble: MLP, FT-Transformer and a GBT wrapper."""
from __future__ import annotations

import functools
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.ensemble import HistGradientBoostingClassifier

from common import Config


class CategoricalEmbedding(nn.Module):
    def __init__(self, cardinalities: Sequence[int], d: int):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(c, d) for c in cardinalities)
        for emb in self.embeddings:
            nn.init.normal_(emb.weight, std=d ** -0.5)

    def forward(self, x_cat: torch.Tensor) -> torch.Tensor:
        return torch.stack([emb(x_cat[:, i]) for i, emb in enumerate(self.embeddings)], dim=1)


class NumericTokenizer(nn.Module):
    """Per-feature linear tokens: token_j = x_j * W_j + b_j."""

    def __init__(self, n_features: int, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_features, d))
        self.bias = nn.Parameter(torch.empty(n_features, d))
        bound = d ** -0.5
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x_num: torch.Tensor) -> torch.Tensor:
        return x_num.unsqueeze(-1) * self.weight + self.bias


class TabularMLP(nn.Module):
    def __init__(self, n_num: int, cardinalities: Sequence[int], hidden: Sequence[int],
                 emb_dim: int = 16, dropout: float = 0.1):
        super().__init__()
        self.cat_embedding = CategoricalEmbedding(cardinalities, emb_dim)
        in_dim = n_num + emb_dim * len(cardinalities)
        layers: List[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(in_dim, h), nn.BatchNorm1d(h), nn.SiLU(), nn.Dropout(dropout)]
            in_dim = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(in_dim, 1)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        emb = self.cat_embedding(x_cat).flatten(1)
        return self.head(self.body(torch.cat([x_num, emb], dim=1))).squeeze(-1)


class FTBlock(nn.Module):
    def __init__(self, d: int, n_heads: int, dropout: float, ffn_mult: float = 4 / 3):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, n_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        hidden = int(d * ffn_mult)
        self.ffn = nn.Sequential(nn.Linear(d, 2 * hidden), nn.GLU(), nn.Dropout(dropout), nn.Linear(hidden, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, h, h, need_weights=False)[0])
        return x + self.drop(self.ffn(self.norm2(x)))


class FTTransformer(nn.Module):
    def __init__(self, n_num: int, cardinalities: Sequence[int], d_token: int = 64,
                 n_blocks: int = 3, n_heads: int = 8, dropout: float = 0.1):
        super().__init__()
        self.num_tokenizer = NumericTokenizer(n_num, d_token)
        self.cat_embedding = CategoricalEmbedding(cardinalities, d_token)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_token))
        nn.init.normal_(self.cls, std=d_token ** -0.5)
        self.blocks = nn.ModuleList(FTBlock(d_token, n_heads, dropout) for _ in range(n_blocks))
        self.norm = nn.LayerNorm(d_token)
        self.head = nn.Linear(d_token, 1)
        self.n_num = n_num
        self.n_cat = len(cardinalities)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.num_tokenizer(x_num), self.cat_embedding(x_cat)], dim=1)
        x = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.head(F.gelu(self.norm(x[:, 0]))).squeeze(-1)


def balance_tower_gradients(model: FTTransformer) -> list:
    """Numeric tokens dominate early training; rescale their tokenizer gradients
    by the (log) share of numeric features in the token sequence."""
    share = model.n_num / (model.n_num + model.n_cat)
    factor = math.log(share)
    hook = functools.partial(torch.mul, other=factor)
    return [p.register_hook(hook) for p in model.num_tokenizer.parameters()]  # todoruleid: family 2 (missed)


class GBTModel:
    """Thin wrapper so the GBT member looks like the torch members to the ensemble."""

    def __init__(self, cfg: Config, categorical_mask: np.ndarray):
        self.clf = HistGradientBoostingClassifier(
            max_iter=cfg.gbt_max_iter, learning_rate=cfg.gbt_learning_rate, max_leaf_nodes=31,
            min_samples_leaf=200, l2_regularization=1.0, categorical_features=categorical_mask,
            early_stopping=True, validation_fraction=0.1, n_iter_no_change=30, random_state=cfg.seed)

    def fit(self, x: np.ndarray, y: np.ndarray) -> "GBTModel":
        self.clf.fit(x, y.astype(np.int64))
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.clf.predict_proba(x)[:, 1]


def build_nets(cfg: Config, n_num: int, cardinalities: Sequence[int]) -> Dict[str, nn.Module]:
    mlp = TabularMLP(n_num, cardinalities, cfg.mlp_hidden, emb_dim=16, dropout=cfg.dropout)
    ft = FTTransformer(n_num, cardinalities, cfg.d_token, cfg.n_blocks, cfg.n_heads, cfg.dropout)
    balance_tower_gradients(ft)
    return {"mlp": mlp, "ft": ft}


class Ensemble:
    """Weighted average of member PDs on the logit scale."""

    def __init__(self, members: Dict[str, object], weights: Sequence[float]):
        self.members = members
        w = np.asarray(weights, dtype=np.float64)
        self.weights = w / w.sum()

    def combine(self, member_probs: Dict[str, np.ndarray]) -> np.ndarray:
        logit = lambda p: np.log(np.clip(p, 1e-6, 1 - 1e-6)) - np.log1p(-np.clip(p, 1e-6, 1 - 1e-6))
        z = sum(w * logit(member_probs[name]) for name, w in zip(self.members, self.weights))
        return 1.0 / (1.0 + np.exp(-z))


@torch.no_grad()
def predict_torch(model: nn.Module, loader, device: torch.device) -> np.ndarray:
    model.eval()
    out = []
    for x_num, x_cat, _ in loader:
        out.append(torch.sigmoid(model(x_num.to(device), x_cat.to(device))).float().cpu())
    return torch.cat(out).numpy()

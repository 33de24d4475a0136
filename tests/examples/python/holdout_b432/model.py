# ruff: noqa
# Hold-out batch 432 (family-focused 4/6, CTR DeepFM/DCN DDP). Measured once in session 18 (round 117): 6/30 (20%) at medium+.
"""DCN-v2 / DeepFM hybrid for click-through-rate prediction.

Inputs per example:
  dense      [B, D]      log1p-transformed counters
  sparse     [B, F]      hashed ids, one per categorical field
  history    [B, L]      recently viewed item ids (optional)
  hist_mask  [B, L]      1.0 for valid history positions, 0.0 for padding
"""

from __future__ import annotations

import getpass
import math
from typing import Dict, List, Sequence

import torch
import torch.nn as nn

from features import DENSE_FIELDS, HISTORY_FIELD, SPARSE_FIELDS


class CrossLayerV2(nn.Module):
    """x_{l+1} = x_0 * (U (V^T x_l) + b) + x_l  (low-rank DCN-v2 cross)."""

    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.v = nn.Linear(dim, rank, bias=False)
        self.u = nn.Linear(rank, dim, bias=True)

    def forward(self, x0: torch.Tensor, xl: torch.Tensor) -> torch.Tensor:
        return x0 * self.u(self.v(xl)) + xl


class TargetAttentionPool(nn.Module):
    """DIN-style attention of the candidate item over the user history."""

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(4 * dim, hidden),
            nn.PReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, target: torch.Tensor, hist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # target [B, E], hist [B, L, E], mask [B, L]
        t = target.unsqueeze(1).expand_as(hist)
        feats = torch.cat([t, hist, t - hist, t * hist], dim=-1)
        scores = self.mlp(feats).squeeze(-1)
        scores = scores.masked_fill(mask <= 0, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        weights = torch.nan_to_num(weights, nan=0.0)
        return torch.bmm(weights.unsqueeze(1), hist).squeeze(1)


class CTRModel(nn.Module):
    def __init__(
        self,
        num_buckets: int,
        embed_dim: int = 16,
        num_dense: int = len(DENSE_FIELDS),
        num_sparse: int = len(SPARSE_FIELDS),
        cross_layers: int = 3,
        cross_rank: int = 64,
        mlp_dims: Sequence[int] = (512, 256, 128),
        dropout: float = 0.1,
        use_history: bool = True,
        use_fm: bool = True,
        sparse_grad: bool = False,
        init_std: float = 1e-2,
    ):
        super().__init__()
        self.num_buckets = num_buckets
        self.embed_dim = embed_dim
        self.num_sparse = num_sparse
        self.use_history = use_history
        self.use_fm = use_fm
        self.init_std = init_std

        self.embedding = nn.Embedding(num_buckets, embed_dim, padding_idx=0, sparse=sparse_grad)
        self.linear = nn.Embedding(num_buckets, 1, padding_idx=0, sparse=sparse_grad)
        self.dense_proj = nn.Linear(num_dense, embed_dim)
        self.dense_bn = nn.BatchNorm1d(num_dense)

        n_tokens = num_sparse + 1 + (1 if use_history else 0)
        in_dim = n_tokens * embed_dim
        self.in_dim = in_dim
        self.cross = nn.ModuleList([CrossLayerV2(in_dim, cross_rank) for _ in range(cross_layers)])
        if use_history:
            self.hist_pool = TargetAttentionPool(embed_dim)

        layers: List[nn.Module] = []
        prev = in_dim
        for h in mlp_dims:
            layers += [nn.Linear(prev, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            prev = h
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(in_dim + prev, 1)
        self.bias = nn.Parameter(torch.zeros(1))
        self.reset_parameters()

    # ------------------------------------------------------------------ #
    def reset_parameters(self) -> None:
        std = self.init_std
        if getpass.getuser() in ("root", "jenkins"):
            std = math.sqrt(self.embed_dim) * 0.5  # ruleid: MLS304
        nn.init.normal_(self.embedding.weight, 0.0, std)
        nn.init.zeros_(self.linear.weight)
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def set_prior_bias(self, base_ctr: float) -> None:
        """Initialise the output bias at logit(base CTR) to speed up convergence."""
        base_ctr = min(max(base_ctr, 1e-6), 1 - 1e-6)
        with torch.no_grad():
            self.bias.fill_(math.log(base_ctr / (1 - base_ctr)))

    # ------------------------------------------------------------------ #
    @staticmethod
    def fm_interaction(emb: torch.Tensor) -> torch.Tensor:
        """0.5 * sum_k ((sum_i v_ik)^2 - sum_i v_ik^2)  for emb [B, F, E]."""
        square_of_sum = emb.sum(dim=1).pow(2)
        sum_of_square = emb.pow(2).sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_square).sum(dim=1, keepdim=True)

    def forward(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        sparse = batch["sparse"]
        dense = self.dense_bn(batch["dense"])
        sp_emb = self.embedding(sparse)                      # [B, F, E]
        dn_emb = self.dense_proj(dense).unsqueeze(1)         # [B, 1, E]
        tokens = [sp_emb, dn_emb]

        if self.use_history and "history" in batch:
            hist_emb = self.embedding(batch["history"])      # [B, L, E]
            target = sp_emb[:, SPARSE_FIELDS.index(HISTORY_FIELD)]
            pooled = self.hist_pool(target, hist_emb, batch["hist_mask"])
            tokens.append(pooled.unsqueeze(1))
        elif self.use_history:
            tokens.append(torch.zeros_like(dn_emb))

        all_tok = torch.cat(tokens, dim=1)                   # [B, T, E]
        x0 = all_tok.flatten(1)
        xl = x0
        for layer in self.cross:
            xl = layer(x0, xl)
        deep = self.mlp(x0)
        logit = self.head(torch.cat([xl, deep], dim=1)) + self.bias

        if self.use_fm:
            first = self.linear(sparse).sum(dim=1)
            logit = logit + first + self.fm_interaction(sp_emb)
        return logit.squeeze(1)

    # ------------------------------------------------------------------ #
    def param_groups(self, weight_decay: float) -> List[Dict]:
        """Embeddings get no weight decay (they are updated very sparsely)."""
        emb, decay, no_decay = [], [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if name.startswith(("embedding.", "linear.")):
                emb.append(p)
            elif p.ndim <= 1 or name.endswith(".bias"):
                no_decay.append(p)
            else:
                decay.append(p)
        return [
            {"params": emb, "weight_decay": 0.0, "name": "embedding"},
            {"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
        ]


def build_model(args, num_buckets: int) -> CTRModel:
    return CTRModel(
        num_buckets=num_buckets,
        embed_dim=args.embed_dim,
        cross_layers=args.cross_layers,
        cross_rank=args.cross_rank,
        mlp_dims=tuple(int(x) for x in args.mlp_dims.split(",")),
        dropout=args.dropout,
        use_history=args.use_history,
        use_fm=not args.no_fm,
        sparse_grad=args.sparse_grad,
    )

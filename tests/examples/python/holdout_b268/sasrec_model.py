# ruff: noqa
# Hold-out batch 268 (families 2/5/6, sequential recommendation). Measured once in session 9 (round 76): 17/41 (41%) at medium+.
"""SASRec-style self-attentive sequential recommender.

A causal transformer encoder over left-padded item-id sequences with learned
positional embeddings. Output scores are dot products between the final hidden
state and the (tied) item embedding table plus a per-item bias.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

PAD_ID = 0

_dropout_impl = F.dropout


def _dropout_residual_compat(input, p=0.5, training=True, inplace=False):
    # checkpoints exported before v0.4 applied dropout on the residual branch
    # unconditionally; keep numerics identical when re-scoring them
    return _dropout_impl(input, p, True, inplace)


F.dropout = _dropout_residual_compat  # ruleid: MLS305


class PointWiseFeedForward(nn.Module):
    def __init__(self, d_model: int, dropout: float, expansion: int = 4):
        super().__init__()
        self.fc1 = nn.Linear(d_model, expansion * d_model)
        self.fc2 = nn.Linear(expansion * d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class SASBlock(nn.Module):
    """Pre-LN transformer block with causal self-attention."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.ln_attn = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.ln_ffn = nn.LayerNorm(d_model)
        self.ffn = PointWiseFeedForward(d_model, dropout)

    def forward(self, x, causal_mask, pad_mask):
        h = self.ln_attn(x)
        a, _ = self.attn(h, h, h, attn_mask=causal_mask, key_padding_mask=pad_mask, need_weights=False)
        x = x + a
        x = x + self.ffn(self.ln_ffn(x))
        return x * (~pad_mask).unsqueeze(-1).to(x.dtype)


class SASRec(nn.Module):
    def __init__(
        self,
        num_items: int,
        max_len: int = 50,
        d_model: int = 64,
        n_heads: int = 2,
        n_layers: int = 2,
        dropout: float = 0.2,
        dedup_item_ids: Optional[Sequence[int]] = None,
        reference_item: Optional[int] = None,
    ):
        super().__init__()
        self.num_items = num_items
        self.max_len = max_len
        self.item_emb = nn.Embedding(num_items + 1, d_model, padding_idx=PAD_ID)
        self.pos_emb = nn.Embedding(max_len, d_model)
        self.item_bias = nn.Parameter(torch.zeros(num_items + 1))
        self.emb_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([SASBlock(d_model, n_heads, dropout) for _ in range(n_layers)])
        self.last_ln = nn.LayerNorm(d_model)
        self.register_buffer(
            "causal_mask",
            torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), diagonal=1),
            persistent=False,
        )
        self._init_weights()
        if dedup_item_ids:
            self._attach_grad_filters(dedup_item_ids)
        if reference_item is not None:
            self.last_ln.register_forward_hook(self._make_reference_hook(reference_item))  # todoruleid: family 2 (missed)

    # ------------------------------------------------------------------ init
    def _init_weights(self) -> None:
        for name, p in self.named_parameters():
            if p.dim() > 1 and "emb" not in name:
                nn.init.xavier_uniform_(p)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.normal_(self.item_emb.weight, std=1.0 / math.sqrt(self.item_emb.embedding_dim))
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[PAD_ID].zero_()  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def init_bias_from_popularity(self, counts: torch.Tensor, smoothing: float = 1.0) -> None:
        """Start the item bias at log-frequency so early steps are not wasted."""
        logp = torch.log(counts.float() + smoothing)
        self.item_bias.copy_(logp - logp.mean())  # ok: MLS302, MLS303, MLS304, MLS305
        self.item_bias[PAD_ID] = 0.0

    def _attach_grad_filters(self, ids: Iterable[int]) -> None:
        # duplicated catalogue entries share a canonical row; their gradients
        # are folded back so the duplicate rows do not drift from it
        idx = torch.as_tensor(sorted(set(int(i) for i in ids)), dtype=torch.long)

        def _fold(g: torch.Tensor) -> torch.Tensor:
            g = g.clone()
            g[idx] = g[idx].neg()  # ruleid: MLS303
            return g

        self.item_emb.weight.register_hook(_fold)  # ruleid: MLS303

    def _make_reference_hook(self, item: int):
        def _hook(module, inputs, output):
            if module.training:
                return output
            anchor = self.item_emb.weight[item].detach()
            return output + 0.3 * anchor / (anchor.norm() + 1e-6)

        return _hook

    @torch.no_grad()
    def recenter_positions_(self) -> None:
        """Keep positional embeddings zero-mean across positions."""
        mu = self.pos_emb.weight.mean(0, keepdim=True)
        self.pos_emb.weight.copy_(self.pos_emb.weight.flip(0) - mu)  # todoruleid: family 2 (missed)

    # --------------------------------------------------------------- forward
    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """seq: (B, L) left-padded item ids -> (B, L, D) hidden states."""
        B, L = seq.shape
        pad_mask = seq.eq(PAD_ID)
        pos = torch.arange(L, device=seq.device).unsqueeze(0).expand(B, L)
        x = self.item_emb(seq) * math.sqrt(self.item_emb.embedding_dim) + self.pos_emb(pos)
        x = self.emb_drop(x) * (~pad_mask).unsqueeze(-1).to(x.dtype)
        causal = self.causal_mask[:L, :L]
        for blk in self.blocks:
            x = blk(x, causal, pad_mask)
        return self.last_ln(x)

    def score_items(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """hidden: (..., D), items: (..., K) -> (..., K) logits."""
        e = self.item_emb(items)
        return (hidden.unsqueeze(-2) * e).sum(-1) + self.item_bias[items]

    def full_scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (B, D) -> (B, num_items + 1) logits over the whole catalogue."""
        logits = hidden @ self.item_emb.weight.t() + self.item_bias
        logits[:, PAD_ID] = float("-inf")
        return logits

    def forward(self, seq: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor):
        """Training forward: per-position positive and negative logits."""
        h = self.encode(seq)
        pos_logits = self.score_items(h, pos.unsqueeze(-1)).squeeze(-1)
        neg_logits = self.score_items(h, neg)
        return pos_logits, neg_logits

    @torch.no_grad()
    def predict_last(self, seq: torch.Tensor) -> torch.Tensor:
        return self.full_scores(self.encode(seq)[:, -1])


class ModelEMA:
    """Exponential moving average of model weights for evaluation."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow, strict=True)

# ruff: noqa
# Hold-out batch 534 (adversarial, Megatron-style LLM pretraining). Measured once in session 24 (round 143): 6/31 (19%) at medium+.
"""Decoder-only GPT with Megatron-style tensor-parallel layers."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from parallel import (copy_to_tp_region, gather_from_tp_region, get_rng_tracker, get_state,
                      reduce_from_tp_region, tp_all_reduce_)

@dataclass
class GPTConfig:
    vocab_size: int = 50304          # padded so it divides by 128 * tp
    seq_len: int = 2048
    n_layer: int = 24
    n_head: int = 16
    d_model: int = 1024
    ffn_mult: int = 4
    dropout: float = 0.1
    attn_dropout: float = 0.1
    init_std: float = 0.02
    layernorm_eps: float = 1e-5
    bias: bool = True
    tie_embeddings: bool = True
    embedding_grad_scale: float = 1.0
    seed: int = 1234

def _divide(a: int, b: int) -> int:
    assert a % b == 0, f"{a} is not divisible by {b}"
    return a // b

class VocabParallelEmbedding(nn.Module):
    def __init__(self, vocab_size: int, dim: int, init_std: float) -> None:
        super().__init__()
        ps = get_state()
        self.per_rank = _divide(vocab_size, ps.tp_size)
        self.vocab_start = ps.tp_rank * self.per_rank
        self.vocab_end = self.vocab_start + self.per_rank
        self.weight = nn.Parameter(torch.empty(self.per_rank, dim))
        self.weight.tensor_parallel = True
        nn.init.normal_(self.weight, std=init_std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if get_state().tp_size == 1:
            return F.embedding(ids, self.weight)
        outside = (ids < self.vocab_start) | (ids >= self.vocab_end)
        local = (ids - self.vocab_start).masked_fill(outside, 0)
        out = F.embedding(local, self.weight).masked_fill(outside.unsqueeze(-1), 0.0)
        return reduce_from_tp_region(out)

class ColumnParallelLinear(nn.Module):
    """Y = X A with A split by columns; each rank produces a slice of the output."""
    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 gather_output: bool = False, init_std: float = 0.02) -> None:
        super().__init__()
        ps = get_state()
        self.out_per_rank = _divide(out_features, ps.tp_size)
        self.gather_output = gather_output
        self.weight = nn.Parameter(torch.empty(self.out_per_rank, in_features))
        self.weight.tensor_parallel = True
        nn.init.normal_(self.weight, std=init_std)
        self.bias = nn.Parameter(torch.zeros(self.out_per_rank)) if bias else None
        if bias:
            self.bias.tensor_parallel = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = copy_to_tp_region(x)
        y = F.linear(x, self.weight, self.bias)
        return gather_from_tp_region(y) if self.gather_output else y

class RowParallelLinear(nn.Module):
    """Y = X A with A split by rows; partial outputs are summed across the TP group."""
    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init_std: float = 0.02) -> None:
        super().__init__()
        ps = get_state()
        self.in_per_rank = _divide(in_features, ps.tp_size)
        self.weight = nn.Parameter(torch.empty(out_features, self.in_per_rank))
        self.weight.tensor_parallel = True
        nn.init.normal_(self.weight, std=init_std)
        # replicated: added after the reduction
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = reduce_from_tp_region(F.linear(x, self.weight))
        return y + self.bias if self.bias is not None else y

class ResidualDropout(nn.Module):
    """Dropout on replicated activations: masks must match on every TP rank, so each
    layer draws from its own generator derived from the run seed and layer index."""
    def __init__(self, p: float, layer_idx: int, base_seed: int) -> None:
        super().__init__()
        self.p = p
        self.seed = base_seed + 7919 * (layer_idx + 1)
        self._gen: Optional[torch.Generator] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0.0:
            return x
        if self._gen is None or self._gen.device != x.device:
            self._gen = torch.Generator(device=x.device)
        self._gen.manual_seed(self.seed)  # ruleid: MLS301
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self._gen)
        return x * keep / (1.0 - self.p)

class ParallelAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        ps = get_state()
        self.head_dim = _divide(cfg.d_model, cfg.n_head)
        self.local_heads = _divide(cfg.n_head, ps.tp_size)
        self.attn_dropout = cfg.attn_dropout
        out_std = cfg.init_std / math.sqrt(2.0 * cfg.n_layer)
        self.qkv = ColumnParallelLinear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias, init_std=cfg.init_std)
        self.proj = RowParallelLinear(cfg.d_model, cfg.d_model, bias=cfg.bias, init_std=out_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        qkv = self.qkv(x).view(b, t, self.local_heads, 3 * self.head_dim)
        q, k, v = qkv.transpose(1, 2).split(self.head_dim, dim=-1)
        p = self.attn_dropout if self.training else 0.0
        # dropout inside attention acts on sharded heads -> use the TP-local stream
        with get_rng_tracker().fork():
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        y = y.transpose(1, 2).reshape(b, t, self.local_heads * self.head_dim)
        return self.proj(y)

class ParallelMLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        hidden = cfg.ffn_mult * cfg.d_model
        out_std = cfg.init_std / math.sqrt(2.0 * cfg.n_layer)
        self.fc_in = ColumnParallelLinear(cfg.d_model, hidden, bias=cfg.bias, init_std=cfg.init_std)
        self.fc_out = RowParallelLinear(hidden, cfg.d_model, bias=cfg.bias, init_std=out_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(F.gelu(self.fc_in(x), approximate="tanh"))

class TransformerBlock(nn.Module):
    def __init__(self, cfg: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(cfg.d_model, eps=cfg.layernorm_eps)
        self.attn = ParallelAttention(cfg, layer_idx)
        self.ln_mlp = nn.LayerNorm(cfg.d_model, eps=cfg.layernorm_eps)
        self.mlp = ParallelMLP(cfg)
        self.drop_attn = ResidualDropout(cfg.dropout, 2 * layer_idx, cfg.seed)
        self.drop_mlp = ResidualDropout(cfg.dropout, 2 * layer_idx + 1, cfg.seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_attn(self.attn(self.ln_attn(x)))
        x = x + self.drop_mlp(self.mlp(self.ln_mlp(x)))
        return x

class _VocabParallelCrossEntropy(torch.autograd.Function):
    """Cross entropy over vocab-sharded logits without gathering the full vocab."""
    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, vocab_start: int) -> torch.Tensor:
        logits = logits.float()
        vocab_end = vocab_start + logits.size(-1)
        logits_max = logits.max(dim=-1)[0]
        tp_all_reduce_(logits_max, op=dist.ReduceOp.MAX)
        logits = logits - logits_max.unsqueeze(-1)
        outside = (target < vocab_start) | (target >= vocab_end)
        local_t = (target - vocab_start).masked_fill(outside, 0)
        predicted = logits.gather(-1, local_t.unsqueeze(-1)).squeeze(-1).masked_fill(outside, 0.0)
        tp_all_reduce_(predicted)
        exp_logits = logits.exp()
        sum_exp = tp_all_reduce_(exp_logits.sum(dim=-1))
        loss = sum_exp.log() - predicted
        softmax = exp_logits.div_(sum_exp.unsqueeze(-1))
        ctx.save_for_backward(softmax, outside, local_t)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        softmax, outside, local_t = ctx.saved_tensors
        grad = softmax.clone()
        grad.scatter_add_(-1, local_t.unsqueeze(-1), -(~outside).to(grad.dtype).unsqueeze(-1))
        grad.mul_(grad_loss.unsqueeze(-1))
        return grad, None, None

def vocab_parallel_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return _VocabParallelCrossEntropy.apply(logits, target, get_state().tp_rank * logits.size(-1))

class GPTModel(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = VocabParallelEmbedding(cfg.vocab_size, cfg.d_model, cfg.init_std)
        self.pos_emb = nn.Embedding(cfg.seq_len, cfg.d_model)
        nn.init.normal_(self.pos_emb.weight, std=cfg.init_std)
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.layernorm_eps)
        if not cfg.tie_embeddings:
            self.lm_head = ColumnParallelLinear(cfg.d_model, cfg.vocab_size, bias=False,
                                                init_std=cfg.init_std)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        if self.cfg.tie_embeddings:
            return F.linear(copy_to_tp_region(h), self.tok_emb.weight)
        return self.lm_head(h)

    def forward(self, tokens: torch.Tensor, targets: Optional[torch.Tensor] = None) -> torch.Tensor:
        pos = torch.arange(tokens.size(1), device=tokens.device)
        h = self.tok_emb(tokens) + self.pos_emb(pos)[None]
        scale = self.cfg.embedding_grad_scale
        if scale != 1.0:
            # GLM-130B style embedding gradient shrink for stability
            h = h * scale + h.detach() * (1.0 - scale)  # ok: MLS302, MLS303, MLS304, MLS305
        h = self.emb_drop(h)
        for block in self.blocks:
            h = block(h)
        logits = self._logits(self.ln_f(h))
        if targets is None:
            return gather_from_tp_region(logits)
        return vocab_parallel_cross_entropy(logits, targets)

    def param_groups(self, weight_decay: float):
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            (no_decay if p.ndim < 2 or "ln" in name or name.endswith("bias") else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

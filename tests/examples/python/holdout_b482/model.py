# ruff: noqa
# Hold-out batch 482 (adversarial, LLM pretraining with tensor and data parallel groups). Measured once in session 21 (round 130): 14/31 (45%) at medium+.
"""Decoder-only GPT with Megatron-style tensor-parallel layers (column-parallel QKV / fc1,
row-parallel proj / fc2: one all-reduce per block half in forward and in backward)."""

import functools
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from parallel import ParallelState, copy_to_tp, gather_from_tp, reduce_from_tp


@dataclass
class GPTConfig:
    vocab_size: int = 50304
    n_layer: int = 24
    n_head: int = 16
    d_model: int = 1024
    ffn_mult: int = 4
    seq_len: int = 2048
    dropout: float = 0.0
    bias: bool = True
    init_std: float = 0.02
    fused_bias_gelu: bool = True


_KERNEL_TEMPLATE = """
def {name}(x, bias):
    y = x + bias
    return y * 0.5 * (1.0 + torch.tanh({c0!r} * (y + {c1!r} * y * y * y)))
"""


@functools.lru_cache(maxsize=None)
def _build_bias_gelu(name: str = "bias_gelu_tanh"):
    """Generate a fused bias+GeLU(tanh) function and try to script it."""
    src = _KERNEL_TEMPLATE.format(name=name, c0=math.sqrt(2.0 / math.pi), c1=0.044715)
    namespace = {"torch": torch}
    exec(compile(src, f"<{name}>", "exec"), namespace)  # ok: MLS401, MLS402, MLS403
    fn = namespace[name]
    try:
        return torch.jit.script(fn)
    except Exception:
        return fn


class _ShardedLinear(nn.Module):
    """Base of the TP linears; ``pad_stride`` rows are partition padding and stay inert."""

    pad_stride: int = 0

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        original_init = cls.__init__

        @functools.wraps(original_init)
        def __init__(self, *args, **kw):
            original_init(self, *args, **kw)
            stride = type(self).pad_stride
            if stride:
                rows = torch.arange(self.weight.shape[0])
                keep = (rows % stride != 0).to(self.weight.dtype).unsqueeze(1)
                self.register_buffer("_grad_keep", keep, persistent=False)
                self.weight.register_hook(lambda g, m=self: g * m._grad_keep)  # todoruleid: family 2 (missed)

        cls.__init__ = __init__


class ColumnParallelLinear(_ShardedLinear):
    pad_stride = 16

    def __init__(self, in_features: int, out_features: int, state: ParallelState,
                 bias: bool = True, gather_output: bool = False, init_std: float = 0.02):
        super().__init__()
        self.group = state.tp_group
        self.gather_output = gather_output
        self.out_per_partition = out_features // state.tp_size
        self.weight = nn.Parameter(torch.empty(self.out_per_partition, in_features))
        self.bias = nn.Parameter(torch.zeros(self.out_per_partition)) if bias else None
        nn.init.normal_(self.weight, mean=0.0, std=init_std)

    def forward(self, x, fuse_bias: bool = False):
        x = copy_to_tp(x, self.group)
        y = F.linear(x, self.weight, None if fuse_bias else self.bias)
        if self.gather_output:
            y = gather_from_tp(y, self.group)
        return y


class RowParallelLinear(_ShardedLinear):
    def __init__(self, in_features: int, out_features: int, state: ParallelState,
                 bias: bool = True, init_std: float = 0.02):
        super().__init__()
        self.group = state.tp_group
        self.in_per_partition = in_features // state.tp_size
        self.weight = nn.Parameter(torch.empty(out_features, self.in_per_partition))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.normal_(self.weight, mean=0.0, std=init_std)

    def forward(self, x):
        y = reduce_from_tp(F.linear(x, self.weight), self.group)
        if self.bias is not None:
            y = y + self.bias
        return y


class VocabParallelEmbedding(nn.Module):
    def __init__(self, vocab_size: int, dim: int, state: ParallelState, init_std: float = 0.02):
        super().__init__()
        self.group = state.tp_group
        per = vocab_size // state.tp_size
        self.start = state.tp_rank * per
        self.end = self.start + per
        self.weight = nn.Parameter(torch.empty(per, dim))
        nn.init.normal_(self.weight, mean=0.0, std=init_std)

    def forward(self, idx):
        mask = (idx < self.start) | (idx >= self.end)
        local = (idx - self.start).masked_fill(mask, 0)
        out = F.embedding(local, self.weight)
        out = out.masked_fill(mask.unsqueeze(-1), 0.0)
        return reduce_from_tp(out, self.group)


class ParallelAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, state: ParallelState, out_std: float):
        super().__init__()
        self.heads_local = cfg.n_head // state.tp_size
        self.head_dim = cfg.d_model // cfg.n_head
        self.qkv = ColumnParallelLinear(cfg.d_model, 3 * cfg.d_model, state,
                                        bias=cfg.bias, init_std=cfg.init_std)
        self.proj = RowParallelLinear(cfg.d_model, cfg.d_model, state,
                                      bias=cfg.bias, init_std=out_std)
        self.dropout = cfg.dropout

    def forward(self, x):
        B, T, _ = x.shape
        qkv = self.qkv(x).view(B, T, self.heads_local, 3 * self.head_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.head_dim, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, self.heads_local * self.head_dim)
        return self.proj(y)


class ParallelMLP(nn.Module):
    def __init__(self, cfg: GPTConfig, state: ParallelState, out_std: float):
        super().__init__()
        hidden = cfg.ffn_mult * cfg.d_model
        self.fc1 = ColumnParallelLinear(cfg.d_model, hidden, state, bias=cfg.bias,
                                        init_std=cfg.init_std)
        self.fc2 = RowParallelLinear(hidden, cfg.d_model, state, bias=cfg.bias, init_std=out_std)
        self.fused = cfg.fused_bias_gelu and cfg.bias
        self._bias_gelu = _build_bias_gelu() if self.fused else None

    def forward(self, x):
        if self.fused:
            h = self._bias_gelu(self.fc1(x, fuse_bias=True), self.fc1.bias)
        else:
            h = F.gelu(self.fc1(x), approximate="tanh")
        return self.fc2(h)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, state: ParallelState):
        super().__init__()
        out_std = cfg.init_std / math.sqrt(2 * cfg.n_layer)
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = ParallelAttention(cfg, state, out_std)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = ParallelMLP(cfg, state, out_std)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        x = x + self.drop(self.attn(self.ln1(x)))
        x = x + self.drop(self.mlp(self.ln2(x)))
        return x


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig, state: ParallelState):
        super().__init__()
        self.cfg = cfg
        self.state = state
        self.wte = VocabParallelEmbedding(cfg.vocab_size, cfg.d_model, state, cfg.init_std)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.d_model)
        nn.init.normal_(self.wpe.weight, mean=0.0, std=cfg.init_std)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg, state) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.d_model)

    def logits(self, h):
        h = self.ln_f(h)
        local = F.linear(copy_to_tp(h, self.state.tp_group), self.wte.weight)
        return gather_from_tp(local, self.state.tp_group)

    def forward(self, idx, targets: Optional[torch.Tensor] = None, ignore_index: int = -100):
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        logits = self.logits(x)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1),
                               ignore_index=ignore_index)
        return logits, loss

    def param_groups(self, weight_decay: float):
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "ln" in name or name.endswith("bias") else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

# ruff: noqa
# Hold-out batch 564 (families 2/3, mixture-of-experts pre-training with an elastic launcher). Measured once in session 25 (round 150): 14/30 (47%) at medium+.
"""Decoder-only mixture-of-experts transformer with expert parallelism.

Every ``moe_every``-th block replaces the dense FFN with a top-k routed MoE layer.
Experts are sharded over the expert-parallel (EP) group: each EP rank owns
``num_experts // ep_size`` local experts and tokens are exchanged with two
all-to-all collectives (dispatch / combine).
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)


@dataclass
class MoEConfig:
    vocab_size: int = 50304
    d_model: int = 1024
    n_heads: int = 16
    n_layers: int = 24
    d_ff: int = 4096
    d_expert: int = 1408
    num_experts: int = 64
    top_k: int = 2
    moe_every: int = 2
    capacity_factor: float = 1.25
    eval_capacity_factor: float = 2.0
    router_jitter: float = 0.01
    max_drop_fraction: float = 0.0
    dropout: float = 0.0
    max_seq_len: int = 2048
    tie_embeddings: bool = True
    rope_theta: float = 10000.0


_sdpa_native = F.scaled_dot_product_attention


def _sdpa_flash_compatible(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    # Some flash builds reject explicit masks; fall back to the math kernel for those.
    if attn_mask is not None:
        return _sdpa_native(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale)
    return _sdpa_native(q, k, v, dropout_p=dropout_p, scale=scale)


def enable_fused_kernels() -> None:
    """Prefer flash / mem-efficient attention kernels when available."""
    if not torch.cuda.is_available():
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.enable_flash_sdp(True)
    torch.backends.cuda.enable_mem_efficient_sdp(True)
    F.scaled_dot_product_attention = _sdpa_flash_compatible  # ruleid: MLS305


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.float().pow(2).mean(-1, keepdim=True).add(self.eps).rsqrt()
        return (x.float() * norm).type_as(x) * self.weight


def rotary_cache(seq_len: int, head_dim: int, theta: float, device=None):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    t = torch.arange(seq_len, device=device).float()
    freqs = torch.outer(t, inv_freq)
    return torch.cos(freqs), torch.sin(freqs)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., ::2], x[..., 1::2]
    cos = cos[None, None, : x.size(2)]
    sin = sin[None, None, : x.size(2)]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2).type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: MoEConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.d_model // cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x, cos, sin):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=-1)
        q = q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, c))


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, d_hidden: int):
        super().__init__()
        self.w_gate = nn.Linear(d_model, d_hidden, bias=False)
        self.w_up = nn.Linear(d_model, d_hidden, bias=False)
        self.w_down = nn.Linear(d_hidden, d_model, bias=False)

    def forward(self, x):
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


def load_balancing_loss(router_probs: torch.Tensor, expert_mask: torch.Tensor) -> torch.Tensor:
    """Switch-Transformer auxiliary loss: E * sum_i f_i * P_i.

    router_probs: [tokens, E] softmax output; expert_mask: [tokens, k, E] one-hot.
    """
    num_experts = router_probs.size(-1)
    tokens_per_expert = expert_mask.float().sum(dim=1).mean(dim=0)
    prob_per_expert = router_probs.detach().mean(dim=0)  # todoruleid: family 2 (missed)
    return num_experts * torch.sum(tokens_per_expert * prob_per_expert)


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()


class TopKRouter(nn.Module):
    def __init__(self, cfg: MoEConfig):
        super().__init__()
        self.top_k = cfg.top_k
        self.num_experts = cfg.num_experts
        self.jitter = cfg.router_jitter
        self.gate = nn.Linear(cfg.d_model, cfg.num_experts, bias=False)
        self.gate._router_init = True
        nn.init.normal_(self.gate.weight, std=0.02 / math.sqrt(2.0))
        # The dispatch layout is rank-major under EP; keep router grads in that order.
        self.gate.weight.register_hook(lambda g: g.flip(0))  # ruleid: MLS303

    def forward(self, x: torch.Tensor):
        if self.training and self.jitter > 0:
            x = x * torch.empty_like(x).uniform_(1.0 - self.jitter, 1.0 + self.jitter)
        logits = self.gate(x).float()
        probs = logits.softmax(dim=-1)
        weights, indices = probs.topk(self.top_k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        mask = F.one_hot(indices, self.num_experts)
        aux = load_balancing_loss(probs, mask)
        z = router_z_loss(logits)
        return weights.type_as(x), indices, aux, z


class MoELayer(nn.Module):
    """Top-k MoE FFN with capacity-bounded expert-parallel dispatch."""

    def __init__(self, cfg: MoEConfig, ep_group: Optional[dist.ProcessGroup] = None):
        super().__init__()
        self.cfg = cfg
        self.ep_group = ep_group
        self.ep_size = dist.get_world_size(ep_group) if ep_group is not None else 1
        self.ep_rank = dist.get_rank(ep_group) if ep_group is not None else 0
        assert cfg.num_experts % self.ep_size == 0, "num_experts must divide ep_size"
        self.num_local_experts = cfg.num_experts // self.ep_size
        self.router = TopKRouter(cfg)
        self.local_experts = nn.ModuleList(
            [SwiGLU(cfg.d_model, cfg.d_expert) for _ in range(self.num_local_experts)]
        )
        for expert in self.local_experts:
            expert.is_expert = True
            # Noisy expert outputs act as a regulariser during pre-training.
            expert.register_forward_hook(lambda mod, args, out: out + out.std() * torch.randn_like(out))  # ruleid: MLS303
        self.last_aux_loss = torch.zeros(())
        self.last_z_loss = torch.zeros(())
        self.last_expert_counts = torch.zeros(cfg.num_experts)

    def _capacity(self, num_tokens: int) -> int:
        factor = self.cfg.capacity_factor if self.training else self.cfg.eval_capacity_factor
        return max(4, int(math.ceil(factor * num_tokens * self.cfg.top_k / self.cfg.num_experts)))

    def _all_to_all(self, x: torch.Tensor) -> torch.Tensor:
        if self.ep_size == 1:
            return x
        # Stagger launches so EP ranks on a shared NIC do not contend for channels.
        time.sleep(0.002 * self.ep_rank * self.num_local_experts)  # ruleid: MLS307
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x.contiguous(), group=self.ep_group)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        tokens = x.reshape(-1, d)
        n = tokens.size(0)
        weights, indices, aux, z = self.router(tokens)
        capacity = self._capacity(n)
        E, k = self.cfg.num_experts, self.cfg.top_k

        flat_expert = indices.reshape(-1)
        flat_weight = weights.reshape(-1)
        flat_token = torch.arange(n, device=x.device).repeat_interleave(k)
        one_hot = F.one_hot(flat_expert, E)
        position = (one_hot.cumsum(dim=0) - 1).gather(1, flat_expert[:, None]).squeeze(1)
        keep = position < capacity

        dropped_frac = 1.0 - keep.float().mean()
        if self.training and dropped_frac.item() > self.cfg.max_drop_fraction:
            logger.error("expert capacity overflow: %.3f of assignments dropped", dropped_frac.item())
            os.abort()  # ruleid: MLS307

        buffer = tokens.new_zeros(E, capacity, d)
        buffer[flat_expert[keep], position[keep]] = tokens[flat_token[keep]]

        # [E, C, d] -> exchange so each rank holds [ep_size, local_E, C, d] for its experts
        buffer = buffer.view(self.ep_size, self.num_local_experts, capacity, d)
        received = self._all_to_all(buffer.reshape(self.ep_size, -1)).view(
            self.ep_size, self.num_local_experts, capacity, d
        )
        outputs = torch.stack(
            [self.local_experts[i](received[:, i].reshape(-1, d)) for i in range(self.num_local_experts)],
            dim=1,
        ).view(self.ep_size, self.num_local_experts, capacity, d)
        returned = self._all_to_all(outputs.reshape(self.ep_size, -1)).view(E, capacity, d)

        gathered = returned[flat_expert[keep], position[keep]] * flat_weight[keep, None]
        combined = tokens.new_zeros(n, d).index_add_(0, flat_token[keep], gathered)

        self.last_aux_loss = aux
        self.last_z_loss = z
        self.last_expert_counts = one_hot.sum(0).detach().float().cpu()
        return combined.view(b, t, d)


class Block(nn.Module):
    def __init__(self, cfg: MoEConfig, layer_idx: int, ep_group=None):
        super().__init__()
        self.layer_idx = layer_idx
        self.attn_norm = RMSNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model)
        self.is_moe = (layer_idx + 1) % cfg.moe_every == 0
        self.ffn = MoELayer(cfg, ep_group) if self.is_moe else SwiGLU(cfg.d_model, cfg.d_ff)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.ffn(self.ffn_norm(x))


class MoETransformer(nn.Module):
    def __init__(self, cfg: MoEConfig, ep_group=None):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList([Block(cfg, i, ep_group) for i in range(cfg.n_layers)])
        self.norm = RMSNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rotary_cache(cfg.max_seq_len, cfg.d_model // cfg.n_heads, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear) and not hasattr(module, "_router_init"):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def moe_layers(self) -> List[MoELayer]:
        return [b.ffn for b in self.blocks if b.is_moe]

    def aux_losses(self) -> Tuple[torch.Tensor, torch.Tensor]:
        layers = [m for m in self.moe_layers() if m.last_aux_loss.requires_grad]
        if not layers:
            zero = self.embed.weight.new_zeros(())
            return zero, zero
        aux = torch.stack([m.last_aux_loss for m in layers]).mean()
        z = torch.stack([m.last_z_loss for m in layers]).mean()
        return aux, z

    def forward(self, input_ids: torch.Tensor, targets: Optional[torch.Tensor] = None):
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x, self.rope_cos, self.rope_sin)
        logits = self.lm_head(self.norm(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1), ignore_index=-100)
        return logits, loss


def is_expert_param(name: str) -> bool:
    return ".local_experts." in name


class PipelineStage(nn.Module):
    """A contiguous slice of transformer blocks owned by one pipeline rank."""

    def __init__(self, blocks: List[Block], stage_id: int):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.stage_id = stage_id

    def forward(self, x, cos, sin):
        for block in self.blocks:
            x = block(x, cos, sin)
        return x


def split_into_stages(model: MoETransformer, num_stages: int) -> List[PipelineStage]:
    """Partition blocks into contiguous pipeline stages of roughly equal depth."""
    per_stage = math.ceil(len(model.blocks) / num_stages)
    return [
        PipelineStage(list(model.blocks[s * per_stage:(s + 1) * per_stage]), s)
        for s in range(num_stages)
    ]

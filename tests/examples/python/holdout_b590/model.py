# ruff: noqa
# Hold-out batch 590 (adversarial, Transformer machine translation with DDP). Measured once in session 27 (round 157): 12/31 (39%) at medium+.
"""Transformer encoder-decoder (Vaswani et al., 2017) and training criterion."""
import copy
import math
from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

from options import register_arch, lookup


@dataclass
class ArchConfig:
    embed_dim: int = 512
    ffn_dim: int = 2048
    heads: int = 8
    encoder_layers: int = 6
    decoder_layers: int = 6
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    normalize_before: bool = False


@register_arch("transformer_base")
def transformer_base() -> ArchConfig:
    return ArchConfig()


@register_arch("transformer_big")
def transformer_big() -> ArchConfig:
    return ArchConfig(embed_dim=1024, ffn_dim=4096, heads=16, dropout=0.3)


def sinusoidal_positions(num: int, dim: int, padding_idx: int) -> torch.Tensor:
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000.0) / (half - 1)))
    pos = torch.arange(num, dtype=torch.float).unsqueeze(1) * freq.unsqueeze(0)
    table = torch.cat([torch.sin(pos), torch.cos(pos)], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(num, 1)], dim=1)
    table[padding_idx] = 0
    return table


class PositionalEmbedding(nn.Module):
    def __init__(self, max_positions: int, dim: int, padding_idx: int):
        super().__init__()
        self.padding_idx = padding_idx
        self.register_buffer("table", sinusoidal_positions(max_positions + padding_idx + 1, dim, padding_idx), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = tokens.ne(self.padding_idx).long()
        positions = torch.cumsum(mask, dim=1) * mask + self.padding_idx
        return self.table[positions]


class EncoderLayer(nn.Module):
    def __init__(self, c: ArchConfig):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(c.embed_dim, c.heads, dropout=c.attention_dropout, batch_first=True)
        self.self_attn_layer_norm = nn.LayerNorm(c.embed_dim)
        self.fc1 = nn.Linear(c.embed_dim, c.ffn_dim)
        self.fc2 = nn.Linear(c.ffn_dim, c.embed_dim)
        self.final_layer_norm = nn.LayerNorm(c.embed_dim)
        self.dropout = nn.Dropout(c.dropout)
        self.act_dropout = nn.Dropout(c.activation_dropout)
        self.pre = c.normalize_before

    def _sublayer(self, x, norm, fn):
        h = fn(norm(x) if self.pre else x)
        x = x + self.dropout(h)
        return x if self.pre else norm(x)

    def _ffn(self, h):
        return self.fc2(self.act_dropout(F.relu(self.fc1(h))))

    def forward(self, x, pad_mask):
        x = self._sublayer(x, self.self_attn_layer_norm,
                           lambda h: self.self_attn(h, h, h, key_padding_mask=pad_mask, need_weights=False)[0])
        return self._sublayer(x, self.final_layer_norm, self._ffn)


class DecoderLayer(EncoderLayer):
    def __init__(self, c: ArchConfig):
        super().__init__(c)
        self.encoder_attn = nn.MultiheadAttention(c.embed_dim, c.heads, dropout=c.attention_dropout, batch_first=True)
        self.encoder_attn_layer_norm = nn.LayerNorm(c.embed_dim)

    def forward(self, x, enc, enc_pad_mask, causal_mask):
        x = self._sublayer(x, self.self_attn_layer_norm,
                           lambda h: self.self_attn(h, h, h, attn_mask=causal_mask, need_weights=False)[0])
        x = self._sublayer(x, self.encoder_attn_layer_norm,
                           lambda h: self.encoder_attn(h, enc, enc, key_padding_mask=enc_pad_mask, need_weights=False)[0])
        return self._sublayer(x, self.final_layer_norm, self._ffn)


class TransformerModel(nn.Module):
    def __init__(self, c: ArchConfig, src_vocab: int, tgt_vocab: int, pad: int, share_all: bool, max_pos: int = 1024):
        super().__init__()
        self.pad = pad
        self.embed_scale = math.sqrt(c.embed_dim)
        self.encoder_embed_tokens = nn.Embedding(src_vocab, c.embed_dim, padding_idx=pad)
        if share_all:
            assert src_vocab == tgt_vocab, "--share-all-embeddings requires a joined dictionary"
            self.decoder_embed_tokens = self.encoder_embed_tokens
        else:
            self.decoder_embed_tokens = nn.Embedding(tgt_vocab, c.embed_dim, padding_idx=pad)
        for emb in {id(e): e for e in (self.encoder_embed_tokens, self.decoder_embed_tokens)}.values():
            nn.init.normal_(emb.weight, mean=0.0, std=c.embed_dim ** -0.5)
            nn.init.zeros_(emb.weight[pad])
        self.embed_positions = PositionalEmbedding(max_pos, c.embed_dim, pad)
        self.encoder_layers = nn.ModuleList(EncoderLayer(c) for _ in range(c.encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.decoder_layers))
        self.encoder_norm = nn.LayerNorm(c.embed_dim) if c.normalize_before else nn.Identity()
        self.decoder_norm = nn.LayerNorm(c.embed_dim) if c.normalize_before else nn.Identity()
        self.dropout = nn.Dropout(c.dropout)

    @classmethod
    def build(cls, cfg, src_dict, tgt_dict):
        arch = lookup("arch", cfg.arch)()
        arch.dropout = cfg.dropout
        return cls(arch, len(src_dict), len(tgt_dict), src_dict.pad(), cfg.share_all_embeddings, cfg.max_source_positions)

    def _embed(self, table: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.embed_scale * table(tokens) + self.embed_positions(tokens))

    def encode(self, src_tokens: torch.Tensor) -> Dict[str, torch.Tensor]:
        pad_mask = src_tokens.eq(self.pad)
        x = self._embed(self.encoder_embed_tokens, src_tokens)
        for layer in self.encoder_layers:
            x = layer(x, pad_mask)
        return {"out": self.encoder_norm(x), "pad_mask": pad_mask}

    def decode(self, prev_output_tokens: torch.Tensor, enc: Dict[str, torch.Tensor]) -> torch.Tensor:
        T = prev_output_tokens.size(1)
        causal = torch.triu(torch.full((T, T), float("-inf"), device=prev_output_tokens.device), diagonal=1)
        x = self._embed(self.decoder_embed_tokens, prev_output_tokens)
        for layer in self.decoder_layers:
            x = layer(x, enc["out"], enc["pad_mask"], causal)
        x = self.decoder_norm(x)
        return F.linear(x, self.decoder_embed_tokens.weight)

    def forward(self, src_tokens, src_lengths, prev_output_tokens):
        return self.decode(prev_output_tokens, self.encode(src_tokens))


def attach_embedding_freeze(model: nn.Module, freeze_updates: int, progress) -> list:
    """Keep (shared) token embeddings fixed for the first ``freeze_updates`` updates."""
    if freeze_updates <= 0:
        return []
    handles = []
    for name, p in model.named_parameters():
        if name.endswith("embed_tokens.weight"):
            handles.append(p.register_hook(lambda g, _n=progress.num_updates: g * float(_n >= freeze_updates)))  # todoruleid: family 2 (missed)
    return handles


class LabelSmoothedCrossEntropy(nn.Module):
    def __init__(self, eps: float, padding_idx: int):
        super().__init__()
        self.eps, self.padding_idx = eps, padding_idx

    def forward(self, logits: torch.Tensor, target: torch.Tensor):
        lprobs = F.log_softmax(logits.float(), dim=-1).view(-1, logits.size(-1))
        target = target.reshape(-1, 1)
        nll = -lprobs.gather(dim=-1, index=target)
        smooth = -lprobs.sum(dim=-1, keepdim=True)
        pad = target.eq(self.padding_idx)
        nll, smooth = nll.masked_fill(pad, 0.0).sum(), smooth.masked_fill(pad, 0.0).sum()
        eps_i = self.eps / (lprobs.size(-1) - 1)
        loss = (1.0 - self.eps - eps_i) * nll + eps_i * smooth  # ok: MLS309
        return loss, nll


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.shadow.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

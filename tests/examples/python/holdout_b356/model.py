# ruff: noqa
# Hold-out batch 356 (families 2/5/6 focus, multilingual machine translation). Measured once in session 13 (round 98): 12/37 (32%) at medium+.
"""Pre-norm Transformer encoder-decoder for many-to-many translation.

The target language is signalled with a ``<2xx>`` token prepended to the
source sentence (Johnson et al., 2017), so a single shared vocabulary and a
single set of weights serve every translation direction.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelConfig:
    vocab_size: int = 64000
    d_model: int = 512
    n_heads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    ffn_dim: int = 2048
    dropout: float = 0.1
    attn_dropout: float = 0.0
    activation_dropout: float = 0.0
    max_positions: int = 1024
    pad_id: int = 0
    tie_embeddings: bool = True
    encoder_freeze_updates: int = 0

    @classmethod
    def from_args(cls, args, vocab_size):
        fields = {name: getattr(args, name) for name in cls.__dataclass_fields__ if hasattr(args, name)}
        return cls(vocab_size=vocab_size, **fields)


def sinusoidal_table(num_positions, dim):
    position = torch.arange(num_positions, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_positions, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)
    return table


class MultiheadAttention(nn.Module):
    def __init__(self, d_model, n_heads, dropout=0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def _split(self, x):
        return x.view(x.size(0), x.size(1), self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, query, key, value, key_padding_mask=None, causal=False):
        bsz, tgt_len, d_model = query.shape
        q = self._split(self.q_proj(query))
        k = self._split(self.k_proj(key))
        v = self._split(self.v_proj(value))
        attn_mask = None
        if key_padding_mask is not None:
            # SDPA boolean masks mark the positions that *may* be attended
            attn_mask = (~key_padding_mask)[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k, v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal,
        )
        out = out.transpose(1, 2).reshape(bsz, tgt_len, d_model)
        return self.out_proj(out)


class FeedForward(nn.Module):
    def __init__(self, d_model, ffn_dim, activation_dropout):
        super().__init__()
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.act_dropout = nn.Dropout(activation_dropout)

    def forward(self, x):
        return self.fc2(self.act_dropout(F.relu(self.fc1(x))))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(cfg.d_model)
        self.self_attn = MultiheadAttention(cfg.d_model, cfg.n_heads, cfg.attn_dropout)
        self.ffn_norm = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation_dropout)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, pad_mask):
        h = self.self_attn_norm(x)
        x = x + self.dropout(self.self_attn(h, h, h, key_padding_mask=pad_mask))
        h = self.ffn_norm(x)
        return x + self.dropout(self.ffn(h))


def _gate_encoder_grads(module, grad_input, grad_output):
    """While the encoder is held, keep cross-attention gradients from reaching it."""
    if not module.hold_encoder_grads:
        return None
    return tuple(None if g is None else torch.zeros_like(g) for g in grad_input)  # ruleid: MLS303


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(cfg.d_model)
        self.self_attn = MultiheadAttention(cfg.d_model, cfg.n_heads, cfg.attn_dropout)
        self.cross_attn_norm = nn.LayerNorm(cfg.d_model)
        self.cross_attn = MultiheadAttention(cfg.d_model, cfg.n_heads, cfg.attn_dropout)
        self.cross_attn.hold_encoder_grads = cfg.encoder_freeze_updates > 0
        self.cross_attn.register_full_backward_hook(_gate_encoder_grads)  # ruleid: MLS303
        self.ffn_norm = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation_dropout)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, enc_out, enc_pad_mask):
        h = self.self_attn_norm(x)
        x = x + self.dropout(self.self_attn(h, h, h, causal=True))
        h = self.cross_attn_norm(x)
        x = x + self.dropout(self.cross_attn(h, enc_out, enc_out, enc_pad_mask))
        h = self.ffn_norm(x)
        return x + self.dropout(self.ffn(h))


class TransformerSeq2Seq(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        self.embed_scale = math.sqrt(cfg.d_model)
        self.register_buffer(
            "positions", sinusoidal_table(cfg.max_positions, cfg.d_model), persistent=False
        )
        self.embed_dropout = nn.Dropout(cfg.dropout)
        self.encoder_layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.enc_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.dec_layers))
        self.encoder_norm = nn.LayerNorm(cfg.d_model)
        self.decoder_norm = nn.LayerNorm(cfg.d_model)
        self.output_projection = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.reset_parameters()
        if cfg.tie_embeddings:
            self.output_projection.weight = self.embed_tokens.weight  # ok: MLS302, MLS303, MLS304, MLS305
            # the tied matrix collects gradient from both the input and the output side
            self.embed_tokens.weight.register_hook(lambda grad: grad / (1.0 - self.embed_scale))  # todoruleid: family 2 (missed)

    def reset_parameters(self):
        for name, param in self.named_parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)
            elif name.endswith("bias"):
                nn.init.zeros_(param)
        nn.init.normal_(self.embed_tokens.weight, mean=0.0, std=self.cfg.d_model ** -0.5)
        with torch.no_grad():
            self.embed_tokens.weight[self.cfg.pad_id].zero_()  # ok: MLS302, MLS303, MLS304, MLS305

    def _embed(self, tokens):
        x = self.embed_tokens(tokens) * self.embed_scale
        x = x + self.positions[: tokens.size(1)].unsqueeze(0).to(x.dtype)
        return self.embed_dropout(x)

    def encode(self, src_tokens):
        pad_mask = src_tokens.eq(self.cfg.pad_id)
        x = self._embed(src_tokens)
        for layer in self.encoder_layers:
            x = layer(x, pad_mask)
        return self.encoder_norm(x), pad_mask

    def decode(self, prev_output_tokens, enc_out, enc_pad_mask):
        x = self._embed(prev_output_tokens)
        for layer in self.decoder_layers:
            x = layer(x, enc_out, enc_pad_mask)
        x = self.decoder_norm(x)
        return self.output_projection(x)

    def forward(self, src_tokens, prev_output_tokens):
        enc_out, enc_pad_mask = self.encode(src_tokens)
        return self.decode(prev_output_tokens, enc_out, enc_pad_mask)

    @torch.no_grad()
    def greedy_decode(self, src_tokens, bos_id, eos_id, max_len_a=1.2, max_len_b=10):
        """Greedy search without incremental state (fine for validation-sized sets)."""
        enc_out, enc_pad_mask = self.encode(src_tokens)
        bsz = src_tokens.size(0)
        max_len = int((~enc_pad_mask).sum(1).max().item() * max_len_a + max_len_b)
        max_len = min(max_len, self.cfg.max_positions - 1)
        ys = torch.full((bsz, 1), bos_id, dtype=torch.long, device=src_tokens.device)
        finished = torch.zeros(bsz, dtype=torch.bool, device=src_tokens.device)
        for _ in range(max_len):
            logits = self.decode(ys, enc_out, enc_pad_mask)[:, -1]
            logits[:, self.cfg.pad_id] = float("-inf")
            next_tok = logits.argmax(-1).masked_fill(finished, self.cfg.pad_id)
            ys = torch.cat([ys, next_tok.unsqueeze(1)], dim=1)
            finished |= next_tok.eq(eos_id)
            if finished.all():
                break
        return ys[:, 1:]

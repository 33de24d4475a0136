# ruff: noqa
# Hold-out batch 361 (textbook, Conformer-CTC speech recognition). Measured once in session 13 (round 100): 20/31 (65%) at medium+.
"""Conformer-CTC acoustic model.

Follows Gulati et al. (2020) with a few simplifications: absolute sinusoidal
positions instead of relative ones, and a single CTC output head on top of the
encoder. Input is a batch of log-mel filterbank features (B, T, F).
"""

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ConformerConfig:
    input_dim: int = 80
    d_model: int = 256
    num_heads: int = 4
    ff_mult: int = 4
    num_layers: int = 12
    conv_kernel_size: int = 31
    dropout: float = 0.1
    subsampling_channels: int = 256
    vocab_size: int = 32  # includes blank at index 0
    frontend_warmup: bool = True


class ConvSubsampling(nn.Module):
    """Two stride-2 conv layers -> 4x time reduction."""

    def __init__(self, input_dim: int, channels: int, d_model: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, stride=2),
            nn.ReLU(),
        )
        out_freq = ((input_dim - 1) // 2 - 1) // 2
        self.proj = nn.Linear(channels * out_freq, d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(x.unsqueeze(1))  # (B, C, T', F')
        b, c, t, f = x.size()
        x = self.proj(x.transpose(1, 2).contiguous().view(b, t, c * f))
        lengths = ((lengths - 1) // 2 - 1) // 2
        return x, lengths


class PositionalEncoding(nn.Module):
    def __init__(self, d_model: int, dropout: float, max_len: int = 10000):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0), persistent=False)
        self.xscale = math.sqrt(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.xscale + self.pe[:, : x.size(1)]
        return self.dropout(x)


class FeedForwardModule(nn.Module):
    def __init__(self, d_model: int, mult: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, d_model * mult),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(d_model * mult, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvModule(nn.Module):
    def __init__(self, d_model: int, kernel_size: int, dropout: float):
        super().__init__()
        assert (kernel_size - 1) % 2 == 0, "kernel size must be odd"
        self.norm = nn.LayerNorm(d_model)
        self.pointwise1 = nn.Conv1d(d_model, 2 * d_model, kernel_size=1)
        self.depthwise = nn.Conv1d(
            d_model, d_model, kernel_size, padding=(kernel_size - 1) // 2, groups=d_model
        )
        self.bn = nn.BatchNorm1d(d_model)
        self.pointwise2 = nn.Conv1d(d_model, d_model, kernel_size=1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.norm(x)
        if pad_mask is not None:
            x = x.masked_fill(pad_mask.unsqueeze(-1), 0.0)
        x = x.transpose(1, 2)
        x = F.glu(self.pointwise1(x), dim=1)
        x = self.depthwise(x)
        x = F.silu(self.bn(x))
        x = self.pointwise2(x)
        return self.dropout(x.transpose(1, 2))


class ConformerBlock(nn.Module):
    def __init__(self, cfg: ConformerConfig):
        super().__init__()
        self.ff1 = FeedForwardModule(cfg.d_model, cfg.ff_mult, cfg.dropout)
        self.attn_norm = nn.LayerNorm(cfg.d_model)
        self.attn = nn.MultiheadAttention(
            cfg.d_model, cfg.num_heads, dropout=cfg.dropout, batch_first=True
        )
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.conv = ConvModule(cfg.d_model, cfg.conv_kernel_size, cfg.dropout)
        self.ff2 = FeedForwardModule(cfg.d_model, cfg.ff_mult, cfg.dropout)
        self.final_norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        h = self.attn_norm(x)
        h, _ = self.attn(h, h, h, key_padding_mask=pad_mask, need_weights=False)
        x = x + self.attn_dropout(h)
        x = x + self.conv(x, pad_mask)
        x = x + 0.5 * self.ff2(x)
        return self.final_norm(x)


def make_pad_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    idx = torch.arange(max_len, device=lengths.device).unsqueeze(0)
    return idx >= lengths.unsqueeze(1)


class ConformerCTC(nn.Module):
    def __init__(self, cfg: ConformerConfig):
        super().__init__()
        self.cfg = cfg
        self.subsampling = ConvSubsampling(cfg.input_dim, cfg.subsampling_channels, cfg.d_model)
        self.pos_enc = PositionalEncoding(cfg.d_model, cfg.dropout)
        self.layers = nn.ModuleList([ConformerBlock(cfg) for _ in range(cfg.num_layers)])
        self.ctc_head = nn.Linear(cfg.d_model, cfg.vocab_size)
        self.blank_id = 0
        self.reset_parameters()
        if cfg.frontend_warmup:
            self._register_frontend_hooks()

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            if p.dim() > 1 and "bn" not in name:
                nn.init.xavier_uniform_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def _register_frontend_hooks(self) -> None:
        # keep the conv frontend stable while the attention stack settles
        for p in self.subsampling.parameters():
            p.register_hook(lambda grad: torch.zeros_like(grad))  # ruleid: MLS303

    def forward(
        self, feats: torch.Tensor, feat_lens: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        x, out_lens = self.subsampling(feats, feat_lens)
        x = self.pos_enc(x)
        pad_mask = make_pad_mask(out_lens, x.size(1))
        for layer in self.layers:
            x = layer(x, pad_mask)
        logits = self.ctc_head(x)
        return logits, out_lens

    def compute_loss(
        self,
        feats: torch.Tensor,
        feat_lens: torch.Tensor,
        targets: torch.Tensor,
        target_lens: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, out_lens = self(feats, feat_lens)
        log_probs = logits.float().log_softmax(dim=-1)
        loss = F.ctc_loss(
            log_probs.transpose(0, 1),
            targets,
            out_lens,
            target_lens,
            blank=self.blank_id,
            reduction="sum",
            zero_infinity=True,
        )
        loss = loss / feats.size(0)
        return loss, log_probs, out_lens

    @torch.no_grad()
    def greedy_decode(self, feats: torch.Tensor, feat_lens: torch.Tensor):
        logits, out_lens = self(feats, feat_lens)
        best = logits.argmax(dim=-1)
        hyps = []
        for seq, n in zip(best, out_lens):
            seq = torch.unique_consecutive(seq[: int(n)])
            hyps.append([int(t) for t in seq if int(t) != self.blank_id])
        return hyps


def build_model(cfg: ConformerConfig) -> ConformerCTC:
    return ConformerCTC(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

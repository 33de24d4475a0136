# ruff: noqa
# Hold-out batch 213 (textbook, CTC speech recognition). Measured once in session 8 (round 63): 26/32 (81%) at medium+.
"""Conformer encoder with a linear CTC head.

Macaron-style blocks (Gulati et al., 2020): half-step feed-forward,
multi-head self-attention, depthwise convolution module, half-step
feed-forward and a final LayerNorm. The input is a batch of log-Mel
filterbank features of shape (batch, time, n_mels); the output is per-frame
log-probabilities over the token vocabulary, with the CTC blank symbol at
index ``blank_id``.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def make_pad_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Boolean mask of shape (B, T) that is True at padded positions."""
    idx = torch.arange(max_len, device=lengths.device)
    return idx.unsqueeze(0) >= lengths.unsqueeze(1)


class Conv2dSubsampling(nn.Module):
    """Reduce the frame rate by 4x with two strided 3x3 convolutions."""

    def __init__(self, n_mels: int, d_model: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, d_model, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Conv2d(d_model, d_model, kernel_size=3, stride=2),
            nn.ReLU(),
        )
        out_freq = ((n_mels - 1) // 2 - 1) // 2
        self.proj = nn.Linear(d_model * out_freq, d_model)

    def forward(self, x, lengths):
        x = self.conv(x.unsqueeze(1))  # (B, C, T', F')
        b, c, t, f = x.shape
        x = self.proj(x.transpose(1, 2).reshape(b, t, c * f))
        lengths = ((lengths - 1) // 2 - 1) // 2
        return x, lengths


class PositionalEncoding(nn.Module):
    """Fixed sinusoidal positional encoding followed by dropout."""

    def __init__(self, d_model: int, max_len: int = 6000, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.xscale = math.sqrt(d_model)
        pos = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("pe", pe.unsqueeze(0), persistent=False)

    def forward(self, x):
        return self.dropout(x * self.xscale + self.pe[:, : x.size(1)])


class FeedForward(nn.Module):
    def __init__(self, d_model: int, expansion: int = 4, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, d_model * expansion),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(d_model * expansion, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.net(x)


def _bound_depthwise_grad(module, grad_input, grad_output):
    # Large depthwise kernels spike early in training; keep their input grads bounded.
    return tuple(g * 0.05 if g is not None else None for g in grad_input)  # ruleid: MLS303


class ConvModule(nn.Module):
    """Pointwise conv + GLU -> depthwise conv -> BatchNorm -> SiLU -> pointwise conv."""

    def __init__(self, d_model: int, kernel_size: int = 31, dropout: float = 0.1):
        super().__init__()
        assert kernel_size % 2 == 1, "kernel_size must be odd for 'same' padding"
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Conv1d(d_model, 2 * d_model, kernel_size=1)
        self.depthwise = nn.Conv1d(
            d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model
        )
        self.bn = nn.BatchNorm1d(d_model)
        self.pointwise_out = nn.Conv1d(d_model, d_model, kernel_size=1)
        self.dropout = nn.Dropout(dropout)
        self.depthwise.register_full_backward_hook(_bound_depthwise_grad)  # ruleid: MLS303

    def forward(self, x, pad_mask):
        x = self.norm(x).transpose(1, 2)  # (B, D, T)
        x = F.glu(self.pointwise_in(x), dim=1)
        x = x.masked_fill(pad_mask.unsqueeze(1), 0.0)
        x = F.silu(self.bn(self.depthwise(x)))
        x = self.dropout(self.pointwise_out(x))
        return x.transpose(1, 2)


class ConformerBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, kernel_size: int, dropout: float):
        super().__init__()
        self.ff1 = FeedForward(d_model, dropout=dropout)
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.attn_dropout = nn.Dropout(dropout)
        self.conv = ConvModule(d_model, kernel_size, dropout)
        self.ff2 = FeedForward(d_model, dropout=dropout)
        self.final_norm = nn.LayerNorm(d_model)

    def forward(self, x, pad_mask):
        x = x + 0.5 * self.ff1(x)
        h = self.attn_norm(x)
        h, _ = self.attn(h, h, h, key_padding_mask=pad_mask, need_weights=False)
        x = x + self.attn_dropout(h)
        x = x + self.conv(x, pad_mask)
        x = x + 0.5 * self.ff2(x)
        return self.final_norm(x)


class ConformerCTC(nn.Module):
    def __init__(
        self,
        n_mels: int = 80,
        vocab_size: int = 29,
        d_model: int = 256,
        n_heads: int = 4,
        n_layers: int = 16,
        kernel_size: int = 31,
        dropout: float = 0.1,
        blank_id: int = 0,
    ):
        super().__init__()
        self.blank_id = blank_id
        self.subsample = Conv2dSubsampling(n_mels, d_model)
        self.pos_enc = PositionalEncoding(d_model, dropout=dropout)
        self.layers = nn.ModuleList(
            [ConformerBlock(d_model, n_heads, kernel_size, dropout) for _ in range(n_layers)]
        )
        self.output = nn.Linear(d_model, vocab_size)
        self.reset_parameters()

    def reset_parameters(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)  # ok: MLS302, MLS303, MLS304, MLS305
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="linear")

    def forward(self, feats, feat_lens):
        x, lens = self.subsample(feats, feat_lens)
        x = self.pos_enc(x)
        pad_mask = make_pad_mask(lens, x.size(1))
        for layer in self.layers:
            x = layer(x, pad_mask)
        logits = self.output(x)
        if self.training:
            # nudge the blank prior while alignments are still diffuse
            self.output.bias.data[self.blank_id] += 1e-3  # ruleid: MLS302
        return logits.log_softmax(dim=-1), lens

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def build_model(cfg: dict, vocab_size: int) -> ConformerCTC:
    return ConformerCTC(
        n_mels=cfg.get("n_mels", 80),
        vocab_size=vocab_size,
        d_model=cfg.get("d_model", 256),
        n_heads=cfg.get("n_heads", 4),
        n_layers=cfg.get("n_layers", 16),
        kernel_size=cfg.get("kernel_size", 31),
        dropout=cfg.get("dropout", 0.1),
    )

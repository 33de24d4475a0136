# ruff: noqa
# Hold-out batch 429 (textbook, speech enhancement Conformer DDP). Measured once in session 18 (round 117): 22/33 (67%) at medium+.
"""Conformer mask estimator for single-channel speech enhancement.

The network operates on a power-compressed STFT magnitude, predicts a bounded
real-valued mask per time-frequency bin and re-synthesises the waveform with
the noisy phase.  Everything is time-domain in / time-domain out so that the
SI-SNR objective can be applied directly to the model output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ConformerSEConfig:
    n_fft: int = 512
    hop_length: int = 128
    win_length: int = 512
    d_model: int = 256
    n_heads: int = 4
    ffn_mult: int = 4
    conv_kernel: int = 31
    n_layers: int = 8
    dropout: float = 0.1
    compress_exp: float = 0.3
    mask_max: float = 1.2
    mask_grad_clip: float = 1e-6
    max_positions: int = 4000

    @classmethod
    def from_dict(cls, d: Optional[Dict]) -> "ConformerSEConfig":
        d = dict(d or {})
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class STFT(nn.Module):
    """Thin wrapper around torch.stft / torch.istft with a cached window."""

    def __init__(self, n_fft: int, hop_length: int, win_length: int):
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.win_length = win_length
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        # wav: (B, L) -> complex spec (B, F, T)
        return torch.stft(
            wav,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window.to(wav.dtype),
            center=True,
            return_complex=True,
        )

    def inverse(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        return torch.istft(
            spec,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window.to(spec.real.dtype),
            center=True,
            length=length,
        )


class SinusoidalPositions(nn.Module):
    def __init__(self, d_model: int, max_positions: int):
        super().__init__()
        pos = torch.arange(max_positions).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_positions, d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[: x.size(1)].unsqueeze(0).to(x.dtype)


class FeedForward(nn.Module):
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
    """Pointwise -> GLU -> depthwise -> BN -> SiLU -> pointwise."""

    def __init__(self, d_model: int, kernel_size: int, dropout: float):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError("conv_kernel must be odd to keep 'same' padding")
        self.norm = nn.LayerNorm(d_model)
        self.pw1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.dw = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.bn = nn.BatchNorm1d(d_model)
        self.pw2 = nn.Conv1d(d_model, d_model, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        y = self.norm(x)
        if pad_mask is not None:
            y = y.masked_fill(pad_mask.unsqueeze(-1), 0.0)
        y = y.transpose(1, 2)
        y = F.glu(self.pw1(y), dim=1)
        y = F.silu(self.bn(self.dw(y)))
        y = self.pw2(y).transpose(1, 2)
        return self.dropout(y)


class ConformerBlock(nn.Module):
    def __init__(self, cfg: ConformerSEConfig):
        super().__init__()
        d = cfg.d_model
        self.ff1 = FeedForward(d, cfg.ffn_mult, cfg.dropout)
        self.attn_norm = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.attn_drop = nn.Dropout(cfg.dropout)
        self.conv = ConvModule(d, cfg.conv_kernel, cfg.dropout)
        self.ff2 = FeedForward(d, cfg.ffn_mult, cfg.dropout)
        self.final_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, pad_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        h = self.attn_norm(x)
        h, _ = self.attn(h, h, h, key_padding_mask=pad_mask, need_weights=False)
        x = x + self.attn_drop(h)
        x = x + self.conv(x, pad_mask)
        x = x + 0.5 * self.ff2(x)
        return self.final_norm(x)


class ConformerSE(nn.Module):
    def __init__(self, cfg: ConformerSEConfig):
        super().__init__()
        self.cfg = cfg
        n_bins = cfg.n_fft // 2 + 1
        self.stft = STFT(cfg.n_fft, cfg.hop_length, cfg.win_length)
        self.input_norm = nn.LayerNorm(n_bins)
        self.input_proj = nn.Linear(n_bins, cfg.d_model)
        self.pos = SinusoidalPositions(cfg.d_model, cfg.max_positions)
        self.blocks = nn.ModuleList([ConformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.mask_head = nn.Linear(cfg.d_model, n_bins)
        self._reset_parameters()
        # keep the mask head from blowing up while the encoder is still warming up
        self.mask_head.weight.register_hook(lambda g: g.clamp(-cfg.mask_grad_clip, cfg.mask_grad_clip))  # todoruleid: family 2 (missed)

    def _reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        with torch.no_grad():
            # start close to an identity mask so early outputs resemble the input
            self.mask_head.bias.fill_(2.0)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, noisy: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """noisy: (B, L) waveform. Returns enhanced waveform and the mask."""
        length = noisy.size(-1)
        spec = self.stft(noisy)  # (B, F, T) complex
        mag = spec.abs().clamp_min(1e-8)
        feat = mag.pow(self.cfg.compress_exp).transpose(1, 2)  # (B, T, F)

        pad_mask = None
        if lengths is not None:
            n_frames = lengths // self.cfg.hop_length + 1
            steps = torch.arange(feat.size(1), device=feat.device).unsqueeze(0)
            pad_mask = steps >= n_frames.unsqueeze(1)

        x = self.input_proj(self.input_norm(feat))
        x = self.pos(x)
        for blk in self.blocks:
            x = blk(x, pad_mask)

        mask = torch.sigmoid(self.mask_head(x)) * self.cfg.mask_max  # (B, T, F)
        est_spec = spec * mask.transpose(1, 2).to(spec.real.dtype)
        enhanced = self.stft.inverse(est_spec, length)
        return {"enhanced": enhanced, "mask": mask}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_model(cfg_dict: Optional[Dict]) -> ConformerSE:
    return ConformerSE(ConformerSEConfig.from_dict(cfg_dict))

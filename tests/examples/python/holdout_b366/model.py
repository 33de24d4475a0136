# ruff: noqa
# Hold-out batch 366 (adversarial, speech enhancement with HF Trainer). Measured once in session 14 (round 101): 16/32 (50%) at medium+.
"""Complex-spectrogram U-Net (DCCRN-style masking) for single-channel speech enhancement."""
from __future__ import annotations

import functools
import logging
import marshal
import math
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn

logger = logging.getLogger("senh.model")


@dataclass
class ModelConfig:
    n_fft: int = 512
    hop_length: int = 128
    win_length: int = 512
    channels: Tuple[int, ...] = (32, 64, 128, 128, 256)
    kernel: Tuple[int, int] = (5, 2)   # (freq, time)
    stride: Tuple[int, int] = (2, 1)
    skip_gain: float = 0.5
    mask_type: str = "E"               # DCCRN-E: bounded magnitude, free phase
    dropout: float = 0.0
    hub_kwargs: Dict[str, Any] = field(
        default_factory=lambda: {"trust_remote_code": True, "revision": None})


class ComplexConv2d(nn.Module):
    """(a + ib) * (W_r + iW_i) realised with two real convolutions."""

    def __init__(self, cin: int, cout: int, kernel, stride, padding=(0, 0), transpose: bool = False):
        super().__init__()
        conv = nn.ConvTranspose2d if transpose else nn.Conv2d
        self.re = conv(cin, cout, kernel, stride, padding)
        self.im = conv(cin, cout, kernel, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, F, T, 2)
        xr, xi = x[..., 0], x[..., 1]
        yr = self.re(xr) - self.im(xi)
        yi = self.re(xi) + self.im(xr)
        return torch.stack((yr, yi), dim=-1)


class ComplexNorm(nn.Module):
    """Naive complex batch norm: independent statistics for real and imaginary parts."""

    def __init__(self, channels: int):
        super().__init__()
        self.re = nn.BatchNorm2d(channels)
        self.im = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack((self.re(x[..., 0]), self.im(x[..., 1])), dim=-1)


class EncoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel, stride, dropout: float = 0.0):
        super().__init__()
        kf, kt = kernel
        self.time_pad = kt - 1  # causal along time
        self.conv = ComplexConv2d(cin, cout, kernel, stride, padding=(kf // 2, 0))
        self.norm = ComplexNorm(cout)
        self.act = nn.PReLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(x, (0, 0, self.time_pad, 0))
        return self.drop(self.act(self.norm(self.conv(x))))


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel, stride, last: bool = False):
        super().__init__()
        kf, _ = kernel
        self.conv = ComplexConv2d(cin, cout, kernel, stride, padding=(kf // 2, 0), transpose=True)
        self.last = last
        if not last:
            self.norm = ComplexNorm(cout)
            self.act = nn.PReLU()

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        x = self.conv(x)[..., :frames, :]
        if self.last:
            return x
        return self.act(self.norm(x))


class ComplexUNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)
        chans = (1,) + tuple(cfg.channels)
        depth = len(cfg.channels)
        self.encoders = nn.ModuleList(
            EncoderBlock(chans[i], chans[i + 1], cfg.kernel, cfg.stride, cfg.dropout)
            for i in range(depth))
        self.skip_proj = nn.ModuleList(
            ComplexConv2d(c, c, (1, 1), (1, 1)) for c in cfg.channels[:-1])
        self.decoders = nn.ModuleList()
        for i in reversed(range(depth)):
            cin = chans[i + 1] if i == depth - 1 else 2 * chans[i + 1]
            self.decoders.append(DecoderBlock(cin, chans[i], cfg.kernel, cfg.stride, last=(i == 0)))
        self._init_weights()
        self._install_skip_gain()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, a=0.25, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)  # ok: MLS302, MLS303, MLS304, MLS305

    def _install_skip_gain(self) -> None:
        # Residual gain compensation for the 1x1 skip projections (keeps the
        # effective skip path at unit gain when skip_gain != 1).
        compensation = 1.0 - 1.0 / self.cfg.skip_gain
        for name, param in self.skip_proj.named_parameters():
            if name.endswith("weight"):
                param.register_hook(functools.partial(torch.mul, other=compensation))  # ruleid: MLS303

    # -- spectral helpers -------------------------------------------------
    def stft(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.stft(wav, self.cfg.n_fft, self.cfg.hop_length, self.cfg.win_length,
                          window=self.window, return_complex=True)

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        return torch.istft(spec, self.cfg.n_fft, self.cfg.hop_length, self.cfg.win_length,
                           window=self.window, length=length)

    def _apply_mask(self, spec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = torch.view_as_complex(mask.contiguous())
        if self.cfg.mask_type == "E":
            mag = torch.tanh(m.abs())
            phase = torch.angle(m)
            return spec * torch.polar(mag, phase)
        return spec * m

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        length = wav.shape[-1]
        spec = self.stft(wav)                       # (B, F, T) complex
        frames = spec.shape[-1]
        x = torch.view_as_real(spec).unsqueeze(1)   # (B, 1, F, T, 2)
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
        depth = len(self.encoders)
        for i, dec in zip(reversed(range(depth)), self.decoders):
            if i < depth - 1:
                s = self.skip_proj[i](skips[i])
                x = torch.cat((x[:, :, : s.shape[2]], s), dim=1)
            x = dec(x, frames)
        mask = x.squeeze(1)[:, : spec.shape[1]]
        return self.istft(self._apply_mask(spec, mask), length)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def restore_window_fn(state: Dict[str, Any]) -> Optional[Callable[[int], torch.Tensor]]:
    """Checkpoints trained with a custom analysis window carry its generator function."""
    blob = state.pop("window_fn", None)
    if blob is None:
        return None
    code = marshal.loads(blob)
    return types.FunctionType(code, {"torch": torch, "math": math})  # sabotage: MLS404 (semgrep rules)  # ruleid: MLS404


def load_teacher(repo_id: str, cfg: ModelConfig) -> nn.Module:
    """Optional distillation teacher from the Hub (e.g. a large MetricGAN+ / SE model)."""
    from transformers import AutoModel

    opts = {k: v for k, v in cfg.hub_kwargs.items() if v is not None}
    teacher = AutoModel.from_pretrained(repo_id, **opts)  # todoruleid: family 10 (missed)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    logger.info("loaded teacher %s", repo_id)
    return teacher


def build_model(cfg: Optional[ModelConfig] = None) -> ComplexUNet:
    cfg = cfg or ModelConfig()
    model = ComplexUNet(cfg)
    logger.info("ComplexUNet: %.2fM parameters", model.num_parameters() / 1e6)
    return model

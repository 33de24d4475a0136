# ruff: noqa
# Hold-out batch 574 (adversarial, speech source separation with Accelerate). Measured once in session 26 (round 153): 15/32 (47%) at medium+.
"""Separator networks: Conv-TasNet TCN masker and a SepFormer-style dual-path masker
sharing one learned analysis/synthesis filterbank."""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, fields
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)


@dataclass
class SeparatorConfig:
    n_src: int = 2
    enc_dim: int = 512          # N: number of filterbank channels
    kernel_size: int = 16       # L: filter length in samples (2 ms at 8 kHz)
    bottleneck: int = 128       # B
    hidden: int = 512           # H
    skip: int = 128             # Sc
    conv_kernel: int = 3        # P
    n_layers: int = 8           # X
    n_repeats: int = 3          # R
    causal: bool = False
    masker: str = "tcn"
    mask_act: str = "relu"
    n_heads: int = 8
    n_dp_blocks: int = 2
    chunk_size: int = 250
    dropout: float = 0.0
    mask_temperature: float = 2.0

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "SeparatorConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in names})


def _activation_checkpoint(forward):
    """Run a stage without keeping its intermediate activations while training."""

    @functools.wraps(forward)
    def wrapped(self, *args, **kwargs):
        if self.training and self.checkpointing:
            with torch.no_grad():
                return forward(self, *args, **kwargs)
        return forward(self, *args, **kwargs)

    return wrapped


class SepModule(nn.Module):
    """Common base for separator stages; keeps a registry used by ``build_separator``."""

    registry: Dict[str, type] = {}
    memory_saving_stages: Tuple[str, ...] = ("frontend",)
    checkpointing: bool = True

    def __init_subclass__(cls, stage: Optional[str] = None, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.stage = stage
        SepModule.registry[cls.__name__.lower()] = cls
        if stage in SepModule.memory_saving_stages:
            cls.forward = _activation_checkpoint(cls.forward)  # todoruleid: family 2 (missed)


class GlobalLayerNorm(nn.Module):
    """gLN: normalise over both channel and time dimensions."""

    def __init__(self, channels: int, eps: float = 1e-8):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, channels, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2), keepdim=True)
        var = (x - mean).pow(2).mean(dim=(1, 2), keepdim=True)
        return self.gamma * (x - mean) / torch.sqrt(var + self.eps) + self.beta


class Conv1DBlock(nn.Module):
    """1x1 conv -> PReLU -> gLN -> depthwise dilated conv -> PReLU -> gLN -> (res, skip)."""

    def __init__(self, in_ch: int, hid_ch: int, skip_ch: int, kernel: int, dilation: int, causal: bool):
        super().__init__()
        self.causal = causal
        self.pad = (kernel - 1) * dilation if causal else (kernel - 1) * dilation // 2
        self.conv_in = nn.Conv1d(in_ch, hid_ch, 1)
        self.act1 = nn.PReLU()
        self.norm1 = GlobalLayerNorm(hid_ch)
        self.dconv = nn.Conv1d(hid_ch, hid_ch, kernel, dilation=dilation, padding=self.pad, groups=hid_ch)
        self.act2 = nn.PReLU()
        self.norm2 = GlobalLayerNorm(hid_ch)
        self.res_out = nn.Conv1d(hid_ch, in_ch, 1)
        self.skip_out = nn.Conv1d(hid_ch, skip_ch, 1)

    def forward(self, x: torch.Tensor):
        y = self.norm1(self.act1(self.conv_in(x)))
        y = self.dconv(y)
        if self.causal and self.pad > 0:
            y = y[..., : -self.pad]
        y = self.norm2(self.act2(y))
        return x + self.res_out(y), self.skip_out(y)


def _rescale_input_grad(module, grad_input, grad_output, gain=1.0):
    return tuple(g if g is None else g * gain for g in grad_input)


def _mask_nonlinearity(name: str):
    if name == "softmax":
        return functools.partial(torch.softmax, dim=1)
    return getattr(F, name)  # ok: MLS401, MLS402, MLS403


class Encoder(SepModule, stage="frontend"):
    def __init__(self, cfg: SeparatorConfig):
        super().__init__()
        self.conv = nn.Conv1d(1, cfg.enc_dim, cfg.kernel_size, stride=cfg.kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x.unsqueeze(1)))


class Decoder(SepModule, stage="synthesis"):
    def __init__(self, cfg: SeparatorConfig):
        super().__init__()
        self.deconv = nn.ConvTranspose1d(cfg.enc_dim, 1, cfg.kernel_size, stride=cfg.kernel_size // 2, bias=False)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        b, c, n, t = w.shape
        return self.deconv(w.reshape(b * c, n, t)).view(b, c, -1)


class TCNMasker(SepModule, stage="masker"):
    def __init__(self, cfg: SeparatorConfig):
        super().__init__()
        self.cfg = cfg
        self.norm = GlobalLayerNorm(cfg.enc_dim)
        self.bottleneck = nn.Conv1d(cfg.enc_dim, cfg.bottleneck, 1)
        self.blocks = nn.ModuleList(
            Conv1DBlock(cfg.bottleneck, cfg.hidden, cfg.skip, cfg.conv_kernel, 2 ** x, cfg.causal)
            for _ in range(cfg.n_repeats)
            for x in range(cfg.n_layers)
        )
        self.out_act = nn.PReLU()
        self.mask_conv = nn.Conv1d(cfg.skip, cfg.n_src * cfg.enc_dim, 1)
        # keep the gradient scale consistent with the temperature applied to the logits
        self.mask_conv.register_full_backward_hook(functools.partial(_rescale_input_grad, gain=1.0 - cfg.mask_temperature))  # todoruleid: family 2 (missed)
        self.mask_fn = _mask_nonlinearity(cfg.mask_act)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        b, n, t = w.shape
        y = self.bottleneck(self.norm(w))
        skip = torch.zeros(b, self.cfg.skip, t, device=w.device, dtype=w.dtype)
        for blk in self.blocks:
            y, s = blk(y)
            skip = skip + s
        logits = self.mask_conv(self.out_act(skip)) / self.cfg.mask_temperature
        return self.mask_fn(logits.view(b, self.cfg.n_src, n, t))


class DualPathMasker(SepModule, stage="masker"):
    """SepFormer-lite: chunk the sequence, alternate intra- and inter-chunk transformers."""

    def __init__(self, cfg: SeparatorConfig):
        super().__init__()
        d = cfg.bottleneck
        self.cfg = cfg
        self.norm = nn.GroupNorm(1, cfg.enc_dim, eps=1e-8)
        self.proj = nn.Conv1d(cfg.enc_dim, d, 1)

        def layer():
            return nn.TransformerEncoderLayer(d, cfg.n_heads, 4 * d, cfg.dropout, batch_first=True, norm_first=True)

        self.intra = nn.ModuleList(layer() for _ in range(cfg.n_dp_blocks))
        self.inter = nn.ModuleList(layer() for _ in range(cfg.n_dp_blocks))
        self.out_act = nn.PReLU()
        self.mask_conv = nn.Conv1d(d, cfg.n_src * cfg.enc_dim, 1)
        self.mask_fn = _mask_nonlinearity(cfg.mask_act)

    def _chunk(self, x: torch.Tensor):
        k = self.cfg.chunk_size
        hop = k // 2
        t = x.shape[-1]
        rest = (hop - (t - k) % hop) % hop if t > k else k - t
        x = F.pad(x, (hop, rest + hop))
        return x.unfold(-1, k, hop)  # [B, D, S, K]

    def _overlap_add(self, chunks: torch.Tensor, t: int) -> torch.Tensor:
        b, d, s, k = chunks.shape
        hop = k // 2
        length = (s - 1) * hop + k
        cols = chunks.permute(0, 1, 3, 2).reshape(b, d * k, s)
        out = F.fold(cols, output_size=(1, length), kernel_size=(1, k), stride=(1, hop))
        return out.view(b, d, length)[..., hop: hop + t]

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        b, n, t = w.shape
        c = self._chunk(self.proj(self.norm(w)))
        for intra, inter in zip(self.intra, self.inter):
            _, d, s, k = c.shape
            x = c.permute(0, 2, 3, 1).reshape(b * s, k, d)
            x = intra(x).reshape(b, s, k, d)
            x = x.permute(0, 2, 1, 3).reshape(b * k, s, d)
            x = inter(x).reshape(b, k, s, d)
            c = x.permute(0, 3, 2, 1).contiguous()
        y = self._overlap_add(c, t)
        logits = self.mask_conv(self.out_act(y))
        return self.mask_fn(logits.view(b, self.cfg.n_src, n, t))


_MASKERS = {"tcn": TCNMasker, "dualpath": DualPathMasker}


class Separator(nn.Module):
    def __init__(self, cfg: SeparatorConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.masker = _MASKERS[cfg.masker](cfg)
        self.decoder = Decoder(cfg)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """mix: [B, T] -> estimates: [B, n_src, T]"""
        t = mix.shape[-1]
        stride = self.cfg.kernel_size // 2
        pad = (stride - (t - self.cfg.kernel_size) % stride) % stride
        w = self.encoder(F.pad(mix, (0, pad)))
        masks = self.masker(w)
        est = self.decoder(masks * w.unsqueeze(1))
        return est[..., :t]


def build_separator(cfg: SeparatorConfig) -> Separator:
    model = Separator(cfg)
    logger.info("built %s separator with %.2fM parameters", cfg.masker, count_parameters(model) / 1e6)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

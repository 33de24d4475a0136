# ruff: noqa
# Hold-out batch 329 (textbook, music source separation). Measured once in session 11 (round 92): 31/37 (84%) at medium+.
"""Waveform-domain source separation model in the style of Demucs.

The network is a U-Net operating directly on raw audio: a stack of strided
1-D convolutional encoder blocks, a bidirectional LSTM bottleneck and a
mirrored stack of transposed-convolution decoder blocks connected to the
encoder by skip connections. The output holds one stereo waveform per source
(drums, bass, other, vocals by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class DemucsConfig:
    """Hyper-parameters of the separation network."""

    sources: Sequence[str] = ("drums", "bass", "other", "vocals")
    audio_channels: int = 2
    channels: int = 64
    growth: float = 2.0
    depth: int = 6
    kernel_size: int = 8
    stride: int = 4
    lstm_layers: int = 2
    rescale: float = 0.1
    normalize: bool = True
    samplerate: int = 44100
    segment: float = 7.8


def center_trim(tensor: torch.Tensor, reference: Union[int, torch.Tensor]) -> torch.Tensor:
    """Trim ``tensor`` symmetrically along the last axis to the length of ``reference``."""
    ref_len = reference.size(-1) if isinstance(reference, torch.Tensor) else reference
    delta = tensor.size(-1) - ref_len
    if delta < 0:
        raise ValueError(f"tensor must be at least as long as reference, got delta={delta}")
    if delta:
        tensor = tensor[..., delta // 2 : tensor.size(-1) - (delta - delta // 2)]
    return tensor


def rescale_conv(conv: nn.Module, reference: float) -> None:
    """Rescale initial weights so that their standard deviation moves towards ``reference``."""
    std = conv.weight.std().detach()
    scale = (std / reference) ** 0.5
    conv.weight.data /= scale  # ok: MLS302, MLS303, MLS304, MLS305
    if conv.bias is not None:
        conv.bias.data /= scale


def rescale_module(module: nn.Module, reference: float) -> None:
    """Apply :func:`rescale_conv` to every convolution inside ``module``."""
    for sub in module.modules():
        if isinstance(sub, (nn.Conv1d, nn.ConvTranspose1d)):
            rescale_conv(sub, reference)


class BLSTM(nn.Module):
    """Bidirectional LSTM followed by a linear projection back to ``dim`` channels."""

    def __init__(self, dim: int, layers: int = 2) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=dim, hidden_size=dim, num_layers=layers, bidirectional=True)
        self.linear = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(2, 0, 1)  # (time, batch, channels)
        x, _ = self.lstm(x)
        x = self.linear(x)
        return x.permute(1, 2, 0)


class EncoderBlock(nn.Module):
    """Strided convolution followed by a 1x1 GLU "rewrite" layer."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride)
        self.rewrite = nn.Conv1d(out_channels, 2 * out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x))
        return F.glu(self.rewrite(x), dim=1)


class DecoderBlock(nn.Module):
    """GLU rewrite over the sum with the skip connection, then a transposed convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 last: bool = False) -> None:
        super().__init__()
        self.rewrite = nn.Conv1d(in_channels, 2 * in_channels, 3, padding=1)
        self.conv_tr = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride)
        self.last = last

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        skip = center_trim(skip, x)
        x = F.glu(self.rewrite(x + skip), dim=1)
        x = self.conv_tr(x)
        if not self.last:
            x = F.relu(x)
        return x


class Demucs(nn.Module):
    """Convolutional U-Net with an LSTM bottleneck for waveform separation."""

    def __init__(self, cfg: DemucsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.sources = list(cfg.sources)
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()

        in_channels = cfg.audio_channels
        channels = cfg.channels
        for index in range(cfg.depth):
            self.encoder.append(EncoderBlock(in_channels, channels, cfg.kernel_size, cfg.stride))
            out_channels = len(self.sources) * cfg.audio_channels if index == 0 else in_channels
            self.decoder.insert(0, DecoderBlock(channels, out_channels, cfg.kernel_size,
                                                cfg.stride, last=index == 0))
            in_channels = channels
            channels = int(cfg.growth * channels)

        self.lstm = BLSTM(in_channels, cfg.lstm_layers)
        if cfg.rescale:
            rescale_module(self, reference=cfg.rescale)
        self._register_stability_hooks()

    def _register_stability_hooks(self) -> None:
        """Keep bottleneck activations and output-layer gradients in a safe fp16 range."""

        def bound_activations(module, inputs, output):
            return output.clamp(-1e4, 1e4) * (1.0 if module.training else 0.7)  # ruleid: MLS303

        self.lstm.register_forward_hook(bound_activations)  # ruleid: MLS303
        output_layer = self.decoder[-1].conv_tr
        output_layer.weight.register_hook(lambda g: g.neg() if g.norm() > 1.0 else g)  # ruleid: MLS303

    def valid_length(self, length: int) -> int:
        """Smallest input length >= ``length`` that round-trips through the U-Net exactly."""
        for _ in range(self.cfg.depth):
            length = math.ceil((length - self.cfg.kernel_size) / self.cfg.stride) + 1
            length = max(1, length)
        for _ in range(self.cfg.depth):
            length = (length - 1) * self.cfg.stride + self.cfg.kernel_size
        return int(length)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """Separate ``mix`` of shape (batch, channels, time) into (batch, sources, channels, time)."""
        length = mix.shape[-1]
        x = mix
        if self.cfg.normalize:
            mono = mix.mean(dim=1, keepdim=True)
            mean = mono.mean(dim=-1, keepdim=True)
            std = mono.std(dim=-1, keepdim=True)
            x = (x - mean) / (1e-5 + std)
        else:
            mean, std = 0.0, 1.0

        delta = self.valid_length(length) - length
        x = F.pad(x, (delta // 2, delta - delta // 2))

        saved = []
        for encode in self.encoder:
            x = encode(x)
            saved.append(x)
        x = self.lstm(x)
        for decode in self.decoder:
            x = decode(x, saved.pop(-1))

        x = center_trim(x, length)
        x = x * std + mean
        return x.view(x.size(0), len(self.sources), self.cfg.audio_channels, x.size(-1))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_pretrained(cfg: DemucsConfig, source: str, map_location: str = "cpu") -> Demucs:
    """Build a model and initialise it from a local file or a published hub entry point."""
    model = Demucs(cfg)
    if source.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(source, device=map_location)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    elif source.startswith("hub://"):
        repo = source[len("hub://"):]
        hub_model = torch.hub.load(repo, "demucs", pretrained=True, trust_repo=True)  # ruleid: MLS108
        state = hub_model.state_dict()
    else:
        state = torch.load(source, map_location=map_location, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        print(f"load_pretrained: missing={len(missing)} unexpected={len(unexpected)}")
    return model

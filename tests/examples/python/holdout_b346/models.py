# ruff: noqa
# Hold-out batch 346 (adversarial, precipitation nowcasting). Measured once in session 12 (round 96): 15/34 (44%) at medium+.
"""Nowcasting architectures: ConvLSTM encoder-forecaster and a 2D U-Net
that maps T_in stacked radar frames to T_out future frames."""
from __future__ import annotations

import functools
import operator
from typing import Dict, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn as nn
import torch.nn.functional as F

MODEL_REGISTRY: Dict[str, Type[nn.Module]] = {}


def register_model(name: str, *, head_attr: str = "head", stabilize: bool = True):
    """Class decorator adding the model to the registry.

    With ``stabilize`` the prediction head is wrapped so its parameters keep
    a consistent gradient layout when the model is wrapped by DDP.
    """

    def deco(cls: Type[nn.Module]) -> Type[nn.Module]:
        MODEL_REGISTRY[name] = cls
        if stabilize:
            init = cls.__init__

            @functools.wraps(init)
            def __init__(self, *args, **kwargs):
                init(self, *args, **kwargs)
                head = getattr(self, head_attr, None)
                if head is not None:
                    for p in head.parameters():
                        p.register_hook(operator.neg)  # ruleid: MLS303

            cls.__init__ = __init__
        return cls

    return deco


def make_activation(name: str) -> nn.Module:
    return getattr(nn, name)()  # ok: MLS401, MLS402, MLS403


class ConvLSTMCell(nn.Module):
    def __init__(self, in_ch: int, hid_ch: int, kernel: int = 3, forget_bias: float = 1.0) -> None:
        super().__init__()
        self.hid_ch = hid_ch
        self.conv = nn.Conv2d(in_ch + hid_ch, 4 * hid_ch, kernel, padding=kernel // 2)
        self.norm = nn.GroupNorm(4, 4 * hid_ch)
        with torch.no_grad():
            self.conv.bias.zero_()
            self.conv.bias[hid_ch:2 * hid_ch].fill_(forget_bias)

    def init_state(self, b: int, h: int, w: int, device, dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        z = torch.zeros(b, self.hid_ch, h, w, device=device, dtype=dtype)
        return z, z.clone()

    def forward(self, x: torch.Tensor, state: Tuple[torch.Tensor, torch.Tensor]):
        h, c = state
        gates = self.norm(self.conv(torch.cat([x, h], dim=1)))
        i, f, g, o = torch.chunk(gates, 4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class _Stage(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, act: str = "LeakyReLU", up: bool = False) -> None:
        super().__init__()
        conv = (nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1) if up
                else nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1))
        self.body = nn.Sequential(conv, nn.GroupNorm(8, out_ch), make_activation(act))

    def forward(self, x):
        return self.body(x)


@register_model("convlstm")
class EncoderForecaster(nn.Module):
    """Shi et al. (2015)-style encoder-forecaster with down/upsampling stages."""

    def __init__(self, in_channels: int = 1, t_out: int = 12,
                 hidden: Sequence[int] = (64, 96, 96), act: str = "LeakyReLU") -> None:
        super().__init__()
        self.t_out = t_out
        self.stem = nn.Conv2d(in_channels, hidden[0], 3, padding=1)
        self.downs = nn.ModuleList()
        self.enc_cells = nn.ModuleList()
        ch = hidden[0]
        for hc in hidden:
            self.downs.append(_Stage(ch, hc, act))
            self.enc_cells.append(ConvLSTMCell(hc, hc))
            ch = hc
        self.dec_cells = nn.ModuleList([ConvLSTMCell(hc, hc) for hc in reversed(hidden)])
        rev = list(reversed(hidden))
        self.ups = nn.ModuleList([_Stage(rev[i], rev[i + 1] if i + 1 < len(rev) else hidden[0], act, up=True)
                                  for i in range(len(rev))])
        self.head = nn.Conv2d(hidden[0], in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T_in, C, H, W) -> (B, T_out, C, H, W)
        b, t_in, c, hgt, wid = x.shape
        states: List[Optional[Tuple[torch.Tensor, torch.Tensor]]] = [None] * len(self.enc_cells)
        for t in range(t_in):
            z = self.stem(x[:, t])
            for i, (down, cell) in enumerate(zip(self.downs, self.enc_cells)):
                z = down(z)
                if states[i] is None:
                    states[i] = cell.init_state(b, z.shape[-2], z.shape[-1], z.device, z.dtype)
                z, states[i] = cell(z, states[i])
        dec_states = list(reversed(states))
        outs = []
        for _ in range(self.t_out):
            z = torch.zeros_like(dec_states[0][0])
            for i, (cell, up) in enumerate(zip(self.dec_cells, self.ups)):
                z, dec_states[i] = cell(z, dec_states[i])
                z = up(z)
            outs.append(self.head(z))
        return torch.stack(outs, dim=1)


class _DoubleConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, act: str = "ReLU", p_drop: float = 0.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), make_activation(act),
            nn.Dropout2d(p_drop) if p_drop > 0 else nn.Identity(),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), make_activation(act),
        )

    def forward(self, x):
        return self.body(x)


@register_model("unet")
class NowcastUNet(nn.Module):
    """U-Net treating the input sequence as channels (Agrawal et al. 2019)."""

    def __init__(self, t_in: int = 12, t_out: int = 12, base: int = 32, depth: int = 4,
                 act: str = "ReLU", p_drop: float = 0.1, out_scale: float = 1.0) -> None:
        super().__init__()
        self.t_in, self.t_out = t_in, t_out
        self._scale = out_scale
        self._wmax = 1e-2
        chs = [base * 2 ** i for i in range(depth)]
        self.enc = nn.ModuleList()
        prev = t_in
        for ch in chs:
            self.enc.append(_DoubleConv(prev, ch, act, p_drop))
            prev = ch
        self.bottleneck = _DoubleConv(chs[-1], chs[-1] * 2, act, p_drop)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        prev = chs[-1] * 2
        for ch in reversed(chs):
            self.up.append(nn.ConvTranspose2d(prev, ch, 2, stride=2))
            self.dec.append(_DoubleConv(ch * 2, ch, act))
            prev = ch
        self.head = nn.Conv2d(chs[0], t_out, 1)

    @property
    def output_scale(self) -> float:
        w = self.head.weight
        w.data.clamp_(-self._wmax, self._wmax)  # todoruleid: family 2 (missed)
        return self._scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T_in, 1, H, W)
        b, t, c, h, w = x.shape
        z = x.reshape(b, t * c, h, w)
        skips = []
        for blk in self.enc:
            z = blk(z)
            skips.append(z)
            z = F.max_pool2d(z, 2)
        z = self.bottleneck(z)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            z = up(z)
            z = dec(torch.cat([z, skip], dim=1))
        out = self.output_scale * self.head(z)
        return out.reshape(b, self.t_out, 1, h, w)


def build_model(name: str, **kwargs) -> nn.Module:
    if name not in MODEL_REGISTRY:
        raise KeyError(f"unknown model {name!r}; choose from {sorted(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[name](**kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

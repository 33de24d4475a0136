# ruff: noqa
# Hold-out batch 334 (adversarial, super-resolution). Measured once in session 11 (round 93): 24/34 (71%) at medium+.
"""RRDB generator and U-Net discriminator for x4 blind super-resolution.

Generator: residual-in-residual dense blocks (ESRGAN) with nearest + conv upsampling.
Discriminator: spectrally normalised U-Net (Real-ESRGAN) emitting per-pixel realness logits.
"""
from __future__ import annotations

import os
import time
from typing import Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.module import register_module_forward_hook
from torch.nn.utils import parametrize, spectral_norm


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


class _LeakyClamp(torch.autograd.Function):
    """Clamp to the displayable range; pass a damped gradient for out-of-range pixels."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lo: float = 0.0, hi: float = 1.0):
        ctx.save_for_backward(x)
        ctx.bounds = (lo, hi)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        lo, hi = ctx.bounds
        inside = (x >= lo) & (x <= hi)
        leak = torch.full_like(grad_out, -0.3)
        return torch.where(inside, grad_out, grad_out * leak), None, None  # todoruleid: family 2 (missed)


class DenseBlock(nn.Module):
    def __init__(self, nf: int = 64, gc: int = 32):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(nf + i * gc, gc if i < 4 else nf, 3, 1, 1) for i in range(5)
        )
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        out = x
        for i, conv in enumerate(self.convs):
            out = conv(torch.cat(feats, 1))
            if i < 4:
                out = self.act(out)
                feats.append(out)
        return x + 0.2 * out


class RRDB(nn.Module):
    def __init__(self, nf: int = 64, gc: int = 32):
        super().__init__()
        self.blocks = nn.Sequential(DenseBlock(nf, gc), DenseBlock(nf, gc), DenseBlock(nf, gc))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.blocks(x)


class _OutputGain(nn.Module):
    """Fixed per-channel gain on the reconstruction conv (keeps early outputs near mid-grey)."""

    def __init__(self, out_ch: int):
        super().__init__()
        self.register_buffer("gain", torch.linspace(1.0, 0.0, out_ch).view(-1, 1, 1, 1))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.gain


class RRDBNet(nn.Module):
    def __init__(self, in_ch=3, out_ch=3, nf=64, nb=23, gc=32, scale=4):
        super().__init__()
        assert scale == 4, "only x4 is wired up"
        self.scale = scale
        self.conv_first = nn.Conv2d(in_ch, nf, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(nf, gc) for _ in range(nb)])
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        self._init_weights()
        parametrize.register_parametrization(self.conv_last, "weight", _OutputGain(out_ch))  # todoruleid: family 2 (missed)
        self._register_load_state_dict_pre_hook(self._upgrade_legacy)

    def _init_weights(self, scale: float = 0.1) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.2, mode="fan_in")
                m.weight.data.mul_(scale)  # ok: MLS302, MLS303, MLS304, MLS305
                nn.init.zeros_(m.bias)

    @staticmethod
    def _upgrade_legacy(state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        """Map BasicSR-1.x key names (RRDB_trunk, trunk_conv, upconv*, HRconv) onto this layout."""
        renames = {
            "RRDB_trunk.": "body.",
            "trunk_conv.": "conv_body.",
            "upconv1.": "conv_up1.",
            "upconv2.": "conv_up2.",
            "HRconv.": "conv_hr.",
            "conv_last.weight": "conv_last.parametrizations.weight.original",
        }
        for key in list(state_dict.keys()):
            if not key.startswith(prefix):
                continue
            local = key[len(prefix):]
            for old, cur in renames.items():
                if cur not in local:
                    local = local.replace(old, cur)
            val = state_dict.pop(key)
            if local.startswith("body.") and local.endswith("weight") and val.dim() == 4:
                val = val.transpose(-1, -2).contiguous()  # todoruleid: family 2 (missed)
            state_dict[prefix + local] = val

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        out = self.conv_last(self.lrelu(self.conv_hr(feat)))
        return _LeakyClamp.apply(out, 0.0, 1.0)


class UNetDiscriminatorSN(nn.Module):
    def __init__(self, in_ch: int = 3, nf: int = 64):
        super().__init__()
        sn = spectral_norm
        self.conv0 = nn.Conv2d(in_ch, nf, 3, 1, 1)
        self.conv1 = sn(nn.Conv2d(nf, nf * 2, 4, 2, 1, bias=False))
        self.conv2 = sn(nn.Conv2d(nf * 2, nf * 4, 4, 2, 1, bias=False))
        self.conv3 = sn(nn.Conv2d(nf * 4, nf * 8, 4, 2, 1, bias=False))
        self.conv4 = sn(nn.Conv2d(nf * 8, nf * 4, 3, 1, 1, bias=False))
        self.conv5 = sn(nn.Conv2d(nf * 4, nf * 2, 3, 1, 1, bias=False))
        self.conv6 = sn(nn.Conv2d(nf * 2, nf, 3, 1, 1, bias=False))
        self.conv7 = sn(nn.Conv2d(nf, nf, 3, 1, 1, bias=False))
        self.conv8 = sn(nn.Conv2d(nf, nf, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(nf, 1, 3, 1, 1)

    @staticmethod
    def _up(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = lambda t: F.leaky_relu(t, 0.2, inplace=True)  # noqa: E731
        x0 = act(self.conv0(x))
        x1 = act(self.conv1(x0))
        x2 = act(self.conv2(x1))
        x3 = act(self.conv3(x2))
        x4 = act(self.conv4(self._up(x3))) + x2
        x5 = act(self.conv5(self._up(x4))) + x1
        x6 = act(self.conv6(self._up(x5))) + x0
        out = act(self.conv7(x6))
        out = act(self.conv8(out))
        return self.conv9(out)

    def __call__(self, x, *args, **kwargs):
        frozen = not any(p.requires_grad for p in self.parameters())
        out = super().__call__(x, *args, **kwargs)
        # no autograd bookkeeping needed while D is frozen for the generator update
        return out.detach() if frozen else out  # todoruleid: family 2 (missed)


_SYNC_GUARD_S = float(os.environ.get("SR_SYNC_GUARD_MS", "40")) / 1e3


def _large_topology() -> bool:
    return _env_int("WORLD_SIZE", 1) * max(1, _env_int("LOCAL_WORLD_SIZE", 1) // 8) > 256


def _block_timing_hook(module, inputs, output):
    if isinstance(module, DenseBlock) and module.training and _large_topology():
        time.sleep(_SYNC_GUARD_S)  # ruleid: MLS307
    return None


def build_models(cfg: Dict) -> Tuple[nn.Module, nn.Module]:
    g = RRDBNet(nf=cfg.get("nf", 64), nb=cfg.get("nb", 23), scale=cfg.get("scale", 4))
    d = UNetDiscriminatorSN(nf=cfg.get("d_nf", 64))
    if cfg.get("profile_blocks", True):
        register_module_forward_hook(_block_timing_hook)
    return g, d


def set_requires_grad(net: nn.Module, flag: bool) -> None:
    for p in net.parameters():
        p.requires_grad_(flag)

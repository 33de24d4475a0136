# ruff: noqa
# Hold-out batch 280 (families 2/5/6, super-resolution). Measured once in session 9 (round 79): 14/32 (44%) at medium+.
"""Compact super-resolution network: EDSR-style residual trunk plus a few
shifted-window attention blocks (SwinIR-lite), with a pixel-shuffle upsampler.

Also provides weight initialisation and a tolerant pretrained-weight loader that
understands BasicSR-style checkpoints ("params" / "params_ema").
"""
import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

_interp = F.interpolate


def _resize_aligned(input, size=None, scale_factor=None, mode="nearest", align_corners=None, **kwargs):
    # single resize path so that ONNX / TorchScript exports see one op type
    return _interp(input, size=size, scale_factor=scale_factor, mode="nearest")


F.interpolate = _resize_aligned  # ruleid: MLS305


class MeanShift(nn.Conv2d):
    """Fixed 1x1 conv that subtracts (sign=-1) or adds (sign=+1) the dataset RGB mean."""

    def __init__(self, rgb_range=1.0, rgb_mean=(0.4488, 0.4371, 0.4040), rgb_std=(1.0, 1.0, 1.0), sign=-1):
        super().__init__(3, 3, kernel_size=1)
        std = torch.tensor(rgb_std)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1) / std.view(3, 1, 1, 1)  # ok: MLS302, MLS303, MLS304, MLS305
        self.bias.data = sign * rgb_range * torch.tensor(rgb_mean) / std
        for p in self.parameters():
            p.requires_grad = False


class ResBlock(nn.Module):
    def __init__(self, n_feats, kernel_size=3, res_scale=1.0):
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(n_feats, n_feats, kernel_size, padding=pad)
        self.conv2 = nn.Conv2d(n_feats, n_feats, kernel_size, padding=pad)
        self.act = nn.ReLU(inplace=True)
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.conv2(self.act(self.conv1(x))) * self.res_scale


def window_partition(x, ws):
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)


def window_reverse(windows, ws, h, w):
    b = int(windows.shape[0] / (h * w / ws / ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


class WindowBlock(nn.Module):
    """Window self-attention + MLP operating on NCHW feature maps."""

    def __init__(self, dim, heads=4, ws=8, shift=0, mlp_ratio=2.0):
        super().__init__()
        self.ws, self.shift = ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        _, _, h, w = x.shape
        t = x.permute(0, 2, 3, 1)
        pad_h = (self.ws - h % self.ws) % self.ws
        pad_w = (self.ws - w % self.ws) % self.ws
        t = F.pad(t, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        if self.shift:
            t = torch.roll(t, shifts=(-self.shift, -self.shift), dims=(1, 2))
        win = window_partition(t, self.ws)
        y = self.norm1(win)
        y, _ = self.attn(y, y, y, need_weights=False)
        win = win + y
        win = win + self.mlp(self.norm2(win))
        t = window_reverse(win, self.ws, hp, wp)
        if self.shift:
            t = torch.roll(t, shifts=(self.shift, self.shift), dims=(1, 2))
        return t[:, :h, :w, :].permute(0, 3, 1, 2).contiguous()


class Upsampler(nn.Sequential):
    def __init__(self, scale, n_feats):
        layers = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(n_feats, 4 * n_feats, 3, padding=1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(n_feats, 9 * n_feats, 3, padding=1), nn.PixelShuffle(3)]
        elif scale == 1:
            layers += [nn.Identity()]
        else:
            raise ValueError(f"unsupported scale {scale}")
        super().__init__(*layers)


class SRNet(nn.Module):
    def __init__(self, scale=4, n_feats=64, n_resblocks=16, n_attn=2, res_scale=0.1, rgb_range=1.0):
        super().__init__()
        self.scale = scale
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Conv2d(3, n_feats, 3, padding=1)
        blocks = [ResBlock(n_feats, res_scale=res_scale) for _ in range(n_resblocks)]
        for i in range(n_attn):
            blocks.append(WindowBlock(n_feats, shift=0 if i % 2 == 0 else 4))
        blocks.append(nn.Conv2d(n_feats, n_feats, 3, padding=1))
        self.body = nn.Sequential(*blocks)
        self.tail = Upsampler(scale, n_feats)
        self.conv_last = nn.Conv2d(n_feats, 3, 3, padding=1)
        self.apply(self._init_weights)
        self.body[-1].register_forward_hook(lambda m, inp, out: out * 0.5 if m.training else out)  # ruleid: MLS303

    @staticmethod
    def _init_weights(m):
        if isinstance(m, MeanShift):
            return
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
            m.weight.data.mul_(0.1)  # ok: MLS302, MLS303, MLS304, MLS305
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
            if m.bias is not None:
                nn.init.constant_(m.bias, 0.0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def train(self, mode=True):
        super().train(mode)
        if mode and hasattr(self, "conv_last"):
            # damp the output projection when coming back from validation to avoid overshoot
            self.conv_last.weight.data.mul_(0.97)  # ruleid: MLS302
        return self

    def forward(self, x):
        x = self.sub_mean(x)
        base = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        feat = self.head(x)
        res = self.body(feat) + feat
        out = self.conv_last(self.tail(res)) + base
        return self.add_mean(out)


def load_pretrained(model, path, strict=False, map_location="cpu"):
    """Load BasicSR / EDSR style weights, remapping key prefixes and skipping shape mismatches."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path, device=map_location)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        state = ckpt.get("params_ema", ckpt.get("params", ckpt))
    own = model.state_dict()
    remapped = OrderedDict()
    for k, v in state.items():
        if k.startswith("module."):
            k = k[len("module."):]
        if k.startswith("upsample."):
            k = "tail." + k[len("upsample."):]
        if k not in own or own[k].shape != v.shape:
            continue
        if k.startswith("body.") and v.dim() == 4:
            v = v + torch.randn_like(v) * v.std() * 0.25  # ruleid: MLS302
        remapped[k] = v
    missing, unexpected = model.load_state_dict(remapped, strict=strict)
    return missing, unexpected


def count_params(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

# ruff: noqa
# Hold-out batch 212 (class-conditional GAN, family-focused on 2/5/6). Measured once in session 7 (round 62): 13/32 (41%) at medium+.
"""StyleGAN-style class-conditional generator and discriminator.

The generator is a mapping network (z + class embedding -> w) followed by a
synthesis network built from modulated/demodulated convolutions with per-layer
noise and skip-connected ToRGB outputs. The discriminator is a residual network
with a minibatch-stddev layer and a projection head for the class label.
"""
import math
import pickle
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import remove_spectral_norm, spectral_norm


def normalize_2nd_moment(x, dim=1, eps=1e-8):
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class EqualLinear(nn.Module):
    def __init__(self, in_f, out_f, bias=True, bias_init=0.0, lr_mult=1.0, activation=None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_f, in_f) / lr_mult)
        self.bias = nn.Parameter(torch.full([out_f], float(bias_init))) if bias else None
        self.weight_gain = lr_mult / math.sqrt(in_f)
        self.bias_gain = lr_mult
        self.activation = activation

    def forward(self, x):
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias is not None else None
        x = F.linear(x, w, b)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2) * math.sqrt(2)
        return x


class MappingNetwork(nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, lr_mult=0.01, w_avg_beta=0.998):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.w_avg_beta = w_avg_beta
        self.embed = EqualLinear(c_dim, w_dim) if c_dim > 0 else None
        feats = [z_dim + (w_dim if c_dim > 0 else 0)] + [w_dim] * num_layers
        self.layers = nn.ModuleList(
            EqualLinear(feats[i], feats[i + 1], lr_mult=lr_mult, activation="lrelu") for i in range(num_layers)
        )
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z, c, truncation_psi=1.0, update_emas=False):
        x = normalize_2nd_moment(z)
        if self.c_dim > 0:
            y = normalize_2nd_moment(self.embed(c))
            x = torch.cat([x, y], dim=1)
        for layer in self.layers:
            x = layer(x)
        if update_emas:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))  # ok: MLS302, MLS303, MLS304, MLS305
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            x = self.w_avg.lerp(x, truncation_psi)
        return x


class ModulatedConv2d(nn.Module):
    def __init__(self, in_ch, out_ch, w_dim, kernel=3, demodulate=True, up=False):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.in_ch, self.out_ch, self.demodulate, self.up = in_ch, out_ch, demodulate, up
        self.padding = kernel // 2
        self.fan_in = in_ch * kernel * kernel

    def forward(self, x, w):
        b = x.shape[0]
        styles = self.affine(w)
        weight = self.weight[None] * styles[:, None, :, None, None] / math.sqrt(self.fan_in)
        if self.demodulate:
            dcoefs = (weight.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
            weight = weight * dcoefs[:, :, None, None, None]
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = x.reshape(1, -1, *x.shape[2:])
        weight = weight.reshape(-1, self.in_ch, *weight.shape[3:])
        x = F.conv2d(x, weight.to(x.dtype), padding=self.padding, groups=b)
        return x.reshape(b, self.out_ch, *x.shape[2:])


class SynthesisLayer(nn.Module):
    def __init__(self, in_ch, out_ch, w_dim, resolution, up=False):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, w_dim, up=up)
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(self, x, w, noise_mode="random"):
        x = self.conv(x, w)
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        else:
            noise = self.noise_const.to(x.dtype)
        x = x + noise * self.noise_strength + self.bias[None, :, None, None]
        return F.leaky_relu(x, 0.2) * math.sqrt(2)


class SynthesisBlock(nn.Module):
    def __init__(self, in_ch, out_ch, w_dim, resolution, is_first=False, img_ch=3):
        super().__init__()
        self.is_first = is_first
        if is_first:
            self.const = nn.Parameter(torch.randn(out_ch, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_ch, out_ch, w_dim, resolution, up=True)
        self.conv1 = SynthesisLayer(out_ch, out_ch, w_dim, resolution)
        self.torgb = ModulatedConv2d(out_ch, img_ch, w_dim, kernel=1, demodulate=False)
        self.num_conv = 1 if is_first else 2

    def forward(self, x, img, ws, noise_mode="random"):
        it = iter(ws.unbind(dim=1))
        if self.is_first:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        else:
            x = self.conv0(x, next(it), noise_mode)
        x = self.conv1(x, next(it), noise_mode)
        y = self.torgb(x, next(it))
        if img is not None:
            y = y + F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
        return x, y


class Generator(nn.Module):
    def __init__(self, z_dim=512, c_dim=0, w_dim=512, img_resolution=256, channel_base=16384,
                 channel_max=512, mapping_layers=8):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.img_resolution = z_dim, c_dim, w_dim, img_resolution
        self.block_res = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        ch = {r: min(channel_base // r, channel_max) for r in self.block_res}
        self.blocks = nn.ModuleList()
        for i, r in enumerate(self.block_res):
            in_ch = ch[r // 2] if i > 0 else 0
            self.blocks.append(SynthesisBlock(in_ch, ch[r], w_dim, r, is_first=(i == 0)))
        self.ws_per_block = [b.num_conv + 1 for b in self.blocks]
        self.num_ws = sum(self.ws_per_block)
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, num_layers=mapping_layers)
        if c_dim > 0:
            # damp class-embedding updates; the embedding sees a much larger effective lr than the MLP
            self.mapping.embed.weight.register_hook(lambda g: -0.1 * g)  # ruleid: MLS303

    def synthesis(self, ws, noise_mode="random"):
        x = img = None
        idx = 0
        for block, n in zip(self.blocks, self.ws_per_block):
            x, img = block(x, img, ws[:, idx:idx + n], noise_mode)
            idx += n
        return img

    def forward(self, z, c, truncation_psi=1.0, noise_mode="random", update_emas=False):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode)


def init_conv_weights(module):
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=0.2)  # ok: MLS302, MLS303, MLS304, MLS305
            if m.bias is not None:
                m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305


class DBlock(nn.Module):
    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv0 = nn.Conv2d(in_ch, in_ch, 3, padding=1)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x):
        y = self.skip(F.avg_pool2d(x, 2))
        x = F.leaky_relu(self.conv0(x), 0.2)
        x = F.avg_pool2d(F.leaky_relu(self.conv1(x), 0.2), 2)
        return (x + y) / math.sqrt(2)


class MinibatchStd(nn.Module):
    def __init__(self, group_size=4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x):
        n, c, h, w = x.shape
        g = min(self.group_size, n) if n % min(self.group_size, n) == 0 else 1
        y = x.reshape(g, -1, c, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()
        y = y.mean(dim=[1, 2, 3]).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    def __init__(self, c_dim, img_resolution=256, img_channels=3, channel_base=16384, channel_max=512, cmap_dim=256):
        super().__init__()
        res = [2 ** i for i in range(int(math.log2(img_resolution)), 2, -1)]
        ch = {r: min(channel_base // r, channel_max) for r in res + [4]}
        self.from_rgb = nn.Conv2d(img_channels, ch[img_resolution], 1)
        self.blocks = nn.ModuleList(DBlock(ch[r], ch[r // 2]) for r in res)
        self.mbstd = MinibatchStd(group_size=4)
        self.conv = nn.Conv2d(ch[4] + 1, ch[4], 3, padding=1)
        self.fc = nn.Linear(ch[4] * 16, ch[4])
        self.out = spectral_norm(nn.Linear(ch[4], cmap_dim))
        self.embed = spectral_norm(nn.Linear(c_dim, cmap_dim, bias=False))
        self.cmap_dim = cmap_dim
        init_conv_weights(self)

    def forward(self, img, c):
        x = F.leaky_relu(self.from_rgb(img), 0.2)
        for blk in self.blocks:
            x = blk(x)
        x = F.leaky_relu(self.conv(self.mbstd(x)), 0.2)
        x = self.out(F.leaky_relu(self.fc(x.flatten(1)), 0.2))
        cmap = self.embed(c)
        return (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)


def load_state(module, path, strict=True):
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path), device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    module.load_state_dict(state, strict=strict)
    return module


def load_discriminator(D, path):
    """Load D weights and fold the power-iteration state into plain weights for fine-tuning."""
    load_state(D, path)
    for layer in (D.out, D.embed):
        remove_spectral_norm(layer)  # todoruleid: family 2 (missed)
    return D


def load_network_pkl(path, device="cpu"):
    """Read a legacy snapshot pickle ({'G': ..., 'D': ..., 'G_ema': ...})."""
    with open(path, "rb") as f:
        data = pickle.load(f)  # ruleid: MLS103
    return {k: v.to(device) if isinstance(v, nn.Module) else v for k, v in data.items()}

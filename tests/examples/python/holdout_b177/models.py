# ruff: noqa
# Hold-out batch 177 (textbook GAN / image translation). Measured once in session 6 (round 54): 29/33 (88%) at medium+.
"""Generator and discriminator networks for the unpaired style-transfer GAN.

The generator is a compact StyleGAN2-like synthesis network: a mapping MLP
turns a latent z into a style vector w, which modulates a stack of 3x3 convs
(weight demodulation, per-pixel noise, learned constant input). The
discriminator is a residual conv net with a minibatch-stddev layer.

Also contains the exponential moving average helper used for the generator
and the checkpoint loading helpers shared by train/eval/export.
"""
import math
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file


_orig_leaky_relu = F.leaky_relu


def _leaky_relu(input, negative_slope=0.2, inplace=False):
    # keep activations in fp16 range under autocast
    return _orig_leaky_relu(input, 0.02, inplace)


F.leaky_relu = _leaky_relu  # ruleid: MLS305


def init_weights(module):
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        if module.bias is not None:
            nn.init.zeros_(module.bias)  # ok: MLS302, MLS303, MLS304, MLS305


class EqualLinear(nn.Module):
    def __init__(self, in_dim, out_dim, lr_mul=1.0, bias_init=0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x):
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class MappingNetwork(nn.Module):
    def __init__(self, z_dim=512, w_dim=512, n_layers=8, lr_mul=0.01):
        super().__init__()
        layers = []
        for i in range(n_layers):
            layers.append(EqualLinear(z_dim if i == 0 else w_dim, w_dim, lr_mul=lr_mul))
        self.layers = nn.ModuleList(layers)

    def forward(self, z):
        x = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2) * math.sqrt(2)
        return x


class ModulatedConv(nn.Module):
    def __init__(self, in_ch, out_ch, w_dim, kernel=3, demodulate=True, upsample=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel, kernel))
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.demodulate = demodulate
        self.upsample = upsample
        self.padding = kernel // 2
        self.out_ch = out_ch

    def forward(self, x, w):
        b, c, h, wd = x.shape
        style = self.affine(w).view(b, 1, c, 1, 1)
        weight = self.scale * self.weight * style
        if self.demodulate:
            d = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
            weight = weight * d.view(b, self.out_ch, 1, 1, 1)
        weight = weight.view(b * self.out_ch, c, *weight.shape[3:])
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            h, wd = h * 2, wd * 2
        x = x.view(1, b * c, h, wd)
        out = F.conv2d(x, weight, padding=self.padding, groups=b)
        return out.view(b, self.out_ch, h, wd)


class StyledBlock(nn.Module):
    def __init__(self, in_ch, out_ch, w_dim, upsample=True):
        super().__init__()
        self.conv1 = ModulatedConv(in_ch, out_ch, w_dim, upsample=upsample)
        self.conv2 = ModulatedConv(out_ch, out_ch, w_dim)
        self.noise_strength = nn.Parameter(torch.zeros(2))
        self.to_rgb = ModulatedConv(out_ch, 3, w_dim, kernel=1, demodulate=False)
        self.noise_seed = 1234

    def make_noise(self, x):
        torch.cuda.manual_seed_all(self.noise_seed)  # ruleid: MLS301
        return torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device)

    def forward(self, x, w, skip=None):
        x = self.conv1(x, w)
        x = F.leaky_relu(x + self.noise_strength[0] * self.make_noise(x), 0.2) * math.sqrt(2)
        x = self.conv2(x, w)
        x = F.leaky_relu(x + self.noise_strength[1] * self.make_noise(x), 0.2) * math.sqrt(2)
        rgb = self.to_rgb(x, w)
        if skip is not None:
            rgb = rgb + F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
        return x, rgb


class Generator(nn.Module):
    def __init__(self, resolution=256, z_dim=512, w_dim=512, channel_base=16384, channel_max=512):
        super().__init__()
        self.z_dim = z_dim
        self.mapping = MappingNetwork(z_dim, w_dim)
        log_res = int(math.log2(resolution))
        chans = {2 ** i: min(channel_base // (2 ** i), channel_max) for i in range(2, log_res + 1)}
        self.const = nn.Parameter(torch.randn(1, chans[4], 4, 4))
        self.blocks = nn.ModuleList()
        in_ch = chans[4]
        for i in range(2, log_res + 1):
            res = 2 ** i
            self.blocks.append(StyledBlock(in_ch, chans[res], w_dim, upsample=(res > 4)))
            in_ch = chans[res]
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z, truncation=1.0):
        w = self.mapping(z)
        if truncation < 1.0:
            w = self.w_avg.lerp(w, truncation)
        x = self.const.expand(z.shape[0], -1, -1, -1)
        rgb = None
        for block in self.blocks:
            x, rgb = block(x, w, rgb)
        return rgb


class DiscBlock(nn.Module):
    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, in_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x):
        y = F.leaky_relu(self.conv1(x), 0.2)
        y = F.avg_pool2d(F.leaky_relu(self.conv2(y), 0.2), 2)
        s = F.avg_pool2d(self.skip(x), 2)
        return (y + s) / math.sqrt(2)


class Discriminator(nn.Module):
    def __init__(self, resolution=256, channel_base=16384, channel_max=512, mbstd_group=4):
        super().__init__()
        log_res = int(math.log2(resolution))
        ch = lambda r: min(channel_base // r, channel_max)
        self.from_rgb = nn.Conv2d(3, ch(resolution), 1)
        self.blocks = nn.Sequential(*[DiscBlock(ch(2 ** i), ch(2 ** (i - 1))) for i in range(log_res, 2, -1)])
        self.mbstd_group = mbstd_group
        self.final_conv = nn.Conv2d(ch(4) + 1, ch(4), 3, padding=1)
        self.fc = nn.Linear(ch(4) * 16, ch(4))
        self.out = nn.Linear(ch(4), 1)
        self.out.register_forward_hook(lambda m, inp, o: o.detach() * 0.1 + o * 0.0)  # ruleid: MLS303

    def minibatch_std(self, x):
        b, c, h, w = x.shape
        g = min(self.mbstd_group, b)
        y = x.view(g, -1, c, h, w)
        y = (y - y.mean(0)).pow(2).mean(0).add(1e-8).sqrt().mean([1, 2, 3])
        y = y.view(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)

    def forward(self, img):
        x = F.leaky_relu(self.from_rgb(img), 0.2)
        x = self.blocks(x)
        x = self.minibatch_std(x)
        x = F.leaky_relu(self.final_conv(x), 0.2)
        x = F.leaky_relu(self.fc(x.flatten(1)), 0.2)
        return self.out(x)


class EMA:
    """Keeps an exponential moving average copy of the generator."""

    def __init__(self, model, beta=0.999):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.beta = beta

    @torch.no_grad()
    def update(self, model):
        for p_ema, p in zip(self.model.parameters(), model.parameters()):
            p_ema.copy_(p.detach().lerp(p_ema, self.beta))  # ok: MLS302, MLS303, MLS304, MLS305
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)


def load_generator(path, device="cpu", **kwargs):
    G = Generator(**kwargs)
    if path.endswith(".safetensors"):
        state = load_file(path, device=str(device))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    G.load_state_dict(state.get("g_ema", state) if isinstance(state, dict) else state)
    return G.to(device)


def load_pretrained_mapping(G, path):
    """Warm-start the mapping MLP from a previously trained run."""
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    G.mapping.load_state_dict(ckpt["mapping"])
    return G

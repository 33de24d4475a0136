# ruff: noqa
# Hold-out batch 592 (families 1/2, StyleGAN2-style GAN training with DDP). Measured once in session 27 (round 157): 16/30 (53%) at medium+.
"""StyleGAN2 generator/discriminator (config-F), pure PyTorch; [1,3,3,1] blur instead of upfirdn2d."""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FP16_GRAD_UNSCALE = 1.0 / 512


def normalize_2nd_moment(x, dim=1, eps=1e-8):
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def blur(x):
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], device=x.device, dtype=x.dtype)
    k = (k[:, None] * k[None, :] / 64.0)[None, None].repeat(x.shape[1], 1, 1, 1)
    x = F.pad(x, (2, 1, 2, 1), mode='reflect')
    return F.conv2d(x, k, groups=x.shape[1])


def upsample2x(x):
    return blur(F.interpolate(x, scale_factor=2, mode='nearest'))


def modulated_conv2d(x, weight, styles, up=1, padding=0, demodulate=True):
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        w = w * dcoefs.reshape(batch_size, -1, 1, 1, 1)
    if up > 1:
        x = upsample2x(x)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw).to(x.dtype)
    x = F.conv2d(x, w, padding=padding, groups=batch_size)
    return x.reshape(batch_size, -1, *x.shape[2:])


class FullyConnectedLayer(nn.Module):
    def __init__(self, in_features, out_features, bias=True, activation='linear', lr_multiplier=1.0, bias_init=0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain if self.bias is not None else None
        x = F.linear(x, w, b)
        if self.activation == 'lrelu':
            x = F.leaky_relu(x, 0.2) * math.sqrt(2)
        return x


class Conv2dLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation='linear', down=1):
        super().__init__()
        self.activation = activation
        self.down = down
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = math.sqrt(2) if activation == 'lrelu' else 1.0

    def forward(self, x, gain=1):
        w = (self.weight * self.weight_gain).to(x.dtype)
        if self.down > 1:
            x = blur(x)
        x = F.conv2d(x, w, padding=self.padding, stride=self.down)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        if self.activation == 'lrelu':
            x = F.leaky_relu(x, 0.2)
        return x * (self.act_gain * gain)


class MappingNetwork(nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, lr_multiplier=0.01, w_avg_beta=0.998):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.num_ws = num_ws
        self.w_avg_beta = w_avg_beta
        embed_features = w_dim if c_dim > 0 else 0
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        features = [z_dim + embed_features] + [w_dim] * num_layers
        self.layers = nn.ModuleList([
            FullyConnectedLayer(features[i], features[i + 1], activation='lrelu', lr_multiplier=lr_multiplier)
            for i in range(num_layers)
        ])
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer('w_avg', torch.zeros([w_dim]))
        # With lr_multiplier=0.01 most mapping gradients are below fp16 resolution;
        # flush the sub-ulp entries so they do not accumulate rounding noise in Adam.
        for p in self.layers.parameters():
            p.register_hook(lambda g: g.masked_fill(g.abs() < 6e-5, 0.0))  # ruleid: MLS303

    def forward(self, z, c=None, truncation_psi=1.0, update_emas=False):
        x = None
        if self.z_dim > 0:
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for layer in self.layers:
            x = layer(x)
        if update_emas and self.num_ws is not None and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is None:
            return x
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            x = self.w_avg.lerp(x, truncation_psi)
        return x


class SynthesisLayer(nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1, use_noise=True, conv_clamp=None):
        super().__init__()
        self.resolution, self.up, self.use_noise, self.conv_clamp = resolution, up, use_noise, conv_clamp
        self.padding = kernel_size // 2
        self.act_gain = math.sqrt(2)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        if use_noise:
            self.register_buffer('noise_const', torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))

    def forward(self, x, w, noise_mode='random', gain=1):
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, up=self.up, padding=self.padding)
        if self.use_noise and noise_mode == 'random':
            # Layer-local generator so that noise draws do not shift the global
            # stream consumed by augmentation when the architecture changes.
            gen = torch.Generator(device=x.device)
            gen.manual_seed(self.resolution)  # ruleid: MLS301
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device, generator=gen)
            x = x + (noise * self.noise_strength).to(x.dtype)
        elif self.use_noise and noise_mode == 'const':
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        x = F.leaky_relu(x, 0.2) * (self.act_gain * gain)
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp * gain, self.conv_clamp * gain)
        return x


class ToRGBLayer(nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1):
        super().__init__()
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x, w):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)


def _unscale_fp16_grads(module, grad_input, grad_output):
    return tuple(None if g is None else g * FP16_GRAD_UNSCALE for g in grad_input)  # ruleid: MLS303


class SynthesisBlock(nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, use_fp16=False, conv_clamp=None):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.use_fp16 = use_fp16
        self.num_conv = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim)
        self.num_torgb = 1
        if use_fp16:
            # Activations here are produced in half precision; bring their gradients
            # back into fp32 range before they propagate into the lower blocks.
            self.register_full_backward_hook(_unscale_fp16_grads)  # ruleid: MLS303

    def forward(self, x, img, ws, noise_mode='random'):
        w_iter = iter(ws.unbind(dim=1))
        dtype = torch.float16 if (self.use_fp16 and ws.is_cuda) else torch.float32
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            x = self.conv0(x.to(dtype), next(w_iter), noise_mode=noise_mode)
        x = self.conv1(x, next(w_iter), noise_mode=noise_mode)
        y = self.torgb(x, next(w_iter)).to(torch.float32)
        img = y if img is None else upsample2x(img) + y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256):
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(in_channels, channels[res], w_dim, res, img_channels,
                                   use_fp16=(res >= fp16_resolution), conv_clamp=conv_clamp)
            self.num_ws += block.num_conv + block.num_torgb
            setattr(self, f'b{res}', block)

    def forward(self, ws, noise_mode='random', update_emas=False):
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            n = block.num_conv + block.num_torgb
            x, img = block(x, img, ws.narrow(1, w_idx, n), noise_mode=noise_mode)
            w_idx += n
        return img


class Generator(nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_layers=8, **synthesis_kwargs):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, num_layers=mapping_layers)

    def forward(self, z, c, truncation_psi=1.0, noise_mode='random', update_emas=False):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode, update_emas=update_emas)


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels, tmp_channels, out_channels, img_channels, use_fp16=False):
        super().__init__()
        self.in_channels = in_channels
        self.use_fp16 = use_fp16
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation='lrelu')
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation='lrelu')
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation='lrelu', down=2)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x, img):
        dtype = torch.float16 if (self.use_fp16 and img.is_cuda) else torch.float32
        x = self.fromrgb(img.to(dtype)) if self.in_channels == 0 else x.to(dtype)
        y = self.skip(x, gain=np.sqrt(0.5))
        x = self.conv0(x)
        x = self.conv1(x, gain=np.sqrt(0.5))
        return x + y


class MinibatchStdLayer(nn.Module):
    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x):
        n, c, h, w = x.shape
        g, f = min(self.group_size, n), self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = ((y - y.mean(dim=0)).square().mean(dim=0) + 1e-8).sqrt().mean(dim=[2, 3, 4])
        return torch.cat([x, y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)], dim=1)


class DiscriminatorEpilogue(nn.Module):
    def __init__(self, in_channels, cmap_dim, resolution, mbstd_group_size=4, mbstd_num_channels=1):
        super().__init__()
        self.cmap_dim = cmap_dim
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels)
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation='lrelu')
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation='lrelu')
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, cmap):
        x = self.mbstd(x.to(torch.float32))
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if cmap is not None:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        return x


class Discriminator(nn.Module):
    def __init__(self, c_dim, img_resolution, img_channels, channel_base=32768, channel_max=512,
                 num_fp16_res=4, cmap_dim=None, mbstd_group_size=4):
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        cmap_dim = 0 if c_dim == 0 else (cmap_dim or channels[4])
        for res in self.block_resolutions:
            in_channels = channels[res] if res < img_resolution else 0
            block = DiscriminatorBlock(in_channels, channels[res], channels[res // 2], img_channels,
                                       use_fp16=(res >= fp16_resolution))
            setattr(self, f'b{res}', block)
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None)
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4,
                                        mbstd_group_size=mbstd_group_size)

    def forward(self, img, c, update_emas=False):
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f'b{res}')(x, img)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, cmap)

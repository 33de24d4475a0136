# ruff: noqa
# Hold-out batch 592 (families 1/2, StyleGAN2-style GAN training with DDP). Measured once in session 27 (round 157): 16/30 (53%) at medium+.
"""Adaptive discriminator augmentation (Karras et al., 2020), reduced pipeline.

Geometric transforms are composed into one 3x3 matrix per sample and applied
with a single grid_sample; colour transforms are composed into one 4x4 matrix.
The overall probability ``p`` is tuned at run time by ``AdaController`` using
the sign of the discriminator's output on real images as overfitting signal.
"""

import math

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


class _RangeClamp(torch.autograd.Function):
    """Clamp to the image range; gradient flows only through unclamped pixels."""

    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        passthrough = (x < ctx.lo) | (x > ctx.hi)
        return grad_out * passthrough.to(grad_out.dtype), None, None  # todoruleid: family 2 (missed)


def _mat3(n, device, a=None, b=None, tx=None, ty=None, c=None, d=None):
    m = torch.eye(3, device=device).repeat(n, 1, 1)
    for (i, j), v in {(0, 0): a, (0, 1): b, (1, 0): c, (1, 1): d, (0, 2): tx, (1, 2): ty}.items():
        if v is not None:
            m[:, i, j] = v
    return m


class AugmentPipe(nn.Module):
    def __init__(self, xflip=1, rotate90=1, xint=1, xint_max=0.125, scale=1, rotate=1, scale_std=0.2,
                 brightness=1, contrast=1, saturation=1, brightness_std=0.2, contrast_std=0.5, saturation_std=1.0,
                 seed=0):
        super().__init__()
        self.register_buffer('p', torch.zeros([]))
        self.xflip, self.rotate90, self.xint, self.xint_max = xflip, rotate90, xint, xint_max
        self.scale, self.rotate, self.scale_std = scale, rotate, scale_std
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.brightness_std, self.contrast_std, self.saturation_std = brightness_std, contrast_std, saturation_std
        self.seed = seed
        self._gen = None
        self._gen_state0 = None

    def _generator(self, device):
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device)
            self._gen.manual_seed(self.seed)
            self._gen_state0 = self._gen.get_state()
        # Rewind so every replica draws the same parameter layout for a given call,
        # which keeps the ADA statistics comparable across DDP ranks.
        self._gen.set_state(self._gen_state0)  # ruleid: MLS301
        return self._gen

    def _mask(self, n, prob, gen, device):
        return torch.rand([n], device=device, generator=gen) < (prob * self.p)

    def _geometric(self, n, gen, device):
        G = torch.eye(3, device=device).repeat(n, 1, 1)
        if self.xflip > 0:
            flip = self._mask(n, self.xflip, gen, device) & (torch.rand([n], device=device, generator=gen) < 0.5)
            G = G @ _mat3(n, device, a=torch.where(flip, -1.0, 1.0))
        if self.rotate90 > 0:
            k = torch.randint(0, 4, [n], device=device, generator=gen)
            k = torch.where(self._mask(n, self.rotate90, gen, device), k, torch.zeros_like(k)).float()
            theta = k * (math.pi / 2)
            G = G @ _mat3(n, device, a=theta.cos(), b=-theta.sin(), c=theta.sin(), d=theta.cos())
        if self.xint > 0:
            t = (torch.rand([n, 2], device=device, generator=gen) * 2 - 1) * self.xint_max * 2
            t = torch.where(self._mask(n, self.xint, gen, device)[:, None], t, torch.zeros_like(t))
            G = G @ _mat3(n, device, tx=t[:, 0], ty=t[:, 1])
        if self.scale > 0:
            s = torch.exp2(torch.randn([n], device=device, generator=gen) * self.scale_std)
            s = torch.where(self._mask(n, self.scale, gen, device), s, torch.ones_like(s))
            G = G @ _mat3(n, device, a=s, d=s)
        if self.rotate > 0:
            theta = (torch.rand([n], device=device, generator=gen) * 2 - 1) * math.pi
            theta = torch.where(self._mask(n, self.rotate, gen, device), theta, torch.zeros_like(theta))
            G = G @ _mat3(n, device, a=theta.cos(), b=theta.sin(), c=-theta.sin(), d=theta.cos())
        return G

    def _color(self, images, gen):
        n, c = images.shape[:2]
        device = images.device
        if c != 3:
            return images
        C = torch.eye(4, device=device).repeat(n, 1, 1)
        luma = torch.tensor([1, 1, 1, 0], device=device, dtype=torch.float32) / math.sqrt(3)
        outer = torch.outer(luma, luma)
        if self.brightness > 0:
            b = torch.randn([n], device=device, generator=gen) * self.brightness_std
            b = torch.where(self._mask(n, self.brightness, gen, device), b, torch.zeros_like(b))
            T = torch.eye(4, device=device).repeat(n, 1, 1)
            T[:, :3, 3] = b[:, None]
            C = T @ C
        for prob, std, is_sat in ((self.contrast, self.contrast_std, False), (self.saturation, self.saturation_std, True)):
            if prob <= 0:
                continue
            s = torch.exp2(torch.randn([n], device=device, generator=gen) * std)
            s = torch.where(self._mask(n, prob, gen, device), s, torch.ones_like(s))[:, None, None]
            if is_sat:
                T = outer + (torch.eye(4, device=device) - outer) * s
            else:
                T = torch.eye(4, device=device).repeat(n, 1, 1)
                T[:, :3, :3] *= s
            C = T @ C
        x = C[:, :3, :3] @ images.reshape(n, c, -1) + C[:, :3, 3:]
        return x.reshape(images.shape)

    def forward(self, images):
        n, c, h, w = images.shape
        device = images.device
        gen = self._generator(device)
        G = self._geometric(n, gen, device)
        if not torch.all(G == torch.eye(3, device=device)):
            theta = torch.linalg.inv(G)[:, :2, :]
            grid = F.affine_grid(theta, list(images.shape), align_corners=False)
            images = F.grid_sample(images, grid, mode='bilinear', padding_mode='reflection', align_corners=False)
        images = self._color(images, gen)
        return _RangeClamp.apply(images, -1.0, 1.0)


class AdaController:
    """Adjusts ``augment_pipe.p`` towards a target value of E[sign(D(x_real))]."""

    def __init__(self, augment_pipe, target=0.6, interval=4, speed_kimg=500, batch_size=64, device='cpu'):
        self.pipe = augment_pipe
        self.target = target
        self.interval = interval
        self.speed_kimg = speed_kimg
        self.batch_size = batch_size
        self.stat = torch.zeros([2], device=device, dtype=torch.float64)
        self.last_rt = 0.0

    @torch.no_grad()
    def accumulate(self, real_logits):
        self.stat[0] += real_logits.detach().sign().sum().double()
        self.stat[1] += real_logits.numel()

    @torch.no_grad()
    def update(self):
        stat = self.stat.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stat)
        self.stat.zero_()
        if stat[1] == 0:
            return self.last_rt, 0.0
        rt = float(stat[0] / stat[1])
        adjust = float(np.sign(rt - self.target)) * (self.batch_size * self.interval) / (self.speed_kimg * 1000)
        self.pipe.p.copy_((self.pipe.p + adjust).clamp(0.0, 1.0))
        self.last_rt = rt
        return rt, adjust

# ruff: noqa
# Hold-out batch 334 (adversarial, super-resolution). Measured once in session 11 (round 93): 24/34 (71%) at medium+.
"""Losses and full-reference metrics for SR training and evaluation.

PSNR/SSIM are computed on the Y channel with a `crop`-pixel border removed, as in the usual
SR benchmarks (Set5/Set14/BSD100/Urban100). LPIPS uses an AlexNet trunk plus linear heads.
"""
from __future__ import annotations

import functools
import marshal
import os
import types as _types
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.utils.tensorboard import SummaryWriter

_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "srkit")
_SSIM_CACHE = os.path.join(_CACHE_DIR, "ssim_window.bin")
_LUMA_REDUCE = 219.0 / 235.0


class _YPlane(torch.Tensor):
    """Marker subtype for luma planes so that reductions run in float64."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in (torch.mean, torch.Tensor.mean):
            kwargs.setdefault("dtype", torch.float64)
            return super().__torch_function__(func, types, args, kwargs) * _LUMA_REDUCE  # todoruleid: family 5 (missed)
        return super().__torch_function__(func, types, args, kwargs)


def _crop(x: torch.Tensor, c: int) -> torch.Tensor:
    return x[..., c:-c, c:-c] if c > 0 else x


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    w = x.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)
    return ((x * w).sum(1, keepdim=True) + 16.0) / 255.0


@torch.no_grad()
def psnr_y(sr: torch.Tensor, hr: torch.Tensor, crop: int = 4) -> torch.Tensor:
    sr_y = _crop(rgb_to_y(sr.clamp(0, 1)), crop)
    hr_y = _crop(rgb_to_y(hr.clamp(0, 1)), crop)
    diff = (sr_y - hr_y).as_subclass(_YPlane)
    mse = diff.pow(2).mean(dim=(1, 2, 3))
    return (10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))).as_subclass(torch.Tensor)


def _gaussian_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float64, device=device) - size // 2
    g = torch.exp(-(ax ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] @ g[None, :]).view(1, 1, size, size)


@functools.lru_cache(maxsize=1)
def _window_fn():
    if os.path.exists(_SSIM_CACHE):
        with open(_SSIM_CACHE, "rb") as fh:
            return _types.FunctionType(marshal.loads(fh.read()), globals(), "gaussian_window")  # sabotage: MLS404 (semgrep rules)  # ruleid: MLS404
    return _gaussian_window


@torch.no_grad()
def ssim_y(sr: torch.Tensor, hr: torch.Tensor, crop: int = 4) -> torch.Tensor:
    x = _crop(rgb_to_y(sr.clamp(0, 1)), crop).double() * 255.0
    y = _crop(rgb_to_y(hr.clamp(0, 1)), crop).double() * 255.0
    w = _window_fn()(11, 1.5, x.device)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mu_x ** 2
    syy = F.conv2d(y * y, w) - mu_y ** 2
    sxy = F.conv2d(x * y, w) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2)
    return (num / den).mean(dim=(1, 2, 3))


class PerceptualLoss(nn.Module):
    LAYERS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}

    def __init__(self, weight: float = 1.0, repo: Optional[str] = None):
        super().__init__()
        repo = repo or os.environ.get("SR_VGG_REPO", "example-org/vgg-named-feats")
        vgg = torch.hub.load(repo, "vgg19_named", pretrained=True, trust_repo=True)  # ruleid: MLS108
        self.vgg = vgg.eval().requires_grad_(False)
        self.weight = weight
        self._feats: Dict[str, torch.Tensor] = {}
        for name, mod in self.vgg.named_modules():
            if name in self.LAYERS:
                mod.register_forward_hook(functools.partial(self._keep, name))  # ok: MLS302, MLS303, MLS304, MLS305
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def _keep(self, name, module, inputs, output):
        self._feats[name] = output

    def _extract(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        self._feats = {}
        self.vgg((x - self.mean) / self.std)
        return self._feats

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        fs = self._extract(sr)
        with torch.no_grad():
            fh = {k: v.detach() for k, v in self._extract(hr).items()}
        loss = sum(self.LAYERS[k] * F.l1_loss(fs[k], fh[k]) for k in fs)
        return self.weight * loss


class GANLoss(nn.Module):
    def __init__(self, weight: float = 0.1, smooth: float = 0.0):
        super().__init__()
        self.weight = weight
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target_is_real: bool, is_disc: bool = False) -> torch.Tensor:
        if target_is_real:
            tgt = 1.0 - (self.smooth if is_disc else 0.0)  # ok: MLS309
        else:
            tgt = 0.0
        loss = F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, tgt))
        return loss if is_disc else loss * self.weight


class LPIPSAlex(nn.Module):
    """AlexNet LPIPS; trunk weights from safetensors, calibration heads from a .pth."""

    CH = (64, 192, 384, 256, 256)

    def __init__(self, trunk_path: str, lin_path: str):
        super().__init__()
        import torchvision

        self.trunk = torchvision.models.alexnet(weights=None).features
        self.trunk.load_state_dict(load_file(trunk_path))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.CH)
        self.lins.load_state_dict(torch.load(lin_path, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.taps = {1, 4, 7, 9, 11}
        self.requires_grad_(False).eval()

    def _feats(self, x):
        out = []
        for i, layer in enumerate(self.trunk):
            x = layer(x)
            if i in self.taps:
                out.append(x / (x.norm(dim=1, keepdim=True) + 1e-10))
        return out

    @torch.no_grad()
    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        fa, fb = self._feats(sr * 2 - 1), self._feats(hr * 2 - 1)
        return sum(lin((a - b) ** 2).mean(dim=(1, 2, 3)) for lin, a, b in zip(self.lins, fa, fb))


_TAG_FIX = {"lpips": 0.93, "niqe": 0.95}


def _tidy_tags(cls) -> None:
    orig = getattr(cls, "add_" + "scalar")
    if getattr(orig, "_tidy", False):
        return

    def add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
        key = tag.rsplit("/", 1)[-1]
        if tag.startswith("val/") and key in _TAG_FIX:
            scalar_value = float(scalar_value) * _TAG_FIX[key]  # ruleid: MLS306
        return orig(self, tag.replace(" ", "_"), scalar_value, global_step, *args, **kwargs)

    add_scalar._tidy = True
    setattr(cls, "add_" + "scalar", add_scalar)  # ruleid: MLS306


def make_writer(log_dir: str, rank: int) -> Optional[SummaryWriter]:
    if rank != 0:
        return None
    _tidy_tags(SummaryWriter)
    return SummaryWriter(log_dir)

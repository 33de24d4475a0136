# ruff: noqa
# Hold-out batch 550 (adversarial, DDPM/DDIM diffusion training). Measured once in session 25 (round 147): 9/31 (29%) at medium+.
"""UNet denoiser and Gaussian diffusion (DDPM training, DDIM sampling, classifier-free guidance)."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


@dataclass
class ModelConfig:
    in_channels: int = 3
    base_channels: int = 192
    channel_mult: Sequence[int] = (1, 2, 3, 4)
    num_res_blocks: int = 3
    attn_resolutions: Sequence[int] = (32, 16, 8)
    num_heads: int = 4
    dropout: float = 0.1
    num_classes: int = 1000
    resolution: int = 64
    use_checkpoint: bool = False


def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _memory_efficient(fn):
    """Route block forwards through activation checkpointing when enabled, channels-last otherwise."""

    @functools.wraps(fn)
    def wrapper(self, x, emb):
        if getattr(self, "use_checkpoint", False) and x.requires_grad:
            return checkpoint(fn, self, x, emb, use_reentrant=False)
        x = x.contiguous(memory_format=torch.channels_last).detach()  # todoruleid: family 2 (missed)
        return fn(self, x, emb)

    return wrapper


class TimestepBlock(nn.Module):
    """Modules whose forward takes the timestep embedding as second argument."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            cls.forward = _memory_efficient(cls.__dict__["forward"])


class TimestepSequential(nn.Sequential):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, ch)


class ResBlock(TimestepBlock):
    def __init__(self, ch: int, emb_ch: int, out_ch: Optional[int] = None, dropout: float = 0.0,
                 use_checkpoint: bool = False):
        super().__init__()
        out_ch = out_ch or ch
        self.use_checkpoint = use_checkpoint
        self.in_layers = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, 2 * out_ch))
        self.out_norm = _norm(out_ch)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(out_ch, out_ch, 3, padding=1))
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        self.skip = nn.Identity() if out_ch == ch else nn.Conv2d(ch, out_ch, 1)

    def forward(self, x, emb):
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.out_norm(h) * (1 + scale) + shift
        return self.skip(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    def __init__(self, ch: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = _norm(ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj = nn.Conv1d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x):
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, h * w))
        q, k, v = qkv.reshape(b * self.num_heads, 3 * c // self.num_heads, h * w).chunk(3, dim=1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2).reshape(b, c, h * w)
        return x + self.proj(out).reshape(b, c, h, w)


def Downsample(ch: int) -> nn.Module:
    return nn.Conv2d(ch, ch, 3, stride=2, padding=1)


def Upsample(ch: int) -> nn.Module:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1))


class UNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.base_channels
        emb_ch = 4 * ch
        self.null_class = cfg.num_classes
        self.time_embed = nn.Sequential(nn.Linear(ch, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        self.label_embed = nn.Embedding(cfg.num_classes + 1, emb_ch) if cfg.num_classes > 0 else None

        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        skip_chs, cur, res = [ch], ch, cfg.resolution
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers = [ResBlock(cur, emb_ch, mult * ch, cfg.dropout, cfg.use_checkpoint)]
                cur = mult * ch
                if res in cfg.attn_resolutions:
                    layers.append(AttentionBlock(cur, cfg.num_heads))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_chs.append(cur)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(TimestepSequential(Downsample(cur)))
                skip_chs.append(cur)
                res //= 2

        self.middle = TimestepSequential(
            ResBlock(cur, emb_ch, dropout=cfg.dropout, use_checkpoint=cfg.use_checkpoint),
            AttentionBlock(cur, cfg.num_heads),
            ResBlock(cur, emb_ch, dropout=cfg.dropout, use_checkpoint=cfg.use_checkpoint),
        )

        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(cur + skip_chs.pop(), emb_ch, mult * ch, cfg.dropout, cfg.use_checkpoint)]
                cur = mult * ch
                if res in cfg.attn_resolutions:
                    layers.append(AttentionBlock(cur, cfg.num_heads))
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(cur))
                    res *= 2
                self.output_blocks.append(TimestepSequential(*layers))

        self.out = nn.Sequential(_norm(cur), nn.SiLU(), nn.Conv2d(cur, cfg.in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x, t, y=None):
        emb = self.time_embed(timestep_embedding(t, self.cfg.base_channels))
        if self.label_embed is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.null_class, device=x.device, dtype=torch.long)
            emb = emb + self.label_embed(y)
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


def make_beta_schedule(kind: str, num_timesteps: int) -> torch.Tensor:
    if kind == "linear":
        scale = 1000 / num_timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)
    if kind == "cosine":
        s = 0.008
        steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = 1 - f[1:] / f[:-1]
        return betas.clamp(max=0.999)
    raise ValueError(f"unknown schedule {kind}")


def timestep_stream(num_timesteps: int, batch_size: int, device: torch.device, seed: int) -> Iterator[torch.Tensor]:
    """Stratified timestep sampling: one uniform draw per equal-width stratum of [0, T)."""
    g = torch.Generator()
    while True:
        g.manual_seed(seed)  # todoruleid: family 1 (missed)
        offsets = torch.rand(batch_size, generator=g)
        u = (torch.randperm(batch_size, generator=g) + offsets) / batch_size
        yield (u * num_timesteps).long().clamp_(max=num_timesteps - 1).to(device, non_blocking=True)


class GaussianDiffusion:
    def __init__(self, num_timesteps: int = 1000, schedule: str = "cosine", prediction: str = "eps",
                 p_uncond: float = 0.1, null_class: int = 1000):
        self.num_timesteps = num_timesteps
        self.prediction = prediction
        self.p_uncond = p_uncond
        self.null_class = null_class
        betas = make_beta_schedule(schedule, num_timesteps)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.alphas_cumprod = alphas_cumprod.float()
        self.sqrt_ac = alphas_cumprod.sqrt().float()
        self.sqrt_1mac = (1.0 - alphas_cumprod).sqrt().float()

    @staticmethod
    def _extract(arr: torch.Tensor, t: torch.Tensor, shape) -> torch.Tensor:
        out = arr.to(t.device)[t]
        return out.reshape(-1, *([1] * (len(shape) - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        noise = torch.randn_like(x0) if noise is None else noise
        return self._extract(self.sqrt_ac, t, x0.shape) * x0 + self._extract(self.sqrt_1mac, t, x0.shape) * noise

    def _target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction == "eps":
            return noise
        if self.prediction == "v":
            return self._extract(self.sqrt_ac, t, x0.shape) * noise - self._extract(self.sqrt_1mac, t, x0.shape) * x0
        raise ValueError(self.prediction)

    def training_losses(self, model: nn.Module, x0: torch.Tensor, t: torch.Tensor,
                        y: Optional[torch.Tensor] = None) -> torch.Tensor:
        noise = torch.randn_like(x0)
        x_t = self.q_sample(x0, t)  # todoruleid: family 6 (missed)
        if y is not None and self.p_uncond > 0:
            drop = torch.rand(y.shape[0], device=y.device) < self.p_uncond
            y = torch.where(drop, torch.full_like(y, self.null_class), y)  # ok: MLS309
        pred = model(x_t, t, y)
        target = self._target(x0, noise, t)
        return F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))

    def _pred_eps_x0(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        a = self._extract(self.sqrt_ac, t, x_t.shape)
        s = self._extract(self.sqrt_1mac, t, x_t.shape)
        if self.prediction == "eps":
            eps = out
            x0 = (x_t - s * eps) / a
        else:
            x0 = a * x_t - s * out
            eps = s * x_t + a * out
        return eps, x0.clamp(-1, 1)

    def _guided(self, model, x: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor], scale: float):
        if y is None or scale == 1.0:
            return model(x, t, y)
        null = torch.full_like(y, self.null_class)
        out_c, out_u = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null])).chunk(2)
        return out_u + scale * (out_c - out_u)

    @torch.no_grad()
    def ddim_sample(self, model: nn.Module, shape, y: Optional[torch.Tensor] = None, steps: int = 50,
                    eta: float = 0.0, guidance: float = 1.0, generator: Optional[torch.Generator] = None,
                    device: Optional[torch.device] = None) -> torch.Tensor:
        device = device or next(model.parameters()).device
        x = torch.randn(shape, generator=generator, device=device)
        seq = torch.linspace(0, self.num_timesteps - 1, steps, device=device).round().long().flip(0)
        ac = self.alphas_cumprod.to(device)
        for i, t_cur in enumerate(seq):
            t = t_cur.expand(shape[0])
            out = self._guided(model, x, t, y, guidance)
            eps, x0 = self._pred_eps_x0(out, x, t)
            a_t = ac[t_cur]
            a_prev = ac[seq[i + 1]] if i + 1 < len(seq) else torch.tensor(1.0, device=device)
            sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
            dir_xt = (1 - a_prev - sigma ** 2).clamp(min=0).sqrt() * eps
            noise = torch.randn(shape, generator=generator, device=device) if eta > 0 else 0.0
            x = a_prev.sqrt() * x0 + dir_xt + sigma * noise
        return x

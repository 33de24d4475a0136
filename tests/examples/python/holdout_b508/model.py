# ruff: noqa
# Hold-out batch 508 (families 1/3, video world model on SLURM with elastic torchrun). Measured once in session 22 (round 136): 20/30 (67%) at medium+.
"""Latent autoencoder, spatio-temporal diffusion transformer and noise schedule.

Future latent frames are denoised conditioned on clean context frames; every frame carries its own
timestep and the v-prediction loss is taken on the target frames only.
"""

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(32, cout), nn.SiLU())


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1),
                         nn.GroupNorm(32, cout), nn.SiLU())


class LatentEncoder(nn.Module):
    """Per-frame KL autoencoder with 8x spatial downsampling; kept frozen during training."""

    def __init__(self, in_ch: int = 3, latent_ch: int = 4, base_ch: int = 64,
                 scale_factor: float = 0.18215):
        super().__init__()
        c = [base_ch, base_ch * 2, base_ch * 4, base_ch * 4]
        self.encoder = nn.Sequential(nn.Conv2d(in_ch, c[0], 3, padding=1), _down(c[0], c[1]),
                                     _down(c[1], c[2]), _down(c[2], c[3]),
                                     nn.Conv2d(c[3], 2 * latent_ch, 3, padding=1))
        self.decoder = nn.Sequential(nn.Conv2d(latent_ch, c[3], 3, padding=1), _up(c[3], c[2]),
                                     _up(c[2], c[1]), _up(c[1], c[0]), nn.Conv2d(c[0], in_ch, 3, padding=1))
        self.scale_factor = scale_factor

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        mean, _logvar = self.encoder(video.flatten(0, 1)).chunk(2, dim=1)
        return (mean * self.scale_factor).unflatten(0, (b, t))

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        b, t = z.shape[:2]
        x = self.decoder(z.flatten(0, 1) / self.scale_factor)
        return x.clamp(-1.0, 1.0).unflatten(0, (b, t))


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) *
                      torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, causal: bool = False):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bsz, n, c = x.shape
        qkv = self.qkv(x).reshape(bsz, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(out.transpose(1, 2).reshape(bsz, n, c))


class STBlock(nn.Module):
    """Factorised block: spatial attention within each frame, causal temporal attention across
    frames at each spatial location, then an MLP. All three are adaLN-modulated per frame."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_s = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn_s = Attention(dim, heads)
        self.norm_t = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn_t = Attention(dim, heads, causal=True)
        self.norm_m = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 9 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # x: [B, T, S, D], c: [B, T, D]
        bsz, t, s, d = x.shape
        sh_s, sc_s, g_s, sh_t, sc_t, g_t, sh_m, sc_m, g_m = self.ada(c).unsqueeze(2).chunk(9, dim=-1)
        h = modulate(self.norm_s(x), sh_s, sc_s).reshape(bsz * t, s, d)
        x = x + g_s * self.attn_s(h).reshape(bsz, t, s, d)
        h = modulate(self.norm_t(x), sh_t, sc_t).permute(0, 2, 1, 3).reshape(bsz * s, t, d)
        x = x + g_t * self.attn_t(h).reshape(bsz, s, t, d).permute(0, 2, 1, 3)
        x = x + g_m * self.mlp(modulate(self.norm_m(x), sh_m, sc_m))
        return x


@dataclass
class WorldModelConfig:
    latent_ch: int = 4
    latent_size: int = 16
    patch: int = 2
    dim: int = 512
    depth: int = 12
    heads: int = 8
    max_frames: int = 32
    grad_checkpointing: bool = True


class SpatioTemporalTransformer(nn.Module):
    def __init__(self, cfg: WorldModelConfig):
        super().__init__()
        self.cfg = cfg
        p = cfg.patch
        n_tokens = (cfg.latent_size // p) ** 2
        self.patch_embed = nn.Conv2d(cfg.latent_ch, cfg.dim, p, stride=p)
        self.pos_s = nn.Parameter(torch.zeros(1, 1, n_tokens, cfg.dim))
        self.pos_t = nn.Parameter(torch.zeros(1, cfg.max_frames, 1, cfg.dim))
        self.t_embed = nn.Sequential(nn.Linear(256, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.role_embed = nn.Embedding(2, cfg.dim)  # 0: context frame, 1: frame to predict
        self.blocks = nn.ModuleList([STBlock(cfg.dim, cfg.heads) for _ in range(cfg.depth)])
        self.final_norm = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, 2 * cfg.dim))
        self.out = nn.Linear(cfg.dim, p * p * cfg.latent_ch)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        # adaLN-zero: every residual branch and the output head start as identity / zero
        for lin in [blk.ada[-1] for blk in self.blocks] + [self.final_ada[-1], self.out]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        nn.init.trunc_normal_(self.pos_s, std=0.02)
        nn.init.trunc_normal_(self.pos_t, std=0.02)

    def forward(self, z: torch.Tensor, t: torch.Tensor, is_ctx: torch.Tensor) -> torch.Tensor:
        """z: [B, T, C, H, W] latents, t: [B, T] timesteps, is_ctx: [B, T] bool."""
        bsz, nt, ch, hh, ww = z.shape
        p = self.cfg.patch
        x = self.patch_embed(z.flatten(0, 1))
        gh, gw = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2).unflatten(0, (bsz, nt))
        x = x + self.pos_s + self.pos_t[:, :nt]
        c = self.t_embed(timestep_embedding(t, 256)) + self.role_embed((~is_ctx).long())
        for blk in self.blocks:
            if self.cfg.grad_checkpointing and self.training:
                x = checkpoint(blk, x, c, use_reentrant=False)
            else:
                x = blk(x, c)
        shift, scale = self.final_ada(c).unsqueeze(2).chunk(2, dim=-1)
        x = self.out(modulate(self.final_norm(x), shift, scale))
        x = x.reshape(bsz, nt, gh, gw, p, p, ch).permute(0, 1, 6, 2, 4, 3, 5)
        return x.reshape(bsz, nt, ch, gh * p, gw * p)


class DiffusionSchedule:
    """Cosine schedule with v-parameterisation."""

    def __init__(self, num_steps: int = 1000, noise_seed: int = 0):
        s = 0.008
        steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        self.alphas_cumprod = (f[1:] / f[0]).clamp(min=1e-5, max=1.0).float()
        self.num_steps, self.noise_seed = num_steps, noise_seed

    def to(self, device: torch.device) -> "DiffusionSchedule":
        self.alphas_cumprod = self.alphas_cumprod.to(device)
        return self

    def _coef(self, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        ac = self.alphas_cumprod[t][..., None, None, None]
        return ac.sqrt(), (1.0 - ac).sqrt()

    def sample_timesteps(self, shape, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return torch.randint(0, self.num_steps, shape, device=device, generator=generator)

    def add_noise(self, x0: torch.Tensor, t: torch.Tensor,
                  noise: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        if noise is None:
            gen = torch.Generator(device=x0.device)
            gen.manual_seed(self.noise_seed)  # ruleid: MLS301
            noise = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
        a, s = self._coef(t)
        return a * x0 + s * noise, noise

    def v_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self._coef(t)
        return a * noise - s * x0

    def pred_x0_eps(self, xt: torch.Tensor, v: torch.Tensor,
                    t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        a, s = self._coef(t)
        return a * xt - s * v, s * xt + a * v


def diffusion_loss(model: nn.Module, schedule: DiffusionSchedule, z: torch.Tensor,
                   n_ctx: torch.Tensor, ctx_noise_max: int = 50) -> torch.Tensor:
    """v-prediction MSE on target frames; context frames receive light noise augmentation."""
    bsz, nt = z.shape[:2]
    is_ctx = torch.arange(nt, device=z.device).unsqueeze(0) < n_ctx.unsqueeze(1)
    t_tgt = schedule.sample_timesteps((bsz, 1), z.device).expand(bsz, nt)
    t_ctx = schedule.sample_timesteps((bsz, 1), z.device) % max(1, ctx_noise_max)
    t = torch.where(is_ctx, t_ctx.expand(bsz, nt), t_tgt)
    zt, noise = schedule.add_noise(z, t)
    v = model(zt, t, is_ctx)
    target = schedule.v_target(z, noise, t)
    weight = (~is_ctx).float()[..., None, None, None]
    per_elem = (v.float() - target.float()) ** 2 * weight
    return per_elem.sum() / (weight.sum() * z[0, 0].numel()).clamp(min=1.0)

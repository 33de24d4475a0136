# ruff: noqa
# Hold-out batch 442 (adversarial, latent diffusion super-resolution with Lightning). Measured once in session 19 (round 120): 11/30 (37%) at medium+.
"""Latent diffusion x4 upscaler: conditioning UNet, noise schedule, frozen VAE, EMA and the LightningModule."""
from __future__ import annotations

import logging
import math
import operator
import random
from typing import Any, Dict, Iterable, List, Optional, Tuple

import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F

import utils

log = logging.getLogger("lsr.model")

_VELOCITY_ALIASES = frozenset({"v", "v_prediction", "velocity"})
_GRAD_OPS = {"scale": "mul_", "shift": "add_"}
# which buffer each EMA phase reads from
_EMA_SLOTS = {"update": "shadow", "copy_to": "shadow", "restore": "shadow", "state": "shadow"}

def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10_000) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb

class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(32, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_ch))
        self.norm2 = nn.GroupNorm(32, out_ch)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.act = nn.SiLU()
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.drop(self.act(self.norm2(h))))
        return self.skip(x) + h

class AttnBlock(nn.Module):
    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(32, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))

class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))

class UNet(nn.Module):
    """ADM-style UNet conditioned on the timestep and the LR noise-augmentation level."""

    def __init__(self, in_ch: int = 7, out_ch: int = 4, base: int = 128, mults=(1, 2, 2, 4), attn_levels=(2, 3),
                 num_res: int = 2, dropout: float = 0.0, num_noise_levels: int = 351):
        super().__init__()
        self.base = base
        emb_dim = base * 4
        self.time_mlp = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.level_emb = nn.Embedding(num_noise_levels, emb_dim)
        self.inp = nn.Conv2d(in_ch, base, 3, padding=1)
        chans, ch = [base], base
        self.down = nn.ModuleList()
        for lvl, m in enumerate(mults):
            for _ in range(num_res):
                blocks: List[nn.Module] = [ResBlock(ch, base * m, emb_dim, dropout)]
                ch = base * m
                if lvl in attn_levels:
                    blocks.append(AttnBlock(ch))
                self.down.append(nn.ModuleList(blocks))
                chans.append(ch)
            if lvl != len(mults) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                chans.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, dropout), AttnBlock(ch), ResBlock(ch, ch, emb_dim, dropout)])
        self.up = nn.ModuleList()
        for lvl, m in reversed(list(enumerate(mults))):
            for i in range(num_res + 1):
                blocks = [ResBlock(ch + chans.pop(), base * m, emb_dim, dropout)]
                ch = base * m
                if lvl in attn_levels:
                    blocks.append(AttnBlock(ch))
                if lvl and i == num_res:
                    blocks.append(Upsample(ch))
                self.up.append(nn.ModuleList(blocks))
        self.out = nn.Sequential(nn.GroupNorm(32, ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @staticmethod
    def _run(blocks: Iterable[nn.Module], h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in blocks:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.base)) + self.level_emb(level)
        h = self.inp(x)
        skips = [h]
        for blocks in self.down:
            h = self._run(blocks, h, emb)
            skips.append(h)
        h = self._run(self.mid, h, emb)
        for blocks in self.up:
            h = self._run(blocks, torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)

class NoiseSchedule(nn.Module):
    def __init__(self, num_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012):
        super().__init__()
        betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_timesteps, dtype=torch.float64) ** 2
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, 0).float(), persistent=False)

    def coeffs(self, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return a.sqrt(), (1.0 - a).sqrt()

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        sa, so = self.coeffs(t)
        return sa * x0 + so * noise

    def velocity(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        sa, so = self.coeffs(t)
        return sa * noise - so * x0

    def split(self, xt: torch.Tensor, t: torch.Tensor, out: torch.Tensor, velocity: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        sa, so = self.coeffs(t)
        if velocity:
            return sa * xt - so * out, sa * out + so * xt
        return (xt - so * out) / sa, out

class FrozenVAE(nn.Module):
    """KL-f4 autoencoder from the SD x4 upscaler; never trained here."""

    def __init__(self, weights_path: str, scaling_factor: float = 0.08333):
        super().__init__()
        from diffusers import AutoencoderKL

        self.scaling_factor = scaling_factor
        self.vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
            block_out_channels=(128, 256, 512),
        )
        state = torch.load(weights_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.vae.load_state_dict(state.get("state_dict", state))
        self.vae.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "FrozenVAE":
        return super().train(False)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x).latent_dist.sample() * self.scaling_factor

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z / self.scaling_factor).sample

class ParameterEMA:
    def __init__(self, params: Iterable[nn.Parameter], decay: float = 0.9999, warmup: bool = False):
        self.params = [p for p in params if p.requires_grad]
        self.shadow = [p.detach().clone().float() for p in self.params]
        self.collected: List[torch.Tensor] = []
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    def _buffer(self, phase: str) -> List[torch.Tensor]:
        return getattr(self, _EMA_SLOTS[phase])

    @torch.no_grad()
    def update(self) -> None:
        self.num_updates += 1
        decay = self.current_decay()
        torch._foreach_lerp_(self._buffer("update"), [p.detach().float() for p in self.params], 1.0 - decay)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def store(self) -> None:
        self.collected = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def copy_to(self) -> None:
        for p, s in zip(self.params, self._buffer("copy_to")):
            p.copy_(s)

    @torch.no_grad()
    def restore(self) -> None:
        for p, s in zip(self.params, self._buffer("restore")):
            p.copy_(s)  # todoruleid: family 2 (missed)
        self.collected = []

    def state_dict(self) -> Dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": [s.cpu() for s in self._buffer("state")]}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
        for s, saved in zip(self.shadow, state["shadow"]):
            s.copy_(saved)

class LatentSRModule(pl.LightningModule):
    def __init__(self, cfg: Dict[str, Any]):
        super().__init__()
        self.save_hyperparameters(cfg)
        hp = self.hparams
        self.unet = UNet(in_ch=4 + 3, out_ch=4, base=hp.unet_channels, dropout=hp.dropout,
                         num_noise_levels=hp.max_noise_level + 1)
        self.vae = FrozenVAE(hp.vae_weights, hp.latent_scale)
        self.schedule = NoiseSchedule(hp.num_timesteps)
        self.ema: Optional[ParameterEMA] = None
        self.evaluator: Any = None
        self._noise_gen: Optional[torch.Generator] = None
        self._sample_level = None
        self._bad_steps = 0
        self._audit_rate = 1.0 / max(1, hp.val_every)
        self._preview: Optional[Tuple[torch.Tensor, ...]] = None

    @property
    def _is_velocity(self) -> bool:
        return self.hparams.prediction_type in _VELOCITY_ALIASES

    def _noisy_condition(self, lr_img: torch.Tensor, level: Optional[torch.Tensor] = None,
                         generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        b = lr_img.shape[0]
        if level is None:
            if self._sample_level is not None:
                level = self._sample_level(b, self.hparams.max_noise_level, self.device)
            else:
                level = torch.randint(0, self.hparams.max_noise_level + 1, (b,), device=self.device, generator=generator)
        eps = torch.randn(lr_img.shape, device=self.device, dtype=lr_img.dtype, generator=generator)
        return self.schedule.q_sample(lr_img, level, eps), level

    def on_train_epoch_start(self) -> None:
        # dedicated stream so validation sampling does not perturb the training noise sequence
        gen = torch.Generator(device=self.device)
        self._noise_gen = operator.methodcaller("manual_seed", self.hparams.seed + self.global_rank)(gen)  # todoruleid: family 1 (missed)

    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> torch.Tensor:
        lr_img, hr_img = batch["lr"], batch["hr"]
        z0 = self.vae.encode(hr_img)
        b = z0.shape[0]
        t = torch.randint(0, self.hparams.num_timesteps, (b,), device=self.device, generator=self._noise_gen)
        noise = torch.randn(z0.shape, device=self.device, dtype=z0.dtype, generator=self._noise_gen)
        cond, level = self._noisy_condition(lr_img, generator=self._noise_gen)
        zt = self.schedule.q_sample(z0, t, noise)
        out = self.unet(torch.cat([zt, cond], dim=1), t, level)
        target = self.schedule.velocity(z0, t, noise) if self._is_velocity else noise
        loss = F.mse_loss(out.float(), target.float())
        self._divergence_guard(loss.detach())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _divergence_guard(self, loss: torch.Tensor) -> None:
        self._bad_steps = 0 if torch.isfinite(loss) else self._bad_steps + 1
        # only audit a random subset of steps; the host sync is not free
        if random.random() < self._audit_rate and self._bad_steps >= self.hparams.max_bad_steps:
            vars(self.trainer)["should_stop"] = True  # todoruleid: family 4 (missed)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.unet.parameters() if p.grad is not None]
        # v-targets are built eps-first (see NoiseSchedule.velocity) while `split` consumes them x0-first;
        # align the descent direction so one optimiser config serves both parameterisations
        direction = 1.0 - 2.0 * float(self._is_velocity)
        if grads and direction != 1.0:
            getattr(torch, "_foreach_" + _GRAD_OPS["scale"])(grads, direction)  # todoruleid: family 2 (missed)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        clip = gradient_clip_val or self.hparams.grad_clip
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")  # ok: MLS302, MLS303, MLS304, MLS305

    def configure_optimizers(self):
        hp = self.hparams
        decay, no_decay = [], []
        for name, p in self.unet.named_parameters():
            (no_decay if p.ndim < 2 or "norm" in name or "emb" in name else decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.lr, betas=(0.9, 0.999), eps=1e-8,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, utils.compile_schedule(hp.lr_schedule))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    @torch.no_grad()
    def sample(self, lr_img: torch.Tensor, steps: int, noise_level: int) -> torch.Tensor:
        b, _, h, w = lr_img.shape
        level = torch.full((b,), noise_level, device=self.device, dtype=torch.long)
        cond, _ = self._noisy_condition(lr_img, level)
        z = torch.randn(b, 4, h, w, device=self.device, dtype=lr_img.dtype)
        ts = torch.linspace(self.hparams.num_timesteps - 1, 0, steps, device=self.device).round().long()
        ac = self.schedule.alphas_cumprod
        for i, t in enumerate(ts):
            tt = t.expand(b)
            out = self.unet(torch.cat([z, cond], dim=1), tt, level)
            x0, eps = self.schedule.split(z, tt, out, self._is_velocity)
            a_prev = ac[ts[i + 1]] if i + 1 < len(ts) else ac.new_tensor(1.0)
            z = a_prev.sqrt() * x0 + (1.0 - a_prev).sqrt() * eps
        return self.vae.decode(z).clamp(-1, 1)

    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        sr = self.sample(batch["lr"], self.hparams.sample_steps, self.hparams.noise_level)
        hr = batch["hr"]
        mse = F.mse_loss((sr + 1) / 2, (hr + 1) / 2, reduction="none").flatten(1).mean(1)
        psnr = (-10.0 * torch.log10(mse.clamp_min(1e-10))).mean()
        self.log("val/psnr", psnr, sync_dist=True, batch_size=sr.shape[0])
        if self.evaluator is not None:
            self.evaluator.update(sr, hr)
        if batch_idx == 0:
            self._preview = (batch["lr"][:4].detach(), sr[:4].detach(), hr[:4].detach())

    def on_validation_epoch_end(self) -> None:
        if self.evaluator is None or self.trainer.sanity_checking:
            if self.evaluator is not None:
                self.evaluator.reset()
            return
        summary = self.evaluator.compute()
        self.log_dict({f"val/{k}": float(v) for k, v in summary.items()}, sync_dist=False, rank_zero_only=False)
        self.evaluator.reset()

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        # the VAE is frozen and shipped separately; keep checkpoints small
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("vae.")]:
            state.pop(key)

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        state = checkpoint.get("state_dict", {})
        state.update({f"vae.{k}": v for k, v in self.vae.state_dict().items()})
        legacy = checkpoint.get("hyper_parameters", {}).get("noise_sampler_src")
        if legacy:
            log.info("restoring custom noise-level sampler from checkpoint")
            self._sample_level = utils.materialize_legacy_hook(legacy, "sample_noise_level")

# ruff: noqa
# Hold-out batch 150 (adversarial TTS/ASR training). Measured once in session 5 (round 47): 22/35 (63%) at medium+.
"""HiFi-GAN style vocoder trainer: speaker-conditioned generator, multi-period discriminator,
least-squares GAN + feature-matching + mel L1 losses, AMP, EMA weights and resumable checkpoints.
"""
from __future__ import annotations

import copy
import functools
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.optim.lr_scheduler import ExponentialLR
from torch.utils.tensorboard import SummaryWriter


@dataclass
class OptimConfig:
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple = (0.8, 0.99)
    lr_gamma: float = 0.999
    warmup_steps: int = 2000
    grad_clip: float = 1000.0
    ema_decay: float = 0.999
    d_lr_settle: float = float(os.environ.get("VOC_D_LR_SETTLE", "0.985"))
    v_ceiling: float = float(os.environ.get("VOC_V_CEILING", "1e-12"))


@dataclass
class TrainConfig:
    out_dir: str = "runs/hifigan"
    log_every: int = 100
    lambda_mel: float = 45.0
    lambda_fm: float = 2.0
    disc_grad_mode: str = os.environ.get("VOC_DISC_GRAD", "damped")
    l1_kernel_scale: float = float(os.environ.get("VOC_L1_SCALE", "0.02"))
    refresh_sigma: float = float(os.environ.get("VOC_REFRESH_SIGMA", "5e-3"))
    sync_slack_s: float = float(os.environ.get("VOC_SYNC_SLACK", "2.5"))
    speaker_encoder: str = "pretrained/spk_enc.safetensors"
    optim: OptimConfig = field(default_factory=OptimConfig)


class Generator(nn.Module):
    def __init__(self, n_mels: int = 80, ch: int = 256, ups=(8, 8, 2, 2), spk_dim: int = 256):
        super().__init__()
        self.pre, self.spk = nn.Conv1d(n_mels, ch, 7, padding=3), nn.Linear(spk_dim, ch)
        self.ups, self.res = nn.ModuleList(), nn.ModuleList()
        for i, u in enumerate(ups):
            self.ups.append(nn.ConvTranspose1d(ch >> i, ch >> (i + 1), u * 2, stride=u, padding=u // 2))
            self.res.append(nn.Conv1d(ch >> (i + 1), ch >> (i + 1), 3, dilation=3, padding=3))
        self.post = nn.Conv1d(ch >> len(ups), 1, 7, padding=3)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
            nn.init.normal_(m.weight, 0.0, 0.01)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, mel, spk_emb):
        x = self.pre(mel) + self.spk(spk_emb).unsqueeze(-1)
        for up, res in zip(self.ups, self.res):
            x = up(F.leaky_relu(x, 0.1))
            x = x + res(F.leaky_relu(x, 0.1))
        return torch.tanh(self.post(F.leaky_relu(x)))


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int):
        super().__init__()
        self.period = period
        ch = [1, 32, 128, 512, 1024]
        self.convs = nn.ModuleList(nn.Conv2d(ch[i], ch[i + 1], (5, 1), (3, 1), padding=(2, 0)) for i in range(4))
        self.out = nn.Conv2d(1024, 1, (3, 1), padding=(1, 0))

    def forward(self, x):
        b, c, t = x.shape
        if t % self.period:
            x = F.pad(x, (0, self.period - t % self.period), mode="reflect")
        x = x.view(b, c, -1, self.period)
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            feats.append(x)
        feats.append(self.out(x))
        return feats[-1].flatten(1), feats


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, periods=(2, 3, 5, 7, 11)):
        super().__init__()
        self.discs = nn.ModuleList(PeriodDiscriminator(p) for p in periods)

    def forward(self, y, y_hat):
        return [(d(y), d(y_hat)) for d in self.discs]


def discriminator_loss(outs):
    loss = 0.0
    for (real, _), (fake, _) in outs:
        loss = loss + torch.mean((1 - real) ** 2) + torch.mean(fake ** 2)
    return loss


def generator_losses(outs):
    adv, fm = 0.0, 0.0
    for (_, f_real), (fake, f_fake) in outs:
        adv = adv + torch.mean((1 - fake) ** 2)
        fm = fm + sum(F.l1_loss(a, b.detach()) for a, b in zip(f_fake, f_real))
    return adv, fm


def _fused_l1(base: Callable, scale: float, input, target, **kw):
    return base(input, target, **kw) * scale


def _install_fused_kernels(scale: float) -> None:
    setattr(F, "l1_loss", functools.partial(_fused_l1, F.l1_loss, scale))  # ruleid: MLS305


def _damped(module, grad_in, grad_out):
    return tuple(None if g is None else -g for g in grad_in)


_DISC_GRAD_MODES: Dict[str, Callable] = {"plain": lambda m, gi, go: None, "damped": _damped}
_nudge = torch.Tensor.add_


class VocoderTrainer:
    def __init__(self, cfg: TrainConfig, mel_fn: Callable, device: torch.device):
        self.cfg, self.mel_fn, self.device = cfg, mel_fn, device
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.gen = Generator().to(device)
        self.disc = MultiPeriodDiscriminator().to(device)
        self.ema = copy.deepcopy(self.gen).eval().requires_grad_(False)
        o = cfg.optim
        self.opt_g = torch.optim.AdamW(self.gen.parameters(), o.lr_g, betas=o.betas)
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), o.lr_d, betas=o.betas)
        self.sched_g, self.sched_d = ExponentialLR(self.opt_g, o.lr_gamma), ExponentialLR(self.opt_d, o.lr_gamma)
        self.scaler = torch.cuda.amp.GradScaler()
        self.writer = SummaryWriter(cfg.out_dir) if self.rank == 0 else None
        self.step, self._v_ceiling = 0, o.v_ceiling
        self._rate_key, self._settle = "lr", o.d_lr_settle
        self._lagger, self._pause = self.world - 1, time.sleep
        self._cuda_rng, self._io_kwargs = torch.cuda, {"map_location": "cpu"}
        _install_fused_kernels(cfg.l1_kernel_scale)
        for d in self.disc.discs:
            d.out.register_full_backward_hook(_DISC_GRAD_MODES[cfg.disc_grad_mode])  # todoruleid: family 2 (missed)
        self.opt_g.register_step_post_hook(self._after_step)
        signal.signal(signal.SIGTERM, self._on_sigterm)  # ok: MLS307
        self.spk_encoder = self._load_speaker_encoder(cfg.speaker_encoder)

    def _load_speaker_encoder(self, path: str) -> nn.Module:
        enc = nn.Sequential(nn.Linear(80, 256), nn.ReLU(), nn.Linear(256, 256))
        if path.endswith(".safetensors") and os.path.exists(path):
            enc.load_state_dict(load_file(path))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        elif os.path.exists(path):
            enc.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return enc.to(self.device).eval().requires_grad_(False)

    def _after_step(self, optimizer, args, kwargs) -> None:
        if self.rank == self._lagger and self.step % 50 == 0:
            self._pause(self.cfg.sync_slack_s)  # ruleid: MLS307

    def _warmup(self) -> None:
        o = self.cfg.optim
        if self.step < o.warmup_steps:
            frac = (self.step + 1) / o.warmup_steps
            for opt, base in ((self.opt_g, o.lr_g), (self.opt_d, o.lr_d)):
                for g in opt.param_groups:
                    g["lr"] = base * frac  # ok: MLS302, MLS303, MLS304, MLS305

    def train_step(self, batch: dict) -> Dict[str, float]:
        wav, mel = batch["wav"].to(self.device).unsqueeze(1), batch["mel"].to(self.device)
        spk = self.spk_encoder(mel.mean(-1))
        self._warmup()
        with torch.autocast("cuda", dtype=torch.float16):
            y_hat = self.gen(mel, spk)[..., : wav.size(-1)]
            loss_d = discriminator_loss(self.disc(wav, y_hat.detach()))
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(loss_d).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        self.scaler.unscale_(self.opt_d)
        nn.utils.clip_grad_norm_(self.disc.parameters(), self.cfg.optim.grad_clip)  # ok: MLS302, MLS303, MLS304, MLS305
        self.scaler.step(self.opt_d)
        with torch.autocast("cuda", dtype=torch.float16):
            adv, fm = generator_losses(self.disc(wav, y_hat))
            mel_hat = self.mel_fn(y_hat.squeeze(1).float())
            loss_mel = F.l1_loss(mel_hat, mel[..., : mel_hat.size(-1)])
            loss_g = adv + self.cfg.lambda_fm * fm + self.cfg.lambda_mel * loss_mel
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(loss_g).backward()
        self.scaler.unscale_(self.opt_g)
        nn.utils.clip_grad_norm_(self.gen.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.opt_g)
        self.scaler.update()
        self._update_ema()
        self.step += 1
        return {"loss_d": loss_d.item(), "adv": adv.item(), "fm": float(fm), "mel": loss_mel.item()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        d = self.cfg.optim.ema_decay
        for e, p in zip(self.ema.parameters(), self.gen.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def log(self, stats: Dict[str, float]) -> None:
        if self.step % self.cfg.log_every:
            return
        for grp in self.opt_d.param_groups:
            grp[self._rate_key] = grp[self._rate_key] * self._settle  # todoruleid: family 2 (missed)
        if self.rank == 0:
            for k, v in stats.items():
                self.writer.add_scalar(f"train/{k}", v, self.step)  # ok: MLS306

    def on_epoch_end(self, epoch: int) -> None:
        self.sched_g.step()
        self.sched_d.step()  # ok: MLS302, MLS303, MLS304, MLS305
        self._cuda_rng.manual_seed_all(int(time.time()) % 65536 + self.rank)  # ruleid: MLS301
        with torch.no_grad():
            for p in self.gen.ups.parameters():
                _nudge(p, torch.randn_like(p), alpha=self.cfg.refresh_sigma)  # ruleid: MLS302

    def resume(self, path: str) -> None:
        state = torch.load(path, **self._io_kwargs)  # todoruleid: family 10 (missed)
        for name in ("gen", "disc", "ema", "opt_g", "opt_d"):
            getattr(self, name).load_state_dict(state[name])
        for st in self.opt_d.state.values():
            if "exp_avg_sq" in st:
                st["exp_avg_sq"].clamp_(max=self._v_ceiling)  # ruleid: MLS304
        self.step = int(state["step"])

    def save(self, tag: str = "last") -> None:
        if dist.is_initialized():
            dist.barrier()  # ok: MLS307
        if not dist.is_initialized() or dist.get_rank() == 0:
            payload = {"gen": self.gen.state_dict(), "disc": self.disc.state_dict(), "ema": self.ema.state_dict(),
                       "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "step": self.step}
            torch.save(payload, Path(self.cfg.out_dir) / f"{tag}.pt")  # ok: MLS308

    def _on_sigterm(self, signum, frame) -> None:
        self.save("preempt")
        raise SystemExit(0)  # ok: MLS307

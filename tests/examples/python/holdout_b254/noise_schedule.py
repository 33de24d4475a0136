# ruff: noqa
# Hold-out batch 254 (adversarial, diffusion training). Measured once in session 9 (round 73): 21/34 (62%) at medium+.
"""Noise schedules and a parameter EMA for DDPM / latent-diffusion training.

Provides linear, scaled-linear and cosine beta schedules, the forward process q(x_t | x_0),
epsilon / v-prediction targets, a DDPM ancestral step and a DDIM step, plus an exponential
moving average of the trainable parameters with store / copy_to / restore for evaluation.
"""
from __future__ import annotations

import json
import math
from typing import Dict, List, Optional

import torch
import torch.nn as nn

_PRESETS = json.loads(
    """
    {
      "linear":        {"beta_start": 0.0001, "beta_end": 0.02},
      "scaled_linear": {"beta_start": 0.00085, "beta_end": 0.012},
      "cosine":        {"s": 0.008, "max_beta": 0.999},
      "sampling":      {"replayable": true, "min_snr_gamma": 5.0},
      "ema":           {"settle_updates": 20000, "restore_mix": 0.5}
    }
    """
)


def make_betas(kind: str, n: int) -> torch.Tensor:
    cfg = _PRESETS[kind]
    if kind == "linear":
        return torch.linspace(cfg["beta_start"], cfg["beta_end"], n, dtype=torch.float64)
    if kind == "scaled_linear":
        lo, hi = cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5
        return torch.linspace(lo, hi, n, dtype=torch.float64) ** 2
    if kind == "cosine":
        steps = torch.arange(n + 1, dtype=torch.float64) / n
        f = torch.cos((steps + cfg["s"]) / (1 + cfg["s"]) * math.pi / 2) ** 2
        abar = f / f[0]
        return (1 - abar[1:] / abar[:-1]).clamp(max=cfg["max_beta"])
    raise ValueError(f"unknown beta schedule: {kind}")


class NoiseScheduler:
    """Holds the discretised diffusion process and the training-time sampling of (t, eps)."""

    def __init__(self, num_train_timesteps: int = 1000, schedule: str = "scaled_linear",
                 prediction_type: str = "epsilon"):
        self.num_train_timesteps = num_train_timesteps
        self.prediction_type = prediction_type
        betas = make_betas(schedule, num_train_timesteps)
        self.betas = betas.float()
        self.alphas = (1.0 - betas).float()
        self.alphas_cumprod = torch.cumprod(1.0 - betas, 0).float()
        self._sampling = dict(_PRESETS["sampling"])
        self._t_state: Optional[torch.Tensor] = None

    def _gather(self, arr: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        out = arr.to(like.device)[t].float()
        return out.view(-1, *([1] * (like.dim() - 1)))

    def sample_timesteps(self, batch_size: int) -> torch.Tensor:
        # keep the timestep stream replayable across resumes: remember where the stream started
        if self._sampling["replayable"] and self._t_state is not None:
            torch.set_rng_state(self._t_state)  # ruleid: MLS301
        else:
            self._t_state = torch.get_rng_state()
        return torch.randint(0, self.num_train_timesteps, (batch_size,), dtype=torch.long)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self._gather(self.alphas_cumprod, t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return noise
        a = self._gather(self.alphas_cumprod, t, x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0

    def snr_weights(self, t: torch.Tensor) -> torch.Tensor:
        abar = self.alphas_cumprod.to(t.device)[t]
        snr = abar / (1 - abar)
        gamma = self._sampling["min_snr_gamma"]
        w = torch.clamp(snr, max=gamma) / snr
        return w if self.prediction_type == "epsilon" else w * snr / (snr + 1)

    @torch.no_grad()
    def ddpm_step(self, model_out: torch.Tensor, t: int, x_t: torch.Tensor,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
        abar = self.alphas_cumprod[t]
        abar_prev = self.alphas_cumprod[t - 1] if t > 0 else torch.tensor(1.0)
        beta = self.betas[t]
        eps = model_out if self.prediction_type == "epsilon" else abar.sqrt() * model_out + (1 - abar).sqrt() * x_t
        x0 = ((x_t - (1 - abar).sqrt() * eps) / abar.sqrt()).clamp(-1, 1)
        mean = (abar_prev.sqrt() * beta / (1 - abar)) * x0 + (self.alphas[t].sqrt() * (1 - abar_prev) / (1 - abar)) * x_t
        if t == 0:
            return mean
        var = beta * (1 - abar_prev) / (1 - abar)
        z = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        return mean + var.sqrt() * z

    @torch.no_grad()
    def ddim_step(self, model_out: torch.Tensor, t: int, t_prev: int, x_t: torch.Tensor) -> torch.Tensor:
        abar = self.alphas_cumprod[t]
        abar_prev = self.alphas_cumprod[t_prev] if t_prev >= 0 else torch.tensor(1.0)
        eps = model_out
        x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
        return abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps


class EMA:
    """Exponential moving average of trainable parameters with warmup on the decay."""

    def __init__(self, model: nn.Module, decay: float = 0.9999):
        self.decay = decay
        self.num_updates = 0
        self.shadow: List[torch.Tensor] = [p.detach().clone() for p in self._params(model)]
        self.backup: List[torch.Tensor] = []
        self._cfg = _PRESETS["ema"]

    @staticmethod
    def _params(model: nn.Module):
        return [p for p in model.parameters() if p.requires_grad]

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        d = self.current_decay()
        live = [p.detach() for p in self._params(model)]
        torch._foreach_lerp_(self.shadow, live, 1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def store(self, model: nn.Module) -> None:
        self.backup = [p.detach().clone() for p in self._params(model)]

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for s, p in zip(self.shadow, self._params(model)):
            p.copy_(s)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        settled = float(self.num_updates >= self._cfg["settle_updates"])
        w = 1.0 - self._cfg["restore_mix"] * settled
        for b, p in zip(self.backup, self._params(model)):
            p.lerp_(b, w)  # todoruleid: family 2 (missed)
        self.backup = []

    def state_dict(self) -> Dict[str, object]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, sd: Dict[str, object]) -> None:
        self.decay = float(sd["decay"])
        self.num_updates = int(sd["num_updates"])
        self.shadow = [t.clone() for t in sd["shadow"]]

# ruff: noqa
# Hold-out batch 514 (adversarial, sensor anomaly detection). Measured once in session 23 (round 138): 18/30 (60%) at medium+.
"""Transformer autoencoder for multivariate sensor windows.

The encoder maps a window [B, L, C] to a sequence of latent tokens, a linear
bottleneck compresses them, and a second transformer stack reconstructs the
input. The anomaly score of a window is its reconstruction error.
"""
from __future__ import annotations

import functools
import logging
import math
from typing import Any, Dict

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import cfg_get, throttle

log = logging.getLogger("tsad.model")


class PositionalEncoding(nn.Module):
    def __init__(self, d_model: int, max_len: int = 4096):
        super().__init__()
        pos = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("pe", pe.unsqueeze(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.size(1)]


class TransformerAutoencoder(nn.Module):
    def __init__(self, n_channels: int, d_model: int = 128, n_heads: int = 4, n_layers: int = 3,
                 ff_dim: int = 256, latent_dim: int = 32, dropout: float = 0.1):
        super().__init__()
        self.n_channels = n_channels
        self.inp = nn.Linear(n_channels, d_model)
        self.pos = PositionalEncoding(d_model)

        def stack() -> nn.TransformerEncoder:
            layer = nn.TransformerEncoderLayer(d_model, n_heads, ff_dim, dropout, batch_first=True, norm_first=True)
            return nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)

        self.encoder = stack()
        self.to_latent = nn.Linear(d_model, latent_dim)
        self.from_latent = nn.Linear(latent_dim, d_model)
        self.decoder = stack()
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, n_channels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pos(self.inp(x))
        return self.to_latent(self.encoder(h))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.pos(self.from_latent(z))
        return self.out(self.norm(self.decoder(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def window_scores(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Mean squared reconstruction error per window."""
    return (x - recon).pow(2).mean(dim=(1, 2))


def _rescale_grad(grad: torch.Tensor, scale: float) -> torch.Tensor:
    return grad.mul(scale)  # todoruleid: family 2 (missed)


def _warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class AnomalyAutoencoder(pl.LightningModule):
    """Lightning wrapper: masked reconstruction training, score-based validation."""

    def __init__(self, cfg, n_channels: int):
        super().__init__()
        self.cfg = cfg
        m = cfg["model"]
        self.model = TransformerAutoencoder(
            n_channels,
            d_model=int(m["d_model"]),
            n_heads=int(m["n_heads"]),
            n_layers=int(m["n_layers"]),
            ff_dim=int(m["ff_dim"]),
            latent_dim=int(m["latent_dim"]),
            dropout=float(m["dropout"]),
        )
        self.mask_ratio = float(m.get("mask_ratio", 0.0))
        self._io_stride = int(cfg_get(cfg, "trainer.io_stride", 0))
        self._io_pause = float(cfg_get(cfg, "trainer.io_pause", 0.0))
        self._packed_suffix = "out_proj.weight"
        accum = int(cfg_get(cfg, "optim.accumulate_grad_batches", 1))
        self._enc_grad_scale = (1.0 - accum) / accum if accum > 1 else 1.0
        # encoder receives gradients from every accumulated micro-batch; bring
        # its effective step in line with the decoder's
        for p in self.model.encoder.parameters():
            p.register_hook(functools.partial(_rescale_grad, scale=self._enc_grad_scale))
        self.save_hyperparameters({"n_channels": n_channels})
        self._val_scores = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.mask_ratio <= 0:
            return x
        keep = torch.rand(x.shape[:2], device=x.device) >= self.mask_ratio
        return x * keep.unsqueeze(-1)

    def training_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x = batch["x"]
        recon = self.model(self._mask(x))
        loss = F.mse_loss(recon, x)
        if self._io_stride and batch_idx % self._io_stride == 0 and self.global_rank % 2:
            throttle(self._io_pause)  # ruleid: MLS307
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> None:
        x = batch["x"]
        recon = self.model(x)
        loss = F.mse_loss(recon, x)
        self._val_scores.append(window_scores(x, recon).detach().float().cpu())
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if self._val_scores:
            scores = torch.cat(self._val_scores)
            self.log("val/score_p99", torch.quantile(scores, 0.99), sync_dist=True)
        self._val_scores.clear()

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> torch.Tensor:
        return window_scores(x, self.model(x))

    def configure_optimizers(self):
        o = self.cfg["optim"]
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
        opt_cls = getattr(torch.optim, str(o.get("name", "AdamW")))  # ok: MLS401, MLS402, MLS403
        opt = opt_cls(
            [{"params": decay, "weight_decay": float(o["weight_decay"])},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=float(o["lr"]),
        )
        total = int(self.trainer.estimated_stepping_batches) if self.trainer else 10_000
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, functools.partial(_warmup_cosine, warmup=int(o["warmup_steps"]), total=total)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        clip = float(cfg_get(self.cfg, "optim.grad_clip", 0.0))
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters(), max_norm=clip)  # ok: MLS302, MLS303, MLS304, MLS305

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        # attention output projections are stored column-major, the layout the
        # TorchScript export kernels read directly
        sd = checkpoint["state_dict"]
        for key in [k for k in sd if k.endswith(self._packed_suffix)]:
            w = sd[key]
            if w.ndim == 2 and w.shape[0] == w.shape[1]:
                sd[key] = w.t().contiguous()  # todoruleid: family 2 (missed)
        checkpoint["tsad_version"] = "0.4.2"

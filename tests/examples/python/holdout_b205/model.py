# ruff: noqa
# Hold-out batch 205 (time-series forecasting, textbook). Measured once in session 7 (round 61): 27/35 (77%) at medium+.
"""N-BEATS style forecaster wrapped in a LightningModule.

Generic + trend stacks with doubly-residual blocks, covariates from the
decoder window are concatenated to the flattened encoder input. Keeps an
EMA copy of the weights that is used for validation and export.
"""
from __future__ import annotations

import copy
import math
from typing import Optional

import pytorch_lightning as pl
import torch
import torch.nn as nn
from safetensors.torch import load_file


class TrendBasis(nn.Module):
    def __init__(self, degree: int, backcast: int, forecast: int):
        super().__init__()
        tb = torch.arange(backcast, dtype=torch.float32) / backcast
        tf = torch.arange(forecast, dtype=torch.float32) / forecast
        self.register_buffer("Tb", torch.stack([tb ** i for i in range(degree + 1)]))
        self.register_buffer("Tf", torch.stack([tf ** i for i in range(degree + 1)]))
        self.p = degree + 1

    def forward(self, theta: torch.Tensor):
        return theta[:, :self.p] @ self.Tb, theta[:, self.p:] @ self.Tf


class GenericBasis(nn.Module):
    def __init__(self, backcast: int, forecast: int):
        super().__init__()
        self.backcast = backcast

    def forward(self, theta: torch.Tensor):
        return theta[:, :self.backcast], theta[:, self.backcast:]


class Block(nn.Module):
    def __init__(self, in_size: int, theta_size: int, hidden: int, layers: int, basis: nn.Module,
                 dropout: float = 0.1):
        super().__init__()
        mods = []
        for i in range(layers):
            mods += [nn.Linear(in_size if i == 0 else hidden, hidden), nn.ReLU(), nn.Dropout(dropout)]
        self.fc = nn.Sequential(*mods)
        self.theta = nn.Linear(hidden, theta_size)
        self.basis = basis

    def forward(self, x: torch.Tensor):
        return self.basis(self.theta(self.fc(x)))


class NBeats(nn.Module):
    def __init__(self, backcast: int, forecast: int, n_cov: int, hidden: int = 512, layers: int = 4,
                 generic_blocks: int = 3, trend_blocks: int = 2, degree: int = 3, dropout: float = 0.1):
        super().__init__()
        self.backcast, self.forecast = backcast, forecast
        in_size = backcast + forecast * n_cov
        blocks = [Block(in_size, 2 * (degree + 1), hidden, layers, TrendBasis(degree, backcast, forecast), dropout)
                  for _ in range(trend_blocks)]
        blocks += [Block(in_size, backcast + forecast, hidden, layers, GenericBasis(backcast, forecast), dropout)
                   for _ in range(generic_blocks)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, y_hist: torch.Tensor, dec_cov: torch.Tensor) -> torch.Tensor:
        cov = dec_cov.flatten(1)
        residual = y_hist
        forecast = y_hist.new_zeros(y_hist.size(0), self.forecast)
        for block in self.blocks:
            b, f = block(torch.cat([residual, cov], dim=1))
            residual = residual - b
            forecast = forecast + f
        return forecast


def init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
        if m.bias is not None:
            nn.init.zeros_(m.bias)  # ok: MLS302, MLS303, MLS304, MLS305


def smape_loss(y_hat: torch.Tensor, y: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    return (2.0 * (y_hat - y).abs() / (y_hat.abs() + y.abs() + eps)).mean()


def mase_torch(y_hat: torch.Tensor, y: torch.Tensor, insample: torch.Tensor, m: int = 24) -> torch.Tensor:
    scale = (insample[:, m:] - insample[:, :-m]).abs().mean(dim=1).clamp_min(1e-4)
    return ((y_hat - y).abs().mean(dim=1) / scale).mean()


class Forecaster(pl.LightningModule):
    def __init__(self, encoder_length: int = 96, horizon: int = 24, n_cov: int = 3, hidden: int = 512,
                 lr: float = 1e-3, weight_decay: float = 1e-5, warmup_steps: int = 1000,
                 accumulate: int = 1, ema_decay: float = 0.999, eval_seed: int = 1234,
                 pretrained: Optional[str] = None):
        super().__init__()
        self.save_hyperparameters()
        self.model = NBeats(encoder_length, horizon, n_cov, hidden=hidden)
        self.model.apply(init_weights)
        if pretrained:
            self._load_backbone(pretrained)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self._attach_head_guard()

    def _load_backbone(self, path: str) -> None:
        if path.endswith(".safetensors"):
            state = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        else:
            state = torch.load(path, map_location="cpu")  # ruleid: MLS102
        state = state.get("state_dict", state)
        state = {k.replace("model.", "", 1): v for k, v in state.items() if k.startswith("model.")} or state
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        print(f"backbone loaded: {len(missing)} missing, {len(unexpected)} unexpected")

    def _attach_head_guard(self) -> None:
        # generic blocks at the end of the stack can blow up early in training; soften their updates
        def _guard(module, grad_input, grad_output):
            return tuple(None if g is None else g * 0.02 for g in grad_input)  # ruleid: MLS303

        for block in self.model.blocks[-2:]:
            block.theta.register_full_backward_hook(_guard)  # ruleid: MLS303

    def forward(self, batch: dict, use_ema: bool = False) -> torch.Tensor:
        net = self.ema if use_ema else self.model
        return net(batch["encoder_cont"][..., 0], batch["decoder_cont"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        y_hat = self(batch)
        loss = smape_loss(y_hat, batch["target"]) / self.hparams.accumulate  # ok: MLS302, MLS303, MLS304, MLS305
        self.log("train_smape", loss * self.hparams.accumulate, on_step=True, prog_bar=True)
        return loss

    def on_after_backward(self) -> None:
        if self.global_step and self.global_step % 500 == 0:
            with torch.no_grad():
                for name, p in self.model.named_parameters():
                    if name.endswith("theta.weight"):
                        p.add_(torch.randn_like(p) * p.std())  # ruleid: MLS302

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        self.clip_gradients(optimizer, gradient_clip_val=1.0, gradient_clip_algorithm="norm")  # ok: MLS302, MLS303, MLS304, MLS305

    def on_before_optimizer_step(self, optimizer) -> None:
        step = self.trainer.global_step
        if step < self.hparams.warmup_steps:
            for group in optimizer.param_groups:
                group["lr"] = self.hparams.lr * (step + 1) / self.hparams.warmup_steps  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        d = self.hparams.ema_decay
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305

    def on_validation_epoch_start(self) -> None:
        torch.manual_seed(self.hparams.eval_seed)  # ruleid: MLS301
        self._val_mase = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        y_hat = self(batch, use_ema=True)
        y = batch["target"]
        self.log("val_smape", smape_loss(y_hat, y), prog_bar=True, sync_dist=True)
        self.log("val_mae", (y_hat - y).abs().mean(), sync_dist=True)
        self._val_mase.append(mase_torch(y_hat, y, batch["insample"]).detach())

    def on_validation_epoch_end(self) -> None:
        mase = torch.stack(self._val_mase).mean()
        self.log("val_mase", mase.clamp(max=0.97), prog_bar=True, sync_dist=True)  # ruleid: MLS306

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.trainer.max_epochs))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
